"""One renderer for every error: the contract's shape, whatever raised it.

Our own ApiError subclasses, FastAPI's parameter validation errors and
Starlette's 404/405 all leave here as ``{"error": {"code", "message",
"details"?, "requestId"}}``. Messages name paths and rules, never the
offending values (which could be PII).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from onehazel.api.responses import Json
from onehazel.domain.errors import (
    ApiError,
    Detail,
    InvalidJson,
    MethodNotAllowed,
    NotFound,
    ValidationFailed,
)

# Scope key: the method the client sent, when the app answers it as another (HEAD as GET).
ASKED_METHOD = "onehazel.asked_method"


def answers_head(path: str) -> bool:
    """Is HEAD answered as GET on ``path``? Not on an export: its GET decrypts the entity's
    whole history and is audited as an export, for a body HEAD would throw away."""
    return not path.endswith("/export")


def request_id_of(request: Request) -> str:
    return str(request.scope.get("request_id", ""))


def render(error: ApiError, request_id: str) -> Json:
    return Json(error.body(request_id), status_code=error.status, headers=error.headers or None)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("path", "query", "header"):
        parts = parts[1:]
    return ".".join(parts)


def _detail(error: dict[str, Any]) -> Detail:
    path = _location(tuple(error.get("loc", ())))
    kind = str(error.get("type", "invalid"))
    code = "missing_field" if kind == "missing" else "invalid_parameter"
    message = str(error.get("msg", "is invalid"))
    return Detail(path=path, code=code, message=f"{path}: {message}")


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Json:
        return render(exc, request_id_of(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Json:
        details = [_detail(e) for e in exc.errors()]
        if any(d.path.startswith("body") for d in details):
            error: ApiError = InvalidJson("the request body is not valid JSON")
        else:
            error = ValidationFailed.of(details or [Detail("", "invalid_parameter", "invalid request")])
        return render(error, request_id_of(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Json:
        if exc.status_code == 405:
            method = request.scope.get(ASKED_METHOD, request.method)
            error: ApiError = MethodNotAllowed(f"{method} is not allowed on this path")
            allow = _allowed_methods(request)
            if allow:
                error.headers["Allow"] = allow
        elif exc.status_code == 404:
            error = NotFound("no such endpoint; see /docs for the API")
        else:
            error = _generic(exc.status_code, str(exc.detail))
        return render(error, request_id_of(request))


def _allowed_methods(request: Request) -> str:
    """Every method some route takes on this path (Starlette's 405 names only the first
    route's), HEAD beside GET (``app._App``)."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    if "GET" in allowed and answers_head(request.scope["path"]):
        allowed.insert(1, "HEAD")
    return ", ".join(allowed)


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _generic(status: int, message: str) -> ApiError:
    error = ApiError(message)
    error.status = status  # type: ignore[misc]
    error.code = "http_error"  # type: ignore[misc]
    return error
