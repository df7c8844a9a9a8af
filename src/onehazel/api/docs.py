"""Helpers that describe routes precisely in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from onehazel.api.schemas import ErrorBody

_WHY = {
    400: "Body is not parseable JSON (invalid_json)",
    401: "Missing, malformed, unknown or revoked API key (unauthorized)",
    404: "Not found in this workspace",
    409: "Conflict (template_not_configured, entity_type_conflict, event_id_conflict, pii_unreadable, ...)",
    410: "The entity was deleted (entity_deleted)",
    413: "Body over the size limit (payload_too_large)",
    415: "Content-Type is not JSON or Content-Encoding is not gzip (unsupported_media_type)",
    422: "Well-formed but invalid (validation_error with details)",
    503: "Storage unavailable; nothing was written (unavailable, with Retry-After)",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Error responses of a route; 401 and 503 apply to every authenticated route."""
    return {s: {"model": ErrorBody, "description": _WHY[s]} for s in sorted({*statuses, 401, 503})}


def write_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return errors(400, 413, 415, 422, *statuses)


def json_body(model: type[BaseModel], *, description: str = "") -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description or model.__doc__ or "",
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }
