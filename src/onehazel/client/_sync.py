"""``Client``: the blocking client, with a background thread that sends ``track()`` events."""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from onehazel.client._buffer import Batch, DropCallback, ErrorCallback, Outbox, Reporter, Sent
from onehazel.client._core import (
    DONE,
    MAX_BATCH_BYTES,
    Core,
    RequestSpec,
    derive_key,
    encode,
    event_item,
    new_idempotency_key,
    transport_error,
)
from onehazel.client.errors import (
    ClientClosed,
    JobNotFound,
    OneHazelError,
    PayloadTooLarge,
    WaitTimeout,
)

log = logging.getLogger("onehazel.client")
EXIT_TIMEOUT = 10.0


class Client:
    """A blocking OneHazel client. See the package docstring for the whole story.

    ``track()`` only queues; a daemon thread sends a batch through ``POST /batch/events``
    when ``max_buffer_events`` are queued or they reach ``max_buffer_bytes``, and
    everything queued every ``flush_interval`` seconds. ``flush()``, ``close()`` (and
    the ``with`` block's end) and interpreter exit send the rest and wait for the jobs.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        transport: httpx.BaseTransport | None = None,
        flush_interval: float = 5.0,
        max_buffer_events: int = 5000,
        max_buffer_bytes: int = 8 * 1024 * 1024,
        max_queue_events: int = 100_000,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._core = Core(api_key, base_url, timeout=timeout, max_retries=max_retries)
        self._http = httpx.Client(
            base_url=self._core.base_url, headers=self._core.headers, timeout=timeout, transport=transport
        )
        self._sleep = sleep or time.sleep
        self._flush_interval = flush_interval
        self._outbox = Outbox(
            batch_events=min(max_buffer_events, 5000),
            batch_bytes=min(max_buffer_bytes, MAX_BATCH_BYTES - 1024),
            capacity=max(max_queue_events, max_buffer_events),
            reporter=Reporter(on_error, on_drop),
        )
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._closed = False
        self._at_exit = _exit_hook(weakref.ref(self))
        atexit.register(self._at_exit)

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self, *, timeout: float | None = 30.0) -> None:
        """Flush (sending everything and reading the jobs' outcomes, for up to ``timeout`` seconds), then
        release the connections. Events that still could not be sent go to ``on_drop`` ("unsent_at_close")."""
        self._close(timeout, at_exit=False)

    def _close(self, timeout: float | None, *, at_exit: bool) -> None:
        if self._closed:
            return
        try:
            self.flush(timeout=timeout)
        except OneHazelError as exc:
            log.warning("flush at close failed: %s", type(exc).__name__)
        finally:
            # Under the send lock, so the flush thread is never cut off in the middle of a send.
            locked = self._send_lock.acquire(timeout=EXIT_TIMEOUT)
            self._closed = True
            if locked:
                self._send_lock.release()
            self._wake.set()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout=EXIT_TIMEOUT)
            self._outbox.drop_unsent("unsent_at_close")
            self._outbox.forget_unconfirmed()
            self._http.close()
            if not at_exit:  # never unregister from inside the atexit run itself
                atexit.unregister(self._at_exit)

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this client is closed")

    # -- HTTP with retries ----------------------------------------------------------------------

    def _send(self, spec: RequestSpec, *, deadline: float | None = None) -> Any:
        """One call, retried on 429/5xx/connection errors with backoff; the parsed JSON body."""
        self._check_open()
        attempt = 0
        while True:
            error: OneHazelError
            try:
                response = self._http.request(
                    spec.method, spec.path, params=spec.params, content=spec.content, headers=spec.headers
                )
            except httpx.TransportError as exc:
                error = transport_error(exc)
            else:
                try:
                    return self._core.parse(response)
                except OneHazelError as exc:
                    error = exc
            delay = self._core.retry.delay(attempt, error)
            if delay is None or (deadline is not None and time.monotonic() + delay > deadline):
                raise error
            self._sleep(delay)
            attempt += 1

    # -- entities, events, states ---------------------------------------------------------------

    def upsert_entity(
        self, external_id: str, type: str, attributes: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Create or merge an entity (201/200); the stored entity."""
        result: dict[str, Any] = self._send(self._core.upsert_entity(external_id, type, attributes))
        return result

    def get_entity(self, external_id: str) -> dict[str, Any]:
        """One entity, PII decrypted."""
        result: dict[str, Any] = self._send(self._core.get_entity(external_id))
        return result

    def delete_entity(self, external_id: str) -> dict[str, Any]:
        """Soft-delete an entity (idempotent); ``{"externalId", "deletedAt", "purgeAfter"}``."""
        result: dict[str, Any] = self._send(self._core.delete_entity(external_id))
        return result

    def track(
        self,
        external_id: str,
        type: str,
        data: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        timestamp: str | dt.datetime | None = None,
    ) -> str:
        """Queue an event for the next batch; returns its eventId (``evt_<uuid hex>`` unless given)."""
        self._check_open()
        item = event_item(external_id, type, data, event_id, timestamp)
        if self._outbox.add(encode(item), item):
            self._start_thread()
            if self._outbox.ready():
                self._wake.set()
        return str(item["eventId"])

    def set_state(
        self, external_id: str, key: str, value: Any, timestamp: str | dt.datetime | None = None
    ) -> dict[str, Any]:
        """Write a state; ``applied`` is false when a newer one was already stored."""
        result: dict[str, Any] = self._send(self._core.set_state(external_id, key, value, timestamp))
        return result

    def get_state(self, external_id: str, key: str | None = None) -> dict[str, Any]:
        """One state (``key``), or ``{"externalId", "states": {...}}`` for all of them."""
        result: dict[str, Any] = self._send(self._core.get_state(external_id, key))
        return result

    def list_events(
        self,
        external_id: str,
        *,
        type: str | None = None,
        from_: str | dt.datetime | None = None,
        to: str | dt.datetime | None = None,
        order: str = "asc",
        limit: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Every matching event, fetching pages of ``limit`` and following ``nextCursor``."""
        cursor: str | None = None
        while True:
            spec = self._core.events_page(
                external_id, type=type, from_=from_, to=to, order=order, limit=limit, cursor=cursor
            )
            page = self._send(spec)
            yield from page["data"]
            cursor = page.get("nextCursor")
            if not cursor:
                return

    # -- settings and templates -----------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        result: dict[str, Any] = self._send(self._core.settings())
        return result

    def update_settings(self, **fields: Any) -> dict[str, Any]:
        """``PUT /settings`` with these fields (``template_id`` or ``templateId``, ``retention``)."""
        result: dict[str, Any] = self._send(self._core.update_settings(fields))
        return result

    def templates(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._send(self._core.templates())["data"]
        return result

    # -- batches and jobs -----------------------------------------------------------------------

    def submit_batch(
        self,
        kind: str,
        items: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        """Send items as one or more batch requests; the 202 bodies (``dry_run``: the 200 bodies).

        See ``onehazel.client`` for how batches are split and how their keys are derived."""
        parts = self._core.encode_items(kind, items)
        chunks = self._core.plan(kind, parts)
        accepted: list[Sent] = []
        for number, (start, end) in enumerate(chunks):
            key = _chunk_key(idempotency_key, number, len(chunks), dry_run)
            self._submit_parts(kind, parts[start:end], key, dry_run, start, accepted)
        return [sent.job for sent in accepted]

    def _submit_parts(
        self,
        kind: str,
        parts: list[bytes],
        key: str | None,
        dry_run: bool,
        offset: int,
        accepted: list[Sent],
        deadline: float | None = None,
    ) -> None:
        """POST one batch; a 413 sends each half instead (recursively, in order)."""
        try:
            job = self._send(self._core.submit_batch(kind, parts, key, dry_run), deadline=deadline)
        except PayloadTooLarge as exc:
            if len(parts) == 1:
                exc.index, exc.jobs = offset, [sent.job for sent in accepted]
                raise
            mid = len(parts) // 2
            self._submit_parts(kind, parts[:mid], derive_key(key, "a"), dry_run, offset, accepted, deadline)
            self._submit_parts(
                kind, parts[mid:], derive_key(key, "b"), dry_run, offset + mid, accepted, deadline
            )
            return
        accepted.append(Sent(job, parts, offset))

    def get_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._send(self._core.get_job(job_id))
        return result

    def job_items(self, job_id: str, *, status: str | None = None) -> Iterator[dict[str, Any]]:
        """Every item outcome of a job (optionally one status), following ``nextCursor``."""
        cursor: str | None = None
        while True:
            page = self._send(self._core.job_items_page(job_id, status=status, cursor=cursor))
            yield from page["data"]
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def wait_for_job(
        self, job_id: str, *, timeout: float | None = None, poll_interval: float = 0.2
    ) -> dict[str, Any]:
        """Poll until the job is completed or failed; ``WaitTimeout`` (a TimeoutError) after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] in DONE:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} is still {job['status']} after {timeout} s")
            self._sleep(poll_interval)

    # -- the track() buffer ---------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Send every queued event and wait until their jobs finish (reporting rejected items).

        Raises the last error when a batch still cannot be sent after the retries (its events stay
        queued for a later flush), and ``WaitTimeout`` when ``timeout`` seconds pass first."""
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._send_lock.acquire(timeout=-1 if deadline is None else max(timeout or 0.0, 0.0)):
            raise WaitTimeout(f"flush did not get its turn within {timeout} s")
        try:
            self._send_queued(everything=True, deadline=deadline)
            self._confirm(wait=True, deadline=deadline)
        finally:
            self._send_lock.release()

    def _send_queued(self, *, everything: bool, deadline: float | None) -> None:
        while (batch := self._outbox.take(everything=everything)) is not None:
            self._send_batch(batch, deadline)

    def _send_batch(self, batch: Batch, deadline: float | None) -> None:
        accepted: list[Sent] = []
        error: OneHazelError | None = None
        try:
            self._submit_parts("events", batch.parts, batch.key, False, 0, accepted, deadline)
        except OneHazelError as exc:
            error = exc
        self._outbox.settle(batch, accepted, error)

    def _confirm(self, *, wait: bool, deadline: float | None) -> None:
        """Read finished jobs' outcomes, oldest first (jobs of a workspace finish in order)."""
        while (sent := self._outbox.oldest_sent()) is not None:
            job_id = str(sent.job["jobId"])
            try:
                job = self.get_job(job_id)
            except JobNotFound:
                self._outbox.confirm(sent, None, [])
                continue
            if job["status"] not in DONE:
                if not wait:
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(f"{self._outbox.unconfirmed} jobs of tracked events are not finished")
                self._sleep(0.1)
                continue
            failed = list(self.job_items(job_id, status="failed")) if job.get("failed") else []
            self._outbox.confirm(sent, job, failed)

    def _start_thread(self) -> None:
        if self._thread is not None:
            return
        with self._thread_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="onehazel-flush", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        """Send full batches as they fill and everything every ``flush_interval``."""
        while not self._closed:
            woken = self._wake.wait(self._flush_interval)
            self._wake.clear()
            if not self._send_lock.acquire(blocking=False):
                continue
            try:
                if self._closed:
                    return
                self._send_queued(everything=not woken, deadline=None)
                self._confirm(wait=False, deadline=None)
            except OneHazelError as exc:
                log.warning(
                    "sending tracked events failed (%s); %d stay queued",
                    type(exc).__name__,
                    len(self._outbox),
                )
            except Exception:
                log.exception("the onehazel flush thread hit an unexpected error")
            finally:
                self._send_lock.release()


def _chunk_key(key: str | None, number: int, chunks: int, dry_run: bool) -> str | None:
    """The Idempotency-Key of one request of ``submit_batch``: the caller's own when there is one request."""
    if dry_run:
        return None
    if key is None:
        return new_idempotency_key()
    return key if chunks == 1 else derive_key(key, str(number))


def _exit_hook(ref: weakref.ReferenceType[Client]) -> Callable[[], None]:
    def close_at_exit() -> None:
        client = ref()
        if client is not None:
            client._close(EXIT_TIMEOUT, at_exit=True)

    return close_at_exit
