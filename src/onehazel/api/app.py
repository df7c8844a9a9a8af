"""The ASGI application: routes under /operator-data-api, operations outside it."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onehazel import __version__
from onehazel.api import errors
from onehazel.api.docs import RATE_LIMIT_HEADERS
from onehazel.api.hot_path import HotPath
from onehazel.api.observability import Metrics, Observability
from onehazel.api.routes import analytics, audit, batch, entities, events, exports, meta, settings, states
from onehazel.api.schemas import BODY_MODELS, EXPORT_LINE_MODELS
from onehazel.services.container import Services

BASE = "/operator-data-api"

DESCRIPTION = """\
Ingest iGaming entities (upserted by your externalId), an append-only event log per entity,
and the latest states, checked against a data template (`tpl_igaming`).

* Authenticate with `Authorization: Bearer oh_live_...` (or `oh_test_...`; test and live
  keys see separate data).
* Every error has the shape `{"error": {"code", "message", "details"?, "requestId"}}`.
* Money (`decimal` fields) is accepted as a JSON number or a string and always returned as an
  exact decimal string.
* Fields the template marks PII are encrypted at rest and decrypted only on single-entity reads.
* Bodies: JSON (UTF-8), optionally `Content-Encoding: gzip`; at most 1 MiB after inflation
  (16 MiB for a batch, which also holds at most 1,000,000 JSON values, nested ones included:
  over either is a 413).
* A path that names no operation is `404 not_found` (a trailing slash is not redirected: it
  names no operation); a method the path does not take is `405 method_not_allowed`, with
  `Allow` listing every method it takes. `HEAD` is answered wherever `GET` is, without a body
  (but for an export, which would be decrypted and audited for nothing: 405).
* A request that is not valid HTTP/1.1 (an unknown method token, a malformed
  `Content-Length` or `Transfer-Encoding`, a control character in a header) is
  `400 bad_request` in the same error shape, and the connection is closed; a request line
  and headers over 64 KiB in all, `431 headers_too_large`; one not in within 20 s
  (`ONEHAZEL_HEAD_TIMEOUT_SECONDS`), or a body not coming at 500 bytes a second after
  that, `408 request_timeout`. An `Upgrade`
  header (WebSocket, h2c) is not done: a request without a body is served as HTTP/1.1
  (then the connection is closed), one with a body is `400 bad_request`.
* `X-Request-Id`: a client-sent id of 1-128 characters from `A-Z a-z 0-9 - _ . : / = + ~ @`
  is echoed (and logged); any other is replaced by a generated `req_...` id.
* Per item (single or batch): an event's `data`, an entity's `attributes` (also once merged
  with the stored ones) and a state's `value` each hold at most 32 KiB of compact JSON
  (detail code `too_large`), `data` and `attributes` at most 100 top-level fields
  (`too_many_fields`); ids are 1-256 characters and JSON nests at most 32 levels. A single
  write over a limit is a 422 `validation_error`; in a batch the item fails alone.
* Rate limits, per workspace (live and test apart) and per class, as token buckets:
  `writes` (single-item POST/PUT/DELETE) 1000/s in bursts of 2000, `batches` (batch
  submits) 20/s in bursts of 40, `reads` (GET) 500/s in bursts of 1000; an operator's
  rates are changed with `onehazel operators limits`. Every authenticated response carries
  `RateLimit-Policy: "writes";q=2000;w=2` and `RateLimit: "writes";r=1999;t=1` (IETF
  draft-ietf-httpapi-ratelimit-headers: r requests left, full again in t seconds); over
  the limit is `429 rate_limited` with `Retry-After` (seconds) and nothing done. A 401,
  and a path or method that names no operation, carry no RateLimit headers: there is no
  workspace to count against.
"""


class _App(FastAPI):
    """FastAPI with ``api.hot_path`` in front of its whole stack (``entry``)."""

    entry: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD" and errors.answers_head(scope["path"]):
            # HEAD wherever GET: the GET's status and headers, no body (FastAPI routes take
            # only the methods they declare).
            scope = {**scope, "method": "GET", errors.ASKED_METHOD: "HEAD"}
            send = _without_body(send)
        if self.entry is None:
            await super().__call__(scope, receive, send)
        else:
            await self.entry(scope, receive, send)


def _without_body(send: Send) -> Send:
    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": b""}
        await send(message)

    return send_head


def create_app(
    open_services: Callable[[], Awaitable[Services]], *, start_worker: Callable[[Services], Any] | None = None
) -> FastAPI:
    """Build the app; ``open_services`` is awaited at start-up, closed at shutdown.

    ``start_worker`` (given by ``onehazel serve``) starts the in-process batch
    worker and returns an async callable that stops it gracefully.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = await open_services()
        stop_worker = start_worker(app.state.services) if start_worker else None
        try:
            yield
        finally:
            if stop_worker is not None:
                await stop_worker()
            await app.state.services.close()

    app = _App(
        title="OneHazel data ingestion API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
        redirect_slashes=False,  # a 307 to a Location built from the Host header: a 404 instead
        # FastAPI's own OpenTelemetry hooks (0.16x) look providers up in the environment on
        # every request, ~12% of a single write's CPU, for providers nobody configured:
        # off. Prometheus /metrics and the JSON request log are this server's telemetry.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.metrics = Metrics()
    errors.install(app)
    for module in (settings, entities, events, states, exports, batch, audit, analytics):
        app.include_router(module.router, prefix=BASE)
    app.include_router(meta.router)
    app.add_middleware(Observability, metrics=app.state.metrics, base=BASE)  # every other request
    # The hot path runs in front of FastAPI's whole stack (its error page, body limit and
    # telemetry layers), with an Observability of its own over the same metrics (_App.entry).
    events_route = _route(events.router, "POST", "/entities/{externalId}/events")
    app.entry = HotPath(
        functools.partial(FastAPI.__call__, app), state=app.state, route=events_route, base=BASE
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _route(router: APIRouter, method: str, path: str) -> APIRoute:
    for route in router.routes:
        if isinstance(route, APIRoute) and method in (route.methods or ()) and route.path == path:
            return route
    raise LookupError(f"no route {method} {path}")


def _document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {})
    _, defs = models_json_schema(
        [(m, "validation") for m in (*BODY_MODELS, *EXPORT_LINE_MODELS)],
        ref_template="#/components/schemas/{model}",
    )
    components.setdefault("schemas", {}).update(defs.get("$defs", {}))
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "oh_live_... or oh_test_..."}
    }
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            if path.startswith(BASE):
                operation["security"] = [{"bearer": []}]
            _replace_fastapi_422(operation)
            _document_headers(operation, authenticated=path.startswith(BASE))
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    return doc


def _document_headers(operation: dict[str, Any], *, authenticated: bool) -> None:
    """Every answer carries X-Request-Id; every authenticated one but a 401 the RateLimit pair."""
    for status, response in operation.get("responses", {}).items():
        headers = response.setdefault("headers", {})
        headers.setdefault("X-Request-Id", _REQUEST_ID_HEADER)
        if authenticated and status != "401":
            for name, spec in RATE_LIMIT_HEADERS.items():
                headers.setdefault(name, spec)


_REQUEST_ID_HEADER = {
    "description": "The client's X-Request-Id when well-formed, else a generated req_... id; "
    "also in the log line and in an error body's requestId",
    "schema": {"type": "string"},
}


def _replace_fastapi_422(operation: dict[str, Any]) -> None:
    """FastAPI documents its own 422 shape; ours is the contract's ErrorBody."""
    response = operation.get("responses", {}).get("422")
    if response and "HTTPValidationError" in str(response):
        response["description"] = "Invalid parameters (validation_error with details)"
        response["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
