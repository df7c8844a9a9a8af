"""``AsyncClient``: the same methods as ``Client``, awaitable, with a task that sends ``track()`` events."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime as dt
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
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
    transport_error,
)
from onehazel.client._sync import EXIT_TIMEOUT, Client, _chunk_key
from onehazel.client.errors import (
    ClientClosed,
    JobNotFound,
    OneHazelError,
    PayloadTooLarge,
    WaitTimeout,
)

log = logging.getLogger("onehazel.client")


class AsyncClient:
    """The asynchronous OneHazel client: ``Client``'s methods, each awaitable.

    ``track()`` queues; a task on the running loop sends batches as they fill and every
    ``flush_interval``. ``await flush()``/``await close()`` (and ``async with``) send the rest
    and wait for the jobs. If the program exits without closing, the queued events are
    sent from an ``atexit`` hook with a blocking client (not when a custom transport is used:
    then they go to ``on_drop`` as "not_closed").
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
        flush_interval: float = 5.0,
        max_buffer_events: int = 5000,
        max_buffer_bytes: int = 8 * 1024 * 1024,
        max_queue_events: int = 100_000,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._core = Core(api_key, base_url, timeout=timeout, max_retries=max_retries)
        self._http = httpx.AsyncClient(
            base_url=self._core.base_url, headers=self._core.headers, timeout=timeout, transport=transport
        )
        self._sleep = sleep or asyncio.sleep
        self._flush_interval = flush_interval
        self._reporter = Reporter(on_error, on_drop)
        self._outbox = Outbox(
            batch_events=min(max_buffer_events, 5000),
            batch_bytes=min(max_buffer_bytes, MAX_BATCH_BYTES - 1024),
            capacity=max(max_queue_events, max_buffer_events),
            reporter=self._reporter,
        )
        self._send_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._custom_transport = transport is not None
        self._at_exit = _exit_hook(weakref.ref(self))
        atexit.register(self._at_exit)

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, *, timeout: float | None = 30.0) -> None:
        """Flush for up to ``timeout`` seconds, then release the connections (see ``Client.close``)."""
        if self._closed:
            return
        try:
            await self.flush(timeout=timeout)
        except OneHazelError as exc:
            log.warning("flush at close failed: %s", type(exc).__name__)
        finally:
            locked = False
            with contextlib.suppress(TimeoutError):
                locked = await asyncio.wait_for(self._send_lock.acquire(), EXIT_TIMEOUT)
            self._closed = True
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            if locked:
                self._send_lock.release()
            self._outbox.drop_unsent("unsent_at_close")
            self._outbox.forget_unconfirmed()
            await self._http.aclose()
            atexit.unregister(self._at_exit)

    aclose = close

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this client is closed")

    # -- HTTP with retries ----------------------------------------------------------------------

    async def _send(self, spec: RequestSpec, *, deadline: float | None = None) -> Any:
        """One call, retried on 429/5xx/connection errors with backoff; the parsed JSON body."""
        self._check_open()
        attempt = 0
        while True:
            error: OneHazelError
            try:
                response = await self._http.request(
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
            await self._sleep(delay)
            attempt += 1

    # -- entities, events, states ---------------------------------------------------------------

    async def upsert_entity(
        self, external_id: str, type: str, attributes: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(self._core.upsert_entity(external_id, type, attributes))
        return result

    async def get_entity(self, external_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(self._core.get_entity(external_id))
        return result

    async def delete_entity(self, external_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(self._core.delete_entity(external_id))
        return result

    async def track(
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
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._run(), name="onehazel-flush")
            if self._outbox.ready():
                self._wake.set()
        return str(item["eventId"])

    async def set_state(
        self, external_id: str, key: str, value: Any, timestamp: str | dt.datetime | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(self._core.set_state(external_id, key, value, timestamp))
        return result

    async def get_state(self, external_id: str, key: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(self._core.get_state(external_id, key))
        return result

    async def list_events(
        self,
        external_id: str,
        *,
        type: str | None = None,
        from_: str | dt.datetime | None = None,
        to: str | dt.datetime | None = None,
        order: str = "asc",
        limit: int = 100,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every matching event (``async for``), fetching pages of ``limit`` and following ``nextCursor``."""
        cursor: str | None = None
        while True:
            spec = self._core.events_page(
                external_id, type=type, from_=from_, to=to, order=order, limit=limit, cursor=cursor
            )
            page = await self._send(spec)
            for event in page["data"]:
                yield event
            cursor = page.get("nextCursor")
            if not cursor:
                return

    # -- settings and templates -----------------------------------------------------------------

    async def settings(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(self._core.settings())
        return result

    async def update_settings(self, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(self._core.update_settings(fields))
        return result

    async def templates(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self._send(self._core.templates()))["data"]
        return result

    # -- batches and jobs -----------------------------------------------------------------------

    async def submit_batch(
        self,
        kind: str,
        items: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        """Send items as one or more batch requests; the 202 bodies (``dry_run``: the 200 bodies)."""
        parts = self._core.encode_items(kind, items)
        chunks = self._core.plan(kind, parts)
        accepted: list[Sent] = []
        for number, (start, end) in enumerate(chunks):
            key = _chunk_key(idempotency_key, number, len(chunks), dry_run)
            await self._submit_parts(kind, parts[start:end], key, dry_run, start, accepted)
        return [sent.job for sent in accepted]

    async def _submit_parts(
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
            job = await self._send(self._core.submit_batch(kind, parts, key, dry_run), deadline=deadline)
        except PayloadTooLarge as exc:
            if len(parts) == 1:
                exc.index, exc.jobs = offset, [sent.job for sent in accepted]
                raise
            mid = len(parts) // 2
            await self._submit_parts(
                kind, parts[:mid], derive_key(key, "a"), dry_run, offset, accepted, deadline
            )
            await self._submit_parts(
                kind, parts[mid:], derive_key(key, "b"), dry_run, offset + mid, accepted, deadline
            )
            return
        accepted.append(Sent(job, parts, offset))

    async def get_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(self._core.get_job(job_id))
        return result

    async def job_items(self, job_id: str, *, status: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every item outcome of a job (``async for``), following ``nextCursor``."""
        cursor: str | None = None
        while True:
            page = await self._send(self._core.job_items_page(job_id, status=status, cursor=cursor))
            for item in page["data"]:
                yield item
            cursor = page.get("nextCursor")
            if not cursor:
                return

    async def wait_for_job(
        self, job_id: str, *, timeout: float | None = None, poll_interval: float = 0.2
    ) -> dict[str, Any]:
        """Poll until the job is completed or failed; ``WaitTimeout`` (a TimeoutError) after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.get_job(job_id)
            if job["status"] in DONE:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} is still {job['status']} after {timeout} s")
            await self._sleep(poll_interval)

    # -- the track() buffer ---------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> None:
        """Send every queued event and wait until their jobs finish (see ``Client.flush``)."""
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            await asyncio.wait_for(self._send_lock.acquire(), timeout)
        except TimeoutError:
            raise WaitTimeout(f"flush did not get its turn within {timeout} s") from None
        try:
            await self._send_queued(everything=True, deadline=deadline)
            await self._confirm(wait=True, deadline=deadline)
        finally:
            self._send_lock.release()

    async def _send_queued(self, *, everything: bool, deadline: float | None) -> None:
        while (batch := self._outbox.take(everything=everything)) is not None:
            await self._send_batch(batch, deadline)

    async def _send_batch(self, batch: Batch, deadline: float | None) -> None:
        accepted: list[Sent] = []
        error: OneHazelError | None = None
        try:
            await self._submit_parts("events", batch.parts, batch.key, False, 0, accepted, deadline)
        except OneHazelError as exc:
            error = exc
        self._outbox.settle(batch, accepted, error)

    async def _confirm(self, *, wait: bool, deadline: float | None) -> None:
        """Read finished jobs' outcomes, oldest first (jobs of a workspace finish in order)."""
        while (sent := self._outbox.oldest_sent()) is not None:
            job_id = str(sent.job["jobId"])
            try:
                job = await self.get_job(job_id)
            except JobNotFound:
                self._outbox.confirm(sent, None, [])
                continue
            if job["status"] not in DONE:
                if not wait:
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(f"{self._outbox.unconfirmed} jobs of tracked events are not finished")
                await self._sleep(0.1)
                continue
            failed = [o async for o in self.job_items(job_id, status="failed")] if job.get("failed") else []
            self._outbox.confirm(sent, job, failed)

    async def _run(self) -> None:
        """Send full batches as they fill and everything every ``flush_interval``."""
        while not self._closed:
            woken = True
            try:
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            except TimeoutError:
                woken = False
            self._wake.clear()
            if self._send_lock.locked():
                continue
            async with self._send_lock:
                if self._closed:
                    return
                try:
                    await self._send_queued(everything=not woken, deadline=None)
                    await self._confirm(wait=False, deadline=None)
                except OneHazelError as exc:
                    log.warning(
                        "sending tracked events failed (%s); %d stay queued",
                        type(exc).__name__,
                        len(self._outbox),
                    )
                except Exception:
                    log.exception("the onehazel flush task hit an unexpected error")

    def _hand_over_at_exit(self) -> None:
        """The loop is gone: send what is still queued with a blocking client, or report it dropped."""
        if self._closed:
            return
        self._closed = True
        parts = self._outbox.take_unsent()
        if not parts:
            return
        if self._custom_transport:
            self._outbox.adopt(parts)
            self._outbox.drop_unsent("not_closed")
            return
        core = self._core
        client = Client(core.api_key, core.base_url, timeout=core.timeout, max_retries=core.retry.max_retries)
        client._outbox.report = self._reporter
        client._outbox.adopt(parts)
        client._close(EXIT_TIMEOUT, at_exit=True)


def _exit_hook(ref: weakref.ReferenceType[AsyncClient]) -> Callable[[], None]:
    def hand_over() -> None:
        client = ref()
        if client is not None:
            client._hand_over_at_exit()

    return hand_over
