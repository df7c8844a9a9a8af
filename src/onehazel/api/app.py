"""The ASGI application: routes under /operator-data-api, operations outside it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from onehazel import __version__
from onehazel.api import errors
from onehazel.api.observability import Metrics, Observability
from onehazel.api.routes import batch, entities, events, meta, settings, states
from onehazel.api.schemas import BODY_MODELS
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
* Bodies: JSON (UTF-8), optionally `Content-Encoding: gzip`; at most 1 MiB after inflation.
"""


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

    app = FastAPI(
        title="OneHazel data ingestion API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.metrics = Metrics()
    errors.install(app)
    for module in (settings, entities, events, states, batch):
        app.include_router(module.router, prefix=BASE)
    app.include_router(meta.router)
    app.add_middleware(Observability, metrics=app.state.metrics, base=BASE)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {})
    _, defs = models_json_schema(
        [(m, "validation") for m in BODY_MODELS], ref_template="#/components/schemas/{model}"
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
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    return doc


def _replace_fastapi_422(operation: dict[str, Any]) -> None:
    """FastAPI documents its own 422 shape; ours is the contract's ErrorBody."""
    response = operation.get("responses", {}).get("422")
    if response and "HTTPValidationError" in str(response):
        response["description"] = "Invalid parameters (validation_error with details)"
        response["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
