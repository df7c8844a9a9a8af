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
    429: "Over the workspace's rate limit for this class of request; nothing was done (rate_limited)",
    503: "Storage unavailable; nothing was written (unavailable, with Retry-After)",
}


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait (an integer, at least 1)", "schema": {"type": "integer"}}
}
RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": {
        "description": 'The budget the request spent from, e.g. `"writes";q=2000;w=2`: '
        "bursts of up to q requests, refilled from empty in w seconds",
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'What is left of it, e.g. `"writes";r=1999;t=1`: r requests now, '
        "full again in t seconds",
        "schema": {"type": "string"},
    },
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Error responses of a route; 401, 429 and 503 apply to every authenticated route."""
    responses: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorBody, "description": _WHY[s]} for s in sorted({*statuses, 401, 429, 503})
    }
    responses[429]["headers"] = {**_RETRY_AFTER, **RATE_LIMIT_HEADERS}
    responses[503]["headers"] = dict(_RETRY_AFTER)
    return responses


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
