"""Subject-access export of one entity, streamed as NDJSON."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import StreamingResponse

from onehazel.api.deps import ExternalIdDep, ServicesDep, WorkspaceDep
from onehazel.api.docs import errors
from onehazel.api.schemas import EXPORT_LINE_MODELS
from onehazel.services.exports import MEDIA_TYPE

router = APIRouter(tags=["entities"])

_LINES = """\
Newline-delimited JSON (one object per line, `kind` first), streamed:

1. `{"kind": "entity", ...}`: the entity as `GET /entities/{externalId}` returns it, PII decrypted; once.
2. `{"kind": "event", ...}`: every event as `GET /entities/{externalId}/events` returns it, PII
   decrypted, oldest first (timestamp, then server order).
3. `{"kind": "state", "key", "value", "timestamp", "updatedAt"}`: every state, by key.
4. `{"kind": "end", "externalId", "events", "states", "exportedAt"}`: last; a stream without it was
   cut short. If the entity is deleted while the export streams, the stream ends with
   `{"kind": "error", "error": {"code": "entity_deleted", "message"}}` instead.

The export is recorded in the audit log (`entity.export`)."""

_SCHEMA: dict[str, Any] = {
    "description": "One of these objects per line",
    "oneOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in EXPORT_LINE_MODELS],
    "discriminator": {"propertyName": "kind"},
}


@router.get(
    "/entities/{externalId}/export",
    response_model=None,
    response_class=StreamingResponse,
    responses={
        200: {"description": _LINES, "content": {MEDIA_TYPE: {"schema": _SCHEMA}}},
        **errors(404, 409, 410, 422),
    },
)
async def export_entity(
    services: ServicesDep, ws: WorkspaceDep, external_id: ExternalIdDep
) -> StreamingResponse:
    """Subject-access export: the entity, all its events and its states as NDJSON, PII decrypted."""
    stream = await services.exports.start(ws, external_id)
    return StreamingResponse(stream, media_type=MEDIA_TYPE, headers={"Cache-Control": "no-store"})
