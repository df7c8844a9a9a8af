"""The batch worker: claims jobs and applies them chunk by chunk, exactly once.

Each chunk is one transaction that (1) re-reads the job row under lock and
checks this worker still holds the lease, (2) applies the chunk's items,
(3) records their outcomes and (4) advances ``processed`` and renews the
lease; a job's last chunk also (5) claims the next runnable job, so the
claim needs no transaction of its own. Because the effects and the progress
commit together, a crash at any moment loses at most the uncommitted chunk,
which the next worker redoes from the committed index: nothing lost, nothing
applied twice (a job claimed and not started is resumed once its lease lapses).

``onehazel serve`` runs one worker in-process; ``onehazel worker`` runs any
number alone. On shutdown the worker finishes the chunk in flight and gives
its lease back so another worker resumes immediately.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

import orjson

from onehazel.crypto.blobs import open_blob
from onehazel.crypto.fields import DecryptionFailed
from onehazel.crypto.fingerprints import Fingerprinter
from onehazel.domain.errors import ApiError, TemplateNotConfigured
from onehazel.domain.json_text import parse_json, strings_are_clean
from onehazel.domain.templates import Template
from onehazel.domain.workspace import Workspace
from onehazel.jobs.apply import (
    CHUNK_SIZE,
    Planned,
    PreparedEvents,
    apply_chunk,
    failure,
    plan,
    prepare_events_async,
    replay_sample,
    stamp,
)
from onehazel.services.container import Services
from onehazel.storage.events import SqliteRows, restamp, sqlite_rows
from onehazel.storage.jobs import JobRecord
from onehazel.storage.rollups import Delta
from onehazel.storage.sqlite_chunk import ChunkQuestions, ChunkWrites, finish_chunk, open_chunk
from onehazel.storage.unit_of_work import UnitOfWork

log = logging.getLogger("onehazel.worker")

DAY_MICROS = 86_400 * 1_000_000
UNREADABLE = (DecryptionFailed, ApiError, KeyError, TypeError, LookupError)
UNREADABLE_MESSAGE = "the stored batch could not be read"
KEEP_ERRORS = 100
SWEEP_SECONDS = 60.0


@dataclass(frozen=True)
class Tally:
    """A chunk's outcomes summed up for its job row (``tally``)."""

    items: int
    counts: dict[str, int]
    """Items per status: succeeded, failed, duplicate."""
    errors: list[dict[str, Any]]
    """The first ``KEEP_ERRORS`` errors, and warnings, each with its item index."""
    warnings: list[dict[str, Any]]


def tally(outcomes: list[dict[str, Any]]) -> Tally:
    errors: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    counts = {"succeeded": 0, "failed": 0, "duplicate": 0}
    for outcome in outcomes:
        counts[outcome["status"]] += 1
        error = outcome.get("error")
        if error and len(errors) < KEEP_ERRORS:
            errors.append({"index": outcome["index"], "code": error["code"], "message": error["message"]})
        for warning in outcome.get("warnings", ()):
            if len(warnings) < KEEP_ERRORS:
                warnings.append({"index": outcome["index"], **warning})
    return Tally(len(outcomes), counts, errors, warnings)


