"""The batch worker: claims jobs and applies them chunk by chunk, exactly once.

Each chunk is one transaction that (1) re-reads the job row under lock and
checks this worker still holds the lease, (2) applies the chunk's items,
(3) records their outcomes and (4) advances ``processed`` and renews the
lease. Because the effects and the progress commit together, a crash at any
moment loses at most the uncommitted chunk, which the next worker redoes from
the committed index: nothing lost, nothing applied twice.

``onehazel serve`` runs one worker in-process; ``onehazel worker`` runs any
number alone. On shutdown the worker finishes the chunk in flight and gives
its lease back so another worker resumes immediately.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from dataclasses import replace
from typing import Any

from onehazel.crypto.blobs import open_blob
from onehazel.crypto.fields import DecryptionFailed
from onehazel.crypto.fingerprints import Fingerprinter
from onehazel.domain.errors import ApiError, TemplateNotConfigured
from onehazel.domain.json_text import parse_json
from onehazel.domain.templates import Template
from onehazel.domain.workspace import Workspace
from onehazel.jobs.apply import CHUNK_SIZE, apply_chunk, failure
from onehazel.services.container import Services
from onehazel.storage.jobs import JobRecord

log = logging.getLogger("onehazel.worker")

DAY_MICROS = 86_400 * 1_000_000
KEEP_ERRORS = 100
SWEEP_SECONDS = 60.0


def advance(job: JobRecord, outcomes: list[dict[str, Any]], *, now: int, lease_until: int) -> JobRecord:
    """The job after a chunk: counters, first errors and warnings, progress, lease."""
    errors, warnings = list(job.errors), list(job.warnings)
    counts = {"succeeded": 0, "failed": 0, "duplicate": 0}
    for outcome in outcomes:
        counts[outcome["status"]] += 1
        error = outcome.get("error")
        if error and len(errors) < KEEP_ERRORS:
            errors.append({"index": outcome["index"], "code": error["code"], "message": error["message"]})
        for warning in outcome.get("warnings", ()):
            if len(warnings) < KEEP_ERRORS:
                warnings.append({"index": outcome["index"], **warning})
    processed = job.processed + len(outcomes)
    done = processed >= job.total
    return replace(
        job,
        processed=processed,
        succeeded=job.succeeded + counts["succeeded"],
        failed=job.failed + counts["failed"],
        duplicates=job.duplicates + counts["duplicate"],
        errors=errors,
        warnings=warnings,
        status="completed" if done else "processing",
        completed_at=now if done else None,
        lease_owner=None if done else job.lease_owner,
        lease_until=None if done else lease_until,
    )


class Worker:
    def __init__(
        self,
        services: Services,
        *,
        lease_seconds: float = 15.0,
        idle_seconds: float = 0.5,
        retention_days: float = 7.0,
        events_chunk: float | None = None,
    ) -> None:
        self.services = services
        self.core = services.core
        self.lease = int(lease_seconds * 1_000_000)
        self.idle_seconds = idle_seconds
        self.retention = int(retention_days * DAY_MICROS)
        # Events per transaction: larger is faster, smaller redoes less after a crash.
        self.chunk_sizes = dict(CHUNK_SIZE)
        if events_chunk is not None:
            self.chunk_sizes["events"] = max(1, int(events_chunk))
        self.owner = f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(4)}"

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; storage outages are logged and retried."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while not stop.is_set():
            worked = False
            try:
                worked = await self.run_once(stop)
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + SWEEP_SECONDS
                    await self.sweep()
            except Exception:
                log.exception("batch worker iteration failed; retrying")
            if not worked:
                await self._idle(stop)

    async def _idle(self, stop: asyncio.Event) -> None:
        waiting = self.core.jobs_waiting
        waiting.clear()
        stop_wait = asyncio.ensure_future(stop.wait())
        job_wait = asyncio.ensure_future(waiting.wait())
        try:
            await asyncio.wait(
                {stop_wait, job_wait}, timeout=self.idle_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (stop_wait, job_wait):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def run_once(self, stop: asyncio.Event | None = None) -> bool:
        """Claim one runnable job and work on it; False when none was runnable."""
        now = self.core.clock()
        async with self.core.store.begin() as uow:
            job = await uow.jobs.claim_next(owner=self.owner, now=now, lease_until=now + self.lease)
        if job is None:
            return False
        await self.process(job, stop or asyncio.Event())
        return True

    async def process(self, job: JobRecord, stop: asyncio.Event) -> None:
        ws = Workspace(id=job.workspace_id, operator_id="", mode="", key_id="worker")
        items = await self._items(job)
        if items is None:
            return
        size = self.chunk_sizes[job.kind]
        while True:
            if stop.is_set():
                async with self.core.store.begin() as uow:
                    await uow.jobs.release(ws.id, job.id, owner=self.owner)
                return
            template = await self._template(ws)
            fingerprints = await self.core.fingerprinter(ws)  # also before the transaction
            async with self.core.store.begin() as uow:
                current = await uow.jobs.get(ws.id, job.id, lock=True)
                if current is None or current.status != "processing" or current.lease_owner != self.owner:
                    return  # the lease lapsed and another worker took over
                chunk = items[current.processed : current.processed + size]
                outcomes = await self._apply(uow, ws, current, chunk, template, fingerprints)
                now = self.core.clock()
                updated = advance(current, outcomes, now=now, lease_until=now + self.lease)
                if chunk:
                    await uow.jobs.add_chunk(ws.id, job.id, start_index=current.processed, outcomes=outcomes)
                await uow.jobs.save_progress(updated)
            if updated.status != "processing":
                log.info("job finished", extra={"fields": {"jobId": job.id, "total": job.total}})
                return

    async def _template(self, ws: Workspace) -> Template | TemplateNotConfigured:
        """The template, read before the chunk's transaction opens.

        A settings-cache miss reads in a transaction of its own; inside the
        chunk's transaction that would wait for a second connection, which
        SQLite's single pooled connection never frees (a deadlock until the
        pool times out).
        """
        try:
            return await self.core.template_of(ws)
        except TemplateNotConfigured as error:
            return error

    async def _apply(
        self,
        uow: Any,
        ws: Workspace,
        job: JobRecord,
        chunk: list[Any],
        template: Template | TemplateNotConfigured,
        fingerprints: Fingerprinter,
    ) -> list[dict[str, Any]]:
        if isinstance(template, TemplateNotConfigured):
            return [failure(job.processed + i, item, template) for i, item in enumerate(chunk)]
        return await apply_chunk(
            self.services,
            uow,
            ws,
            template,
            kind=job.kind,
            items=chunk,
            start=job.processed,
            fingerprints=fingerprints,
        )

    async def _items(self, job: JobRecord) -> list[Any] | None:
        """The job's items, or None after marking an unreadable job as failed."""
        async with self.core.store.begin() as uow:
            blob = await uow.jobs.payload(job.workspace_id, job.id)
        try:
            if blob is None:
                raise DecryptionFailed("the job's payload is gone")
            document = parse_json(open_blob(self.core.keys, job.workspace_id, f"job/{job.id}", blob))
            items: list[Any] = document[job.kind]
            return items
        except (DecryptionFailed, ApiError, KeyError, TypeError, LookupError) as exc:
            log.error(
                "job payload unreadable", extra={"fields": {"jobId": job.id, "error": type(exc).__name__}}
            )
            now = self.core.clock()
            failed = replace(
                job,
                status="failed",
                completed_at=now,
                lease_owner=None,
                lease_until=None,
                errors=[
                    {"index": None, "code": "job_unreadable", "message": "the stored batch could not be read"}
                ],
            )
            async with self.core.store.begin() as uow:
                await uow.jobs.save_progress(failed)
            return None

    async def sweep(self) -> int:
        """Remove finished jobs (and their outcomes) older than the retention period."""
        before = self.core.clock() - self.retention
        removed = 0
        while True:
            async with self.core.store.begin() as uow:
                count = await uow.jobs.delete_expired(before=before)
            removed += count
            if count == 0:
                return removed


def start_in_background(services: Services, options: dict[str, float], *, tasks: int = 1) -> Any:
    """Start ``tasks`` workers on the running loop; returns an async ``stop()``.

    ``stop()`` asks them to finish (or release) the chunk in flight and waits.
    """
    stop = asyncio.Event()
    running = [asyncio.ensure_future(Worker(services, **options).run(stop)) for _ in range(tasks)]

    async def stop_all() -> None:
        stop.set()
        await asyncio.gather(*running, return_exceptions=True)

    return stop_all
