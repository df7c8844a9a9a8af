"""Every error the client raises, one class per contract error code.

The hierarchy, so that ``except`` can be as broad or as narrow as the caller needs::

    OneHazelError                      anything this client raises
    ├── ConfigurationError             no API key / a bad base URL (raised at construction)
    ├── ClientClosed                   a call on a closed client
    ├── WaitTimeout                    wait_for_job()/flush() ran out of time (also a TimeoutError)
    ├── TransportError                 no HTTP answer: connect/read failure, timeout (after retries)
    └── APIError                       the server answered with an error: .status .code .message
        │                              .request_id .details .retry_after
        ├── BadRequest                 400 invalid_json
        ├── Unauthorized               401 unauthorized
        ├── NotFound                   404 not_found
        │   ├── EntityNotFound         404 entity_not_found
        │   ├── StateNotFound          404 state_not_found
        │   ├── JobNotFound            404 job_not_found
        │   └── TemplateNotFound       404 template_not_found
        ├── MethodNotAllowed           405 method_not_allowed
        ├── Conflict                   409 conflict
        │   ├── TemplateNotConfigured  409 template_not_configured
        │   ├── EntityTypeConflict     409 entity_type_conflict
        │   ├── EventIdConflict        409 event_id_conflict
        │   ├── IdempotencyConflict    409 idempotency_conflict
        │   └── PiiUnreadable          409 pii_unreadable
        ├── EntityDeleted              410 entity_deleted
        ├── PayloadTooLarge            413 payload_too_large (.jobs .index when a batch split fails)
        │   └── BatchTooLarge          413 batch_too_large
        ├── UnsupportedMediaType       415 unsupported_media_type
        ├── ValidationError            422 validation_error (.details lists every problem)
        ├── RateLimited                429 rate_limited (retried first, honouring Retry-After)
        └── ServerError                5xx (retried first)
            └── Unavailable            503 unavailable

A response is mapped by its error ``code`` first and by its status second, so a
code this client does not know yet still lands on the right branch (a new 404
code is a ``NotFound``). Messages come from the server, which never puts PII in them.
"""

from __future__ import annotations

from typing import Any


class OneHazelError(Exception):
    """Base of everything this client raises."""


class ConfigurationError(OneHazelError, ValueError):
    """The client cannot be built as asked (no API key, a malformed base URL)."""


class ClientClosed(OneHazelError):
    """The client was closed; make a new one."""


class WaitTimeout(OneHazelError, TimeoutError):
    """Waiting for a job (or for a flush) took longer than the timeout given."""


class TransportError(OneHazelError):
    """No HTTP response: the connection failed or timed out, even after the retries."""


class APIError(OneHazelError):
    """The server answered with the contract's error shape (or at least an error status)."""

    status: int = 0
    code: str = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.request_id = request_id
        self.details: list[dict[str, Any]] = details or []
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.status} {self.code}: {self.message}{where}"


class BadRequest(APIError):
    status, code = 400, "invalid_json"


class Unauthorized(APIError):
    status, code = 401, "unauthorized"


class NotFound(APIError):
    status, code = 404, "not_found"


class EntityNotFound(NotFound):
    code = "entity_not_found"


class StateNotFound(NotFound):
    code = "state_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class TemplateNotFound(NotFound):
    code = "template_not_found"


class MethodNotAllowed(APIError):
    status, code = 405, "method_not_allowed"


class Conflict(APIError):
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
    code = "pii_unreadable"


class EntityDeleted(APIError):
    status, code = 410, "entity_deleted"


class PayloadTooLarge(APIError):
    """413. When ``submit_batch`` meets it for a single item it cannot split further,
    ``index`` is that item's position and ``jobs`` the jobs accepted for the items before it."""

    status, code = 413, "payload_too_large"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.jobs: list[dict[str, Any]] = []
        self.index: int | None = None


class BatchTooLarge(PayloadTooLarge):
    code = "batch_too_large"


class UnsupportedMediaType(APIError):
    status, code = 415, "unsupported_media_type"


class ValidationError(APIError):
    status, code = 422, "validation_error"


class RateLimited(APIError):
    status, code = 429, "rate_limited"


class ServerError(APIError):
    status, code = 500, "internal_error"


class Unavailable(ServerError):
    status, code = 503, "unavailable"


_BY_CODE: dict[str, type[APIError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        NotFound,
        EntityNotFound,
        StateNotFound,
        JobNotFound,
        TemplateNotFound,
        MethodNotAllowed,
        Conflict,
        TemplateNotConfigured,
        EntityTypeConflict,
        EventIdConflict,
        IdempotencyConflict,
        PiiUnreadable,
        EntityDeleted,
        PayloadTooLarge,
        BatchTooLarge,
        UnsupportedMediaType,
        ValidationError,
        RateLimited,
        Unavailable,
    )
}
_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    410: EntityDeleted,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationError,
    429: RateLimited,
    503: Unavailable,
}


def error_class(status: int, code: str | None) -> type[APIError]:
    """The most specific class for a response: by code when its status agrees, else by status."""
    by_code = _BY_CODE.get(code or "")
    if by_code is not None and by_code.status == status:
        return by_code
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else APIError