def advance(
    job: JobRecord, outcomes: list[dict[str, Any]] | Tally, *, now: int, lease_until: int
) -> JobRecord:
    """The job after a chunk (its outcomes, or their ``tally``): counters, first errors and
    warnings, progress, lease."""
    chunk = outcomes if isinstance(outcomes, Tally) else tally(outcomes)
    counts = chunk.counts
    processed = job.processed + chunk.items
    done = processed >= job.total
    return replace(
        job,
        processed=processed,
        succeeded=job.succeeded + counts["succeeded"],
        failed=job.failed + counts["failed"],
        duplicates=job.duplicates + counts["duplicate"],
        errors=[*job.errors, *chunk.errors][:KEEP_ERRORS],
        warnings=[*job.warnings, *chunk.warnings][:KEEP_ERRORS],
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
        sqlite_chunks: bool = True,
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
        # SQLite: events chunks in two calls into the driver's thread (_sqlite_chunk); off,
        # every chunk goes by the generic path (as on PostgreSQL): the tests compare both.
        self.sqlite_chunks = sqlite_chunks and services.core.store.is_sqlite
        self._ahead: Ahead | None = None  # the workspace's next job, read and checked ahead
        # The last events chunk was a re-send: the next one likely is too, so its look-ahead
        # does not build rows (PreparedEvents.rows) it would not write. Set from the chunk's
        # replay probe when the look-ahead is released, then from its outcomes (every item a
        # duplicate).
        self._replaying = False
        # The last job's items, checks and outcomes (~150,000 objects for 5000 events, ~4 ms
        # to free; they may hold PII): kept until the next chunk's bulk write has started, then
        # freed by its look-ahead while the database works, instead of on the way to the next
        # claim; at the latest when the next job's first chunk commits, or the worker idles.
        self._spent: tuple[Any, ...] = ()
        # The next job, claimed in the transaction that finished the previous one (a claim
        # of its own costs a transaction: on SQLite a commit, and a turn of the one
        # connection that HTTP requests wait for too). Processed by the next run_once;
        # its lease is given back if the worker stops first.
        self._held: JobRecord | None = None

    def _free_spent(self) -> None:
        self._spent = ()

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
                self._free_spent()
                await self._idle(stop)
        self._drop_ahead()
        await self._release_held()

    async def _release_held(self) -> None:
        """Give back the lease of a job claimed but not started (the worker is stopping)."""
        held, self._held = self._held, None
        if held is None:
            return
        try:
            async with self.core.store.begin() as uow:
                await uow.jobs.release(held.workspace_id, held.id, owner=self.owner)
        except Exception:  # its lease lapses on its own; another worker resumes it then
            log.warning("giving back a claimed job failed", exc_info=True)

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.cancel()
            self._ahead = None

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
        """Claim one runnable job and work on it; False when none was runnable. The job
        claimed when the last one finished (``_held``) comes first."""
        job, self._held = self._held, None
        if job is None:
            async with self.core.store.begin() as uow:
                job = await self._claim(uow)
        if job is None:
            self._drop_ahead()  # what it read ahead was claimed elsewhere or is gone
            return False
        await self.process(job, stop or asyncio.Event())
        return True

    async def _claim(self, uow: UnitOfWork) -> JobRecord | None:
        now = self.core.clock()
        return await uow.jobs.claim_next(
            owner=self.owner, now=now, lease_until=now + self.lease, clock=self.core.clock
        )

    async def process(self, job: JobRecord, stop: asyncio.Event) -> None:
        ws = Workspace(id=job.workspace_id, operator_id="", mode="", key_id="worker")
        ahead = await self._take_ahead(job)
        batch = ahead.items if ahead is not None and ahead.items is not None else await self._items(job)
        if batch is None:
            return
        size = self.chunk_sizes[job.kind]
        start = job.processed
        prepared: PreparedEvents | None = None
        outcomes: list[dict[str, Any]] = []
        try:
            while True:
                if stop.is_set():
                    async with self.core.store.begin() as uow:
                        await uow.jobs.release(ws.id, job.id, owner=self.owner)
                    return
                template = await self._template(ws)
                fingerprints = await self.core.fingerprinter(ws)  # also before the transaction
                prepared = await self._prepared(ahead, job, batch, start, template, fingerprints)
                ahead = self._look_ahead(job, batch, start + size, template, fingerprints)
                chunk_of = _Chunk(ws, job, batch, size, template, fingerprints, prepared, ahead)
                async with self.core.store.begin() as uow:
                    step = await self._chunk(uow, chunk_of, stop)
                if step is None:
                    return  # the lease lapsed and another worker took over
                updated, claimed, outcomes = step
                self._held = claimed
                self._free_spent()  # if no look-ahead freed them (none for this job), now
                start = updated.processed
                if updated.status != "processing":
                    log.info("job finished", extra={"fields": {"jobId": job.id, "total": job.total}})
                    return
        except PayloadUnreadable as exc:
            await self._unreadable(job, exc)
        finally:
            self._go_ahead(ahead)
            if ahead is not None and ahead.job_id == job.id:
                ahead.cancel()  # a chunk of this job that will not be applied by this call
            self._spent = (batch, prepared, outcomes)

    async def _chunk(
        self, uow: UnitOfWork, c: _Chunk, stop: asyncio.Event
    ) -> tuple[JobRecord, JobRecord | None, list[dict[str, Any]]] | None:
        """Apply the chunk at the job's committed progress in ``uow`` and record it: the job
        after it, the job claimed next (if it ended), the outcomes; None when this worker no
        longer holds the job. On SQLite an events chunk goes by :meth:`_sqlite_chunk` first."""
        ws, job, size, template, fingerprints = c.ws, c.job, c.size, c.template, c.fingerprints
        go = functools.partial(self._go_ahead, c.ahead)
        current: JobRecord | None = None
        outcomes: list[dict[str, Any]] | None = None
        if self.sqlite_chunks and c.prepared is not None and isinstance(template, Template):
            fast = await self._sqlite_chunk(uow, c, c.prepared, template, stop)
            if fast.step is not None:
                return fast.step
            current, outcomes = fast.current, fast.outcomes
        else:
            current = await uow.jobs.get(ws.id, job.id, lock=True)
        if not self._holds(current):
            return None
        chunk = c.batch.items[current.processed : current.processed + size]
        if outcomes is None:
            last = current.processed + size >= len(c.batch.items) and job.kind == "events"
            if last and self._ahead is None and isinstance(template, Template):
                # The workspace's next job, read in this transaction (not one of its own)
                # and checked while this chunk is written.
                self._ahead = await Ahead.next_job(self, uow, ws, job, template, fingerprints)
            outcomes = await self._apply(
                uow, ws, current, chunk, template, fingerprints, c.prepared, go, c.batch.reread
            )
        self._hold_ahead(c.ahead)  # the short statements up to the COMMIT go first
        now = self.core.clock()
        updated = advance(current, outcomes, now=now, lease_until=now + self.lease)
        self._note_replaying(job, outcomes)
        if chunk:
            await uow.jobs.add_chunk(ws.id, job.id, start_index=current.processed, outcomes=outcomes)
        await uow.jobs.save_progress(updated)
        claimed = None
        if updated.status != "processing" and not stop.is_set():
            claimed = await self._claim(uow)  # commits with this job's end
        go()  # the COMMIT (its log write and sync) runs beside the look-ahead
        return updated, claimed, outcomes

    def _stage(self, workspace_id: str, prepared: PreparedEvents) -> _Staged | None:
        """For :meth:`_sqlite_chunk`: the rows built ahead, flattened for the INSERTs, their
        analytics deltas, and the chunk's outcomes (should every row go in) as JSON text and
        as a tally for the job row. Made with the check (in the look-ahead, beside the
        previous chunk's write), not in the chain from one chunk's COMMIT to the next one's
        write: ~10 ms a 5000-event chunk (the outcomes' JSON, encoded in SQLite's thread, took
        ~4 ms of it with the GIL held). The rows' time of receipt and server order are given
        as the chunk is written (``restamp``; placeholders here): a chunk before it may still
        go the generic way, which stamps its rows at its write, and an entity's events are
        listed in ``seq`` order among those of one timestamp."""
        if not self.sqlite_chunks or prepared.rows is None:
            return None
        rows = prepared.rows
        deltas = rows.deltas(workspace_id)
        planned = plan(prepared, False, None)
        if deltas is None or planned is None:  # rows built ahead are counted: not expected
            return None
        rows.received_at, rows.seq = [0] * len(rows.event_id), [0] * len(rows.event_id)
        outcomes = planned.outcomes
        encoded = orjson.dumps(outcomes).decode()
        return _Staged(sqlite_rows(workspace_id, rows), deltas, outcomes, encoded, tally(outcomes))

    def _holds(self, current: JobRecord | None) -> TypeGuard[JobRecord]:
        """Does this worker still hold the job (``current``: its row, read in the chunk's
        transaction)? Else its lease lapsed and another worker took over."""
        return current is not None and current.status == "processing" and current.lease_owner == self.owner

    def _note_replaying(self, job: JobRecord, outcomes: list[dict[str, Any]]) -> None:
        if job.kind == "events" and outcomes:
            self._replaying = all(o["status"] == "duplicate" for o in outcomes)

    async def _sqlite_chunk(
        self, uow: UnitOfWork, c: _Chunk, prepared: PreparedEvents, template: Template, stop: asyncio.Event
    ) -> _Fast:
        """An events chunk on SQLite in two calls into the driver's thread
        (``storage/sqlite_chunk.py``): its reads, then its writes with the job's progress, the
        next job's claim and the COMMIT. The chunk's outcomes are known before it is written
        (``apply.plan``): every entity is live and the chunk is new (its rows built ahead)
        or a re-send of stored events only. Any other chunk is left to the generic path, in
        the same transaction: ``current`` (the job row, read already) is returned, and the
        ``outcomes`` too when the rows were written but not all of them went in."""
        ws, job = c.ws, c.job
        self._go_ahead(c.ahead)  # this job's next chunk: nothing here waits for the event loop twice
        ask = ChunkQuestions(
            workspace_id=ws.id,
            job_id=job.id,
            start=prepared.start,
            external_ids=sorted(prepared.external_ids),
            sample=replay_sample(prepared),
            event_ids=[checked.event_id for checked in prepared.checked],
            read_ahead=c.size if self._ahead is None and job.kind == "events" else None,
            now=self.core.clock(),
        )
        opening = await open_chunk(uow, ask)
        current = opening.job
        if not self._holds(current):
            return _Fast(current)
        if opening.next_job is not None:
            self._ahead = Ahead.reading(self, ws, *opening.next_job, template, c.fingerprints)
            self._ahead.go.set()
        chunk_size = len(c.batch.items[current.processed : current.processed + c.size])
        if not opening.live or not prepared.fits(template, c.fingerprints, current.processed, chunk_size):
            return _Fast(current)
        staged: _Staged | None = prepared.staged
        if not opening.replayed:  # a new chunk: planned as it was staged (rows built ahead)
            if staged is None:
                return _Fast(current)
            planned = Planned(prepared, prepared.rows, staged.outcomes)
            rows, summed, encoded = staged.flat, staged.tally, staged.encoded
            assert prepared.rows is not None  # staged rows are built rows
            stamp(self.core, prepared.rows, self.core.clock())  # now, in write order
            restamp(rows, prepared.rows)
        else:
            replay = plan(prepared, True, opening.existing)
            if replay is None:
                return _Fast(current)
            planned, rows, summed, encoded = replay, None, tally(replay.outcomes), None
        now = self.core.clock()
        updated = advance(current, summed, now=now, lease_until=now + self.lease)
        writes = ChunkWrites(
            workspace_id=ws.id,
            rows=rows,
            row_count=len(planned.rows.event_id) if planned.rows is not None else 0,
            deltas=staged.deltas if rows is not None and staged is not None else [],
            outcomes=planned.outcomes,
            encoded=encoded,
            start=current.processed,
            progress=updated,
            claim=(self.owner, self.lease) if updated.status != "processing" and not stop.is_set() else None,
            clock=self.core.clock,
        )
        added, claimed, committed = await finish_chunk(uow, writes)
        if committed:
            self._note_replaying(job, planned.outcomes)
            return _Fast(current, step=(updated, claimed, planned.outcomes))
        if added is None:  # nothing written: the generic path writes the rows its own way
            return _Fast(current)
        return _Fast(current, await planned.settle(uow, ws, added))

    def _hold_ahead(self, ahead: Ahead | None) -> None:
        """Pause the look-aheads' checks between their slices: the chunk's statements after
        its bulk write each wait for the event loop, which a running check holds for a slice
        at a time (several slices per statement). Reopened by ``_go_ahead``, in every case
        before the transaction ends (``process``)."""
        for waiting in (ahead, self._ahead):
            if waiting is not None:
                waiting.go.clear()

    def _go_ahead(self, ahead: Ahead | None, replayed: bool | None = None) -> None:
        """Let the look-aheads start their CPU work: the chunk's bulk write has begun (its
        short statements before it were not kept waiting by them), or the chunk is over.
        ``replayed``: the chunk looks like a re-send, known before its outcomes are."""
        if replayed is not None:
            self._replaying = replayed
        for waiting in (ahead, self._ahead):
            if waiting is not None:
                waiting.go.set()

    async def _take_ahead(self, job: JobRecord) -> Ahead | None:
        """The look-ahead made for ``job`` while the previous job was applied, if any."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        if ahead.job_id != job.id or job.processed != 0:
            ahead.cancel()
            return None
        if await ahead.result() is None or ahead.items is None:
            return None  # the look-ahead failed: the job is read in its turn
        return ahead

    async def _prepared(
        self,
        ahead: Ahead | None,
        job: JobRecord,
        batch: Items,
        start: int,
        template: Template | TemplateNotConfigured,
        fingerprints: Fingerprinter,
    ) -> PreparedEvents | None:
        """The checked events of the chunk at ``start``: from the look-ahead when it was made
        for exactly that chunk, else checked now (in slices, outside the transaction)."""
        if job.kind != "events" or isinstance(template, TemplateNotConfigured):
            return None
        if ahead is not None and ahead.job_id == job.id and ahead.start == start:
            prepared = await ahead.result()
            if prepared is not None:
                return prepared
        return await self._check(job.workspace_id, template, batch, start, fingerprints)

    async def _check(
        self,
        workspace_id: str,
        template: Template,
        batch: Items,
        start: int,
        fingerprints: Fingerprinter,
        gate: asyncio.Event | None = None,
    ) -> PreparedEvents:
        """Check the events chunk of ``batch`` at ``start`` (in slices, off any transaction,
        pausing while ``gate`` is closed); rows are built unless the last chunk was a re-send,
        and staged for the SQLite chunk path (``_stage``)."""
        chunk = batch.items[start : start + self.chunk_sizes["events"]]
        prepared = await prepare_events_async(
            template,
            chunk,
            start,
            fingerprints,
            clean=batch.clean,
            rows=not self._replaying,
            reread=batch.reread,
            gate=gate,
        )
        if gate is not None and not gate.is_set():
            await gate.wait()
        prepared.staged = self._stage(workspace_id, prepared)
        return prepared

    def _look_ahead(
        self,
        job: JobRecord,
        batch: Items,
        start: int,
        template: Template | TemplateNotConfigured,
        fingerprints: Fingerprinter,
    ) -> Ahead | None:
        """Start checking this job's next chunk while this one is written: CPU work that
        fills the database round trips. (The workspace's next job is read ahead in the
        transaction of this job's last chunk: ``Ahead.next_job``.)"""
        if isinstance(template, TemplateNotConfigured) or job.kind != "events" or start >= len(batch.items):
            return None
        ahead = Ahead(job.id, start, batch)

        async def work() -> PreparedEvents | None:
            await ahead.go.wait()
            self._free_spent()
            return await self._check(job.workspace_id, template, batch, start, fingerprints, ahead.go)

        return ahead.running(work())

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
        prepared: PreparedEvents | None,
        writing: Callable[[bool], None] | None,
        reread: Callable[[int], Any] | None,
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
            prepared=prepared,
            writing=writing,
            reread=reread,
        )

    async def read_items(self, workspace_id: str, job_id: str, kind: str) -> Items:
        """A job's items from its sealed payload; raises when they cannot be read."""
        async with self.core.store.begin() as uow:
            blob = await uow.jobs.payload(workspace_id, job_id)
        return await self.open_items(workspace_id, job_id, kind, blob)

    async def open_items(self, workspace_id: str, job_id: str, kind: str, blob: bytes | None) -> Items:
        """Decrypt and parse a job's payload."""
        return parse_items(await self.unseal(workspace_id, job_id, blob), kind)

    async def unseal(self, workspace_id: str, job_id: str, blob: bytes | None) -> bytes:
        """A job's payload decrypted and decompressed (~5 ms for a 5000-event batch), in a
        thread: zlib lets go of the GIL, so the event loop goes on."""
        if blob is None:
            raise DecryptionFailed("the job's payload is gone")
        return await asyncio.to_thread(open_blob, self.core.keys, workspace_id, f"job/{job_id}", blob)

    async def _items(self, job: JobRecord) -> Items | None:
        """The job's items, or None after marking an unreadable job as failed."""
        try:
            return await self.read_items(job.workspace_id, job.id, job.kind)
        except UNREADABLE as exc:
            await self._unreadable(job, exc)
            return None

    async def _unreadable(self, job: JobRecord, exc: Exception) -> None:
        """Mark the job failed (``job_unreadable``): its stored batch cannot be read. Chunks
        committed before (when only the exact re-read of a later item failed) stay applied."""
        log.error("job payload unreadable", extra={"fields": {"jobId": job.id, "error": type(exc).__name__}})
        unreadable = {"index": None, "code": "job_unreadable", "message": UNREADABLE_MESSAGE}
        async with self.core.store.begin() as uow:
            current = await uow.jobs.get(job.workspace_id, job.id, lock=True)
            if not self._holds(current):
                return
            now = self.core.clock()
            failed = replace(
                current,
                status="failed",
                completed_at=now,
                lease_owner=None,
                lease_until=None,
                errors=[unreadable, *current.errors][:KEEP_ERRORS],
            )
            await uow.jobs.save_progress(failed)

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


@dataclass(frozen=True)
class _Chunk:
    """What ``Worker.process`` knows of the chunk it is about to apply."""

    ws: Workspace
    job: JobRecord
    batch: Items
    size: int
    template: Template | TemplateNotConfigured
    fingerprints: Fingerprinter
    prepared: PreparedEvents | None
    ahead: Ahead | None
    """The look-ahead of the job's next chunk, if any."""


@dataclass(frozen=True)
class _Staged:
    """A new chunk, made ready for the SQLite chunk path (``Worker._stage``)."""

    flat: SqliteRows
    """Its rows built ahead, flattened for the INSERTs."""
    deltas: list[Delta]
    outcomes: list[dict[str, Any]]
    """Its outcomes should every row go in; as JSON text, and summed up for the job row.
    (Nothing here refers back to the PreparedEvents that holds this: a cycle would keep
    a chunk's objects until the garbage collector's next full pass, ~10 MB a chunk.)"""
    encoded: str
    tally: Tally


@dataclass(frozen=True)
class _Fast:
    """How ``Worker._sqlite_chunk`` left the chunk: ``step`` when it applied and committed it;
    otherwise the job row read (``current``) and, when the rows went in, the ``outcomes``."""

    current: JobRecord | None
    outcomes: list[dict[str, Any]] | None = None
    step: tuple[JobRecord, JobRecord | None, list[dict[str, Any]]] | None = None


class PayloadUnreadable(Exception):
    """A job's payload, read by orjson, that the exact parser refuses (``Items.exact``)."""


@dataclass
class Items:
    """A job's items, and whether their strings are known clean (``strings_are_clean``)."""

    items: list[Any]
    clean: bool
    kind: str
    raw: bytes | None = None
    """The payload, when ``items`` came from orjson (not exact): see :meth:`exact`."""
    _exact: list[Any] | None = field(default=None, repr=False)

    def exact(self, index: int) -> Any:
        """Item ``index`` as the exact parser reads it (parsed once, on first use). Raises
        ``PayloadUnreadable`` when the exact parser refuses a payload orjson read (one
        nested deeper than it reads): the job fails as unreadable, as it did when the
        exact parse came first."""
        if self.raw is None:
            return self.items[index]
        if self._exact is None:
            try:
                self._exact = parse_json(self.raw)[self.kind]
            except ApiError as error:
                raise PayloadUnreadable(error.message) from None
        return self._exact[index]

    @property
    def reread(self) -> Callable[[int], Any] | None:
        """:meth:`exact` when the items need it (read by orjson), else None."""
        return self.exact if self.raw is not None else None


def parse_items(raw: bytes, kind: str) -> Items:
    """The items of a job's decrypted payload.

    Events are read by orjson (~9 ms for 5000, against ~17 ms for the exact parser): the
    validation's fast path takes only items orjson reads exactly, and ``Items.exact``
    gives the exact parse of any other (a float stays a Decimal). Entities and states
    are validated item by item with no fast path: they get the exact parse at once."""
    clean = strings_are_clean(raw)
    if kind == "events":
        try:
            return Items(orjson.loads(raw)[kind], clean, kind, raw)
        except orjson.JSONDecodeError:
            pass  # e.g. a lone surrogate escape: the exact parser reads it
    return Items(parse_json(raw)[kind], clean, kind)


class Ahead:
    """Checks of a chunk made ahead of its turn, in a task of their own.

    Only the database-free part (parsing, validation, eventIds, fingerprints) is
    done ahead; the chunk is still applied in its own transaction after the
    worker has claimed the job and re-read its progress, so nothing about
    exactly-once changes. A look-ahead that fails or goes unused is dropped.
    """

    def __init__(self, job_id: str, start: int, items: Items | None) -> None:
        self.job_id = job_id
        self.start = start
        self.items = items
        self.task: asyncio.Future[Any] | None = None
        self.go = asyncio.Event()
        """Set when the current chunk's bulk write starts (or the chunk ends): the work waits
        for it, so it does not hold up the chunk's short statements before that. Cleared
        again from the end of the bulk write to the COMMIT (``Worker._hold_ahead``): the
        check pauses between slices meanwhile."""

    def running(self, work: Coroutine[Any, Any, PreparedEvents | None]) -> Ahead:
        self.task = asyncio.ensure_future(work)
        return self

    @classmethod
    async def next_job(
        cls,
        worker: Worker,
        uow: UnitOfWork,
        ws: Workspace,
        job: JobRecord,
        template: Template,
        fingerprints: Fingerprinter,
    ) -> Ahead | None:
        """Read the workspace's next queued events job, if any and if it will be claimed
        next (no other workspace's job is runnable), and start checking it.

        The reads run in ``uow``, the transaction of ``job``'s last chunk, before its
        writes; decrypting, parsing and checking run in the task, beside the chunk's
        statements. A job read here may still be claimed by another worker: its
        look-ahead is then dropped (``_take_ahead``), never applied.
        """
        if await uow.jobs.others_runnable(ws.id, now=worker.core.clock()):
            return None  # another workspace's job goes first: checking this one now is wasted
        queued = await uow.jobs.next_queued(ws.id, after_seq=job.seq)
        if queued is None or queued[1] != "events":
            return None
        blob = await uow.jobs.payload(ws.id, queued[0])
        return cls.reading(worker, ws, queued[0], blob, template, fingerprints)

    @classmethod
    def reading(
        cls,
        worker: Worker,
        ws: Workspace,
        job_id: str,
        blob: bytes | None,
        template: Template,
        fingerprints: Fingerprinter,
    ) -> Ahead:
        """Start checking the queued events job ``job_id`` (its sealed payload ``blob``)."""
        ahead = cls(job_id, 0, None)

        async def work() -> PreparedEvents | None:
            raw = await worker.unseal(ws.id, job_id, blob)  # at once: no GIL held
            await ahead.go.wait()
            worker._free_spent()
            ahead.items = batch = parse_items(raw, "events")
            return await worker._check(ws.id, template, batch, 0, fingerprints, ahead.go)

        return ahead.running(work())

    async def result(self) -> PreparedEvents | None:
        assert self.task is not None
        try:
            prepared: PreparedEvents | None = await self.task
            return prepared
        except asyncio.CancelledError:
            if self.task.cancelled():
                return None
            raise
        except Exception:  # a look-ahead is only an optimisation: the chunk is checked again
            log.warning("reading ahead failed; checking the chunk in turn", exc_info=True)
            return None

    def cancel(self) -> None:
        if self.task is None:
            return
        self.task.cancel()
        if self.task.done() and not self.task.cancelled():
            self.task.exception()  # retrieved, so asyncio does not log it as never retrieved


def start_in_background(services: Services, options: dict[str, Any], *, tasks: int = 1) -> Any:
    """Start ``tasks`` workers on the running loop; returns an async ``stop()``.

    ``stop()`` asks them to finish (or release) the chunk in flight and waits.
    """
    stop = asyncio.Event()
    running = [asyncio.ensure_future(Worker(services, **options).run(stop)) for _ in range(tasks)]

    async def stop_all() -> None:
        stop.set()
        await asyncio.gather(*running, return_exceptions=True)

    return stop_all
