"""The OneHazel Python client: ``Client`` (blocking) and ``AsyncClient`` over one core.

It talks HTTP only (httpx) and imports nothing from the server, so it can be installed
and used on its own::

    from decimal import Decimal

    from onehazel.client import Client

    with Client() as oh:  # ONEHAZEL_API_KEY, ONEHAZEL_API_URL (default http://127.0.0.1:8080)
        oh.upsert_entity("player-42", "player", {"country": "MT"})
        oh.track("player-42", "transaction", {"type": "deposit", "amount": Decimal("25"), "currency": "EUR"})
    # leaving the block flushed the events and waited for their job

Guarantees:

- **Retries** (``max_retries``, default 5): 429, 5xx and connection errors are retried with
  exponential backoff and full jitter, waiting at least a ``Retry-After``; other 4xx never are
  (they raise a typed ``APIError`` at once, see ``onehazel.client.errors``). Retried POSTs cannot
  duplicate anything: events carry an ``eventId`` fixed when they are created, and each batch
  request an ``Idempotency-Key`` generated once per batch and re-sent by every retry.
- **Batches** (``submit_batch(kind, items)``) always return a list of the accepted jobs' 202
  bodies: items are cut into requests under the server's limits (1000 entities/states or 5000
  events, 16 MiB), and a request answered 413 is sent again as two halves, recursively. With an
  ``idempotency_key``, a single request uses it as is; request *n* of several uses ``key.n``,
  and the halves of a split request ``key.a``/``key.b``: the same items with the same key make
  the same requests, so a re-run creates no new jobs. A single item refused with 413 raises
  ``PayloadTooLarge`` with ``.index`` (its position) and ``.jobs`` (what was accepted before it).
- **track()** queues an event (its ``eventId`` assigned then, ``evt_`` + a uuid4) and returns the
  eventId. Events go out through ``POST /batch/events`` when ``max_buffer_events`` are queued or they
  reach ``max_buffer_bytes``, and every ``flush_interval`` seconds (a daemon thread, or a task on the
  running loop). ``flush()`` sends everything and waits for the jobs; ``close()``, the end of a
  ``with`` block and interpreter exit (``atexit``, 10 s) flush too. Nothing is dropped silently:
  ``on_error(failures, reason)`` receives ``[{"item": event, "error": {"code", "message", ...}}]``
  for events the server rejected (``reason`` is "rejected" for items of a finished job, "job_failed",
  or the error code of a refused request), and ``on_drop(items, reason)`` the events never sent
  ("buffer_full" past ``max_queue_events``, "unsent_at_close"). Without callbacks a warning with
  counts and error codes (no event contents) is logged on ``logging.getLogger("onehazel.client")``.
"""

from onehazel.client._async import AsyncClient
from onehazel.client._sync import Client
from onehazel.client.errors import (
    APIError,
    BadRequest,
    BatchTooLarge,
    ClientClosed,
    ConfigurationError,
    Conflict,
    EntityDeleted,
    EntityNotFound,
    EntityTypeConflict,
    EventIdConflict,
    IdempotencyConflict,
    JobNotFound,
    MethodNotAllowed,
    NotFound,
    OneHazelError,
    PayloadTooLarge,
    PiiUnreadable,
    RateLimited,
    ServerError,
    StateNotFound,
    TemplateNotConfigured,
    TemplateNotFound,
    TransportError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationError,
    WaitTimeout,
)

__all__ = [
    "APIError",
    "AsyncClient",
    "BadRequest",
    "BatchTooLarge",
    "Client",
    "ClientClosed",
    "ConfigurationError",
    "Conflict",
    "EntityDeleted",
    "EntityNotFound",
    "EntityTypeConflict",
    "EventIdConflict",
    "IdempotencyConflict",
    "JobNotFound",
    "MethodNotAllowed",
    "NotFound",
    "OneHazelError",
    "PayloadTooLarge",
    "PiiUnreadable",
    "RateLimited",
    "ServerError",
    "StateNotFound",
    "TemplateNotConfigured",
    "TemplateNotFound",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationError",
    "WaitTimeout",
]
