"""Errors that carry their HTTP status and contract code.

Every failure a client can see is one of these. One handler in ``api/errors.py``
renders them all into the contract's single error shape; nothing else builds an
error body. Messages never contain PII: they name paths and rules, not values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Detail:
    """One problem inside a request, addressed by its JSON path."""

    path: str
    code: str
    message: str

    def to_wire(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "message": self.message}


@dataclass
class ApiError(Exception):
    """Base of every error a client sees. Subclasses fix ``status`` and ``code``."""

    message: str
    details: list[Detail] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = [d.to_wire() for d in self.details]
        error["requestId"] = request_id
        return {"error": error}


class InvalidJson(ApiError):
    status, code = 400, "invalid_json"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class NotFound(ApiError):
    status, code = 404, "not_found"


class EntityNotFound(NotFound):
    code = "entity_not_found"


class StateNotFound(NotFound):
    code = "state_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class TemplateNotFound(NotFound):
    code = "template_not_found"


class MethodNotAllowed(ApiError):
    status, code = 405, "method_not_allowed"


class Conflict(ApiError):
    status, code = 409, "conflict"


class TemplateNotConfigured(Conflict):
    code = "template_not_configured"


class EntityTypeConflict(Conflict):
    code = "entity_type_conflict"


class EventIdConflict(Conflict):
    code = "event_id_conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class PiiUnreadable(Conflict):
    """Stored PII failed to authenticate (a ciphertext copied from elsewhere or tampered with)."""

    code = "pii_unreadable"


class EntityDeleted(ApiError):
    status, code = 410, "entity_deleted"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class BatchTooLarge(ApiError):
    status, code = 413, "batch_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class BadRequest(ApiError):
    """Bytes that are not HTTP/1.1 (answered by ``api.http_protocol`` before any route)."""

    status, code = 400, "bad_request"


class RequestTimeout(ApiError):
    status, code = 408, "request_timeout"


class HeadersTooLarge(ApiError):
    status, code = 431, "headers_too_large"


class ClientClosedRequest(ApiError):
    """The client went away before its whole body arrived: nothing was done, and nobody reads
    the answer. 499 is how nginx logs it; it stands in the metrics and the log, not a 500."""

    status, code = 499, "client_closed_request"


class ValidationFailed(ApiError):
    status, code = 422, "validation_error"

    @classmethod
    def of(cls, details: list[Detail]) -> ValidationFailed:
        noun = "problem" if len(details) == 1 else "problems"
        where = "in the request"
        return cls(f"{len(details)} {noun} {where}: {details[0].message}", details)


class RateLimited(ApiError):
    status, code = 429, "rate_limited"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


class InternalError(ApiError):
    status, code = 500, "internal_error"
