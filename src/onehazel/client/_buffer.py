"""The ``track()`` buffer: queued events, accepted-but-unconfirmed jobs, and who hears about failures.

No I/O happens here; ``Client`` and ``AsyncClient`` drive it. What it guarantees:

- An event is encoded (with its ``eventId``) when it is queued, so every retry re-sends
  the very same bytes; a batch keeps its ``Idempotency-Key`` when it is put back after a
  failed send, so a retry that reaches the server twice still makes one job.
- Nothing leaves silently: an event refused because the buffer is full, or still
  unsent when the client gives up at close, goes to ``on_drop(items, reason)``; an event
  the server rejects (an item of a finished job, or a whole batch refused with a 4xx)
  goes to ``on_error(failures, reason)``. Without a callback, a warning with counts and
  error codes (never the events themselves: they may hold PII) is logged on
  ``logging.getLogger("onehazel.client")``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from onehazel.client._core import derive_key, is_retryable, new_idempotency_key
from onehazel.client.errors import APIError, OneHazelError, PayloadTooLarge

log = logging.getLogger("onehazel.client")

ErrorCallback = Callable[[list[dict[str, Any]], str], None]
DropCallback = Callable[[list[dict[str, Any]], str], None]


@dataclass
class Batch:
    """Encoded events to send in one request, with the key every attempt re-sends."""

    parts: list[bytes]
    key: str


@dataclass
class Sent:
    """A request the server accepted: its 202 body and the encoded items it covered."""

    job: dict[str, Any]
    parts: list[bytes]
    offset: int = 0


def decode(parts: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(part) for part in parts]


class Reporter:
    """Calls ``on_error``/``on_drop``, or logs a PII-free warning when there is no callback."""

    def __init__(self, on_error: ErrorCallback | None, on_drop: DropCallback | None) -> None:
        self.on_error = on_error
        self.on_drop = on_drop

    def error(self, failures: list[dict[str, Any]], reason: str) -> None:
        if not failures:
            return
        if self.on_error is None:
            codes = Counter(str((f.get("error") or {}).get("code", "unknown")) for f in failures)
            summary = ", ".join(f"{code}: {n}" for code, n in codes.most_common())
            log.warning(
                "%d tracked events were rejected (%s; %s); pass on_error= to handle them",
                len(failures),
                reason,
                summary,
            )
            return
        self._call(self.on_error, failures, reason)

    def drop(self, items: list[dict[str, Any]], reason: str) -> None:
        if not items:
            return
        if self.on_drop is None:
            log.warning(
                "%d tracked events were dropped (%s); pass on_drop= to handle them", len(items), reason
            )
            return
        self._call(self.on_drop, items, reason)

    @staticmethod
    def _call(callback: Callable[[list[dict[str, Any]], str], None], items: list[Any], reason: str) -> None:
        try:
            callback(items, reason)
        except Exception:  # a failing callback must not stop the sender
            log.exception("the onehazel client's %s callback raised (%d items)", reason, len(items))


class Outbox:
    """Queued events and unconfirmed jobs, thread-safe; all decisions, no I/O."""

    def __init__(self, *, batch_events: int, batch_bytes: int, capacity: int, reporter: Reporter) -> None:
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.capacity = capacity
        self.report = reporter
        self._lock = threading.Lock()
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._retry: deque[Batch] = deque()
        self._sent: deque[Sent] = deque()

    def __len__(self) -> int:
        """Events waiting to be sent (new and put back)."""
        with self._lock:
            return len(self._queue) + sum(len(b.parts) for b in self._retry)

    @property
    def unconfirmed(self) -> int:
        """Jobs accepted by the server whose outcome has not been read yet."""
        return len(self._sent)

    def add(self, part: bytes, item: dict[str, Any]) -> bool:
        """Queue one encoded event; when full, report it to ``on_drop`` and return False."""
        with self._lock:
            full = len(self._queue) + sum(len(b.parts) for b in self._retry) >= self.capacity
            if not full:
                self._queue.append(part)
                self._queued_bytes += len(part) + 1
        if full:
            self.report.drop([item], "buffer_full")
        return not full

    def adopt(self, parts: list[bytes]) -> None:
        """Queue already-encoded events regardless of capacity (moving them from another outbox)."""
        with self._lock:
            self._queue.extend(parts)
            self._queued_bytes += sum(len(p) + 1 for p in parts)

    def take_unsent(self) -> list[bytes]:
        """Remove and return every queued event (put-back batches first)."""
        with self._lock:
            parts = [p for b in self._retry for p in b.parts] + list(self._queue)
            self._retry.clear()
            self._queue.clear()
            self._queued_bytes = 0
        return parts

    def ready(self) -> bool:
        """A whole batch is waiting (by count or by bytes), or a put-back batch is."""
        with self._lock:
            return bool(
                self._retry or len(self._queue) >= self.batch_events or self._queued_bytes >= self.batch_bytes
            )

    def take(self, *, everything: bool) -> Batch | None:
        """The next batch: put-back batches first; a partial one only when ``everything``."""
        with self._lock:
            if self._retry:
                return self._retry.popleft()
            if not self._queue:
                return None
            whole = len(self._queue) >= self.batch_events or self._queued_bytes >= self.batch_bytes
            if not (whole or everything):
                return None
            parts: list[bytes] = [self._queue.popleft()]
            size = len(parts[0])
            while self._queue and len(parts) < self.batch_events:
                if size + len(self._queue[0]) + 1 > self.batch_bytes:
                    break
                parts.append(self._queue.popleft())
                size += len(parts[-1]) + 1
            self._queued_bytes -= size + 1
            return Batch(parts, new_idempotency_key())

    def settle(self, batch: Batch, accepted: list[Sent], error: OneHazelError | None) -> None:
        """Record what a send achieved; put back or report the rest. Re-raises a retryable error."""
        with self._lock:
            self._sent.extend(accepted)
        done = sum(len(s.parts) for s in accepted)
        rest = batch.parts[done:]
        if error is None or not rest:
            return
        if isinstance(error, PayloadTooLarge) and error.index is not None:
            self.report.error([_failure(rest[0], _wire(error))], error.code)
            if len(rest) > 1:
                self._put_back(Batch(rest[1:], str(derive_key(batch.key, f"r{done + 1}"))))
            return
        if is_retryable(error):
            self._put_back(Batch(rest, batch.key if not done else str(derive_key(batch.key, f"r{done}"))))
            raise error
        code = error.code if isinstance(error, APIError) else "client_error"
        message = error.message if isinstance(error, APIError) else str(error)
        self.report.error([_failure(p, {"code": code, "message": message}) for p in rest], code)

    def _put_back(self, batch: Batch) -> None:
        with self._lock:
            self._retry.appendleft(batch)

    def oldest_sent(self) -> Sent | None:
        with self._lock:
            return self._sent[0] if self._sent else None

    def confirm(self, sent: Sent, job: dict[str, Any] | None, failed: list[dict[str, Any]]) -> None:
        """A job finished: report its failed items (and, for a failed job, every unapplied one)."""
        with self._lock:
            if self._sent and self._sent[0] is sent:
                self._sent.popleft()
        if job is None:
            log.warning("a job of %d tracked events is gone before its outcome was read", len(sent.parts))
            return
        failures = [_failure(sent.parts[o["index"]], o.get("error") or {}) for o in failed]
        self.report.error(failures, "rejected")
        if job.get("status") == "failed":
            errors = job.get("errors") or [{}]
            why = {"code": errors[0].get("code", "job_failed"), "message": errors[0].get("message", "")}
            unapplied = sent.parts[int(job.get("processed") or 0) :]
            self.report.error([_failure(p, why) for p in unapplied], "job_failed")

    def drop_unsent(self, reason: str) -> int:
        """Give up on everything still queued: report it to ``on_drop``; the count dropped."""
        parts = self.take_unsent()
        self.report.drop(decode(parts), reason)
        return len(parts)

    def forget_unconfirmed(self) -> int:
        """Stop waiting for accepted jobs (their events are stored; only outcomes go unread)."""
        with self._lock:
            count = sum(len(s.parts) for s in self._sent)
            self._sent.clear()
        if count:
            log.warning("closed before the jobs of %d accepted events finished; outcomes not read", count)
        return count


def _wire(error: APIError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message}


def _failure(part: bytes, error: dict[str, Any]) -> dict[str, Any]:
    return {"item": json.loads(part), "error": error}
