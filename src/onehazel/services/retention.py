"""The retention sweep: expire old events, erase deleted entities, release tombstones.

One sweep, at a given ``now`` (tests pass it; the server uses its clock):

1. **Events past retention.** For every workspace whose settings set
   ``retention.eventsDays``, events whose ``timestamp`` is older than that many
   days before ``now`` are deleted.
2. **Tombstones past suppression.** A purged entity leaves a tombstone that keeps
   its externalId refused (410) for ``suppression_days`` (ONEHAZEL_SUPPRESSION_DAYS,
   default 365) after the purge; then the tombstone is removed and the externalId
   may be created anew (a new entity, with a new key).
3. **Erasure.** A soft-deleted entity whose ``purgeAfter`` has come
   (``deletedEntitiesDays`` after its deletion; 0 = the next sweep) loses its
   name in batch item outcomes (those items keep their index and status, with
   ``externalId: null`` and no ``eventId``), its events (in chunks) and, in the
   transaction that deletes the last of them, its states, its data key (the
   ``entity_keys`` row) and its attributes: the row becomes the tombstone of
   step 2. The key goes last so that a sweep that stops half-way leaves a
   deleted entity that the next sweep resumes.

Crypto-shredding: the data key is the only way to read the entity's PII, and it
lives only in ``entity_keys``. Once it is deleted, every copy of the entity's
ciphertexts made earlier (a ``pg_dump`` or file backup of the data tables, a
replica's old WAL) is undecryptable with the server's keys. That holds only if
copies of ``entity_keys`` itself do not outlive the purge: back it up with a
retention no longer than the purge period, or leave it out of long-lived dumps
(``pg_dump --exclude-table=entity_keys``). Limit: a batch still *queued* when the
purge runs is sealed under the workspace key, not the entity key; it stays
readable (in backups too) until its job completes and drops it. Applying it
then finds the tombstone: its items for the entity fail with ``entity_deleted``.

Every delete is bounded (``chunk`` rows, default 5000, per transaction) so no
lock is held for long and ingestion keeps flowing; several sweeps may run at
once (``storage/retention.py`` explains how they share the work).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from onehazel.domain.values import format_timestamp
from onehazel.services.audit import AuditService
from onehazel.services.container import Services
from onehazel.services.core import Core
from onehazel.storage.unit_of_work import UnitOfWork

log = logging.getLogger("onehazel.retention")

T = TypeVar("T")
DAY_MICROS = 86_400 * 1_000_000
ENTITY_BATCH = 100
COUNTS = (
    ("events_expired", "eventsExpired"),
    ("entities_purged", "entitiesPurged"),
    ("purged_events", "purgedEvents"),
    ("purged_states", "purgedStates"),
    ("redacted_job_items", "redactedJobItems"),
    ("tombstones_released", "tombstonesReleased"),
)


@dataclass
class WorkspaceSweep:
    """What one sweep removed from one workspace."""

    events_expired: int = 0
    entities_purged: int = 0
    purged_events: int = 0
    purged_states: int = 0
    redacted_job_items: int = 0
    tombstones_released: int = 0
    operator_id: str | None = None
    mode: str | None = None

    def counts(self) -> dict[str, int]:
        return {wire: int(getattr(self, name)) for name, wire in COUNTS}


@dataclass
class SweepReport:
    now: int
    workspaces: dict[str, WorkspaceSweep] = field(default_factory=dict)
    transactions: int = 0
    longest_transaction: float = 0.0
    """Seconds: the longest single transaction of the sweep."""
    elapsed: float = 0.0
    """Seconds the whole sweep took."""
    interrupted: bool = False

    def of(self, workspace_id: str) -> WorkspaceSweep:
        return self.workspaces.setdefault(workspace_id, WorkspaceSweep())

    def totals(self) -> dict[str, int]:
        totals = {wire: 0 for _, wire in COUNTS}
        for ws in self.workspaces.values():
            for wire, count in ws.counts().items():
                totals[wire] += count
        return totals

    @property
    def rows_removed(self) -> int:
        t = self.totals()
        return t["eventsExpired"] + t["purgedEvents"] + t["purgedStates"] + t["tombstonesReleased"]

    def to_wire(self) -> dict[str, Any]:
        return {
            "sweptAt": format_timestamp(self.now),
            "workspaces": [
                {"workspaceId": ws_id, "operatorId": ws.operator_id, "mode": ws.mode, **ws.counts()}
                for ws_id, ws in sorted(self.workspaces.items())
                if any(ws.counts().values())
            ],
            "totals": self.totals(),
            "transactions": self.transactions,
            "longestTransactionMs": round(self.longest_transaction * 1000, 1),
            "elapsedMs": round(self.elapsed * 1000, 1),
            "interrupted": self.interrupted,
        }


class _Interrupted(Exception):
    pass


class RetentionService:
    def __init__(
        self,
        core: Core,
        *,
        suppression_days: float = 365.0,
        chunk: int = 5000,
        pause_seconds: float = 0.0,
    ) -> None:
        self.core = core
        self.audit = AuditService(core)
        self.suppression = int(suppression_days * DAY_MICROS)
        self.chunk = max(1, int(chunk))
        # Optional breather between transactions, for machines where the sweep
        # and ingestion compete for the same few cores.
        self.pause_seconds = pause_seconds

    async def sweep(self, now: int | None = None, *, stop: asyncio.Event | None = None) -> SweepReport:
        """Run one sweep at ``now`` (default: the clock). ``stop`` ends it between transactions."""
        started = time.monotonic()
        run = _Sweep(self, SweepReport(now=self.core.clock() if now is None else now), stop)
        try:
            await run.expire_events()
            await run.release_tombstones()
            await run.purge_deleted()
        except _Interrupted:
            run.report.interrupted = True
        if any(tally.entities_purged for tally in run.report.workspaces.values()):
            await run.forget_overwritten()
        async with self.core.store.begin() as uow:
            labels = await uow.retention.labels(run.report.workspaces)
        for ws_id, (operator_id, mode) in labels.items():
            run.report.of(ws_id).operator_id, run.report.of(ws_id).mode = operator_id, mode
        run.report.elapsed = time.monotonic() - started
        return run.report


class _Sweep:
    """One sweep's state: its time, its report, its stop signal."""

    def __init__(self, service: RetentionService, report: SweepReport, stop: asyncio.Event | None) -> None:
        self.service = service
        self.core = service.core
        self.chunk = service.chunk
        self.report = report
        self.now = report.now
        self.stop = stop

    async def tx(self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """``work`` in a transaction of its own, timed."""
        if self.stop is not None and self.stop.is_set():
            raise _Interrupted
        started = time.monotonic()
        async with self.core.store.begin() as uow:
            result = await work(uow)
        elapsed = time.monotonic() - started
        self.report.transactions += 1
        self.report.longest_transaction = max(self.report.longest_transaction, elapsed)
        if self.service.pause_seconds:
            await asyncio.sleep(self.service.pause_seconds)
        return result

    async def expire_events(self) -> None:
        for workspace_id, days in await self.tx(lambda uow: uow.retention.event_policies()):
            await self.expire_workspace_events(workspace_id, days)

    async def expire_workspace_events(self, workspace_id: str, days: int) -> None:
        before = self.now - days * DAY_MICROS
        removed, after = 0, None
        while True:
            count, latest = await self.tx(
                lambda uow: uow.retention.delete_events_before(
                    workspace_id,
                    before=before,
                    after=after,  # noqa: B023 (awaited at once)
                    limit=self.chunk,
                )
            )
            removed += count
            after = latest if latest is not None else after
            if count < self.chunk:
                break
        self.report.of(workspace_id).events_expired += removed
        if removed:
            await self.tx(
                lambda uow: self.service.audit.record_in(
                    uow,
                    workspace_id=workspace_id,
                    action="events.expire",
                    details={"events": removed, "before": format_timestamp(before), "eventsDays": days},
                )
            )

    async def release_tombstones(self) -> None:
        while True:
            due = await self.tx(lambda uow: uow.retention.tombstones_due(now=self.now, limit=ENTITY_BATCH))
            for workspace_id, external_id in due:
                await self.until_done(workspace_id, external_id, self.release_step)
            if len(due) < ENTITY_BATCH:
                return

    async def purge_deleted(self) -> None:
        while True:
            due = await self.tx(lambda uow: uow.retention.purge_due(now=self.now, limit=ENTITY_BATCH))
            by_workspace: dict[str, list[str]] = {}
            for workspace_id, external_id in due:
                by_workspace.setdefault(workspace_id, []).append(external_id)
            for workspace_id, external_ids in by_workspace.items():
                self.report.of(workspace_id).redacted_job_items += await self.tx(
                    lambda uow: uow.retention.redact_job_outcomes(workspace_id, external_ids)  # noqa: B023
                )
                for external_id in external_ids:
                    await self.until_done(workspace_id, external_id, self.purge_step)
            if len(due) < ENTITY_BATCH:
                return

    async def forget_overwritten(self) -> None:
        """After a purge: the database's log must not keep the destroyed keys (SQLite)."""
        if not await self.core.store.forget_overwritten():
            log.warning("retention: the SQLite log could not be truncated after a purge (a reader held it)")

    async def until_done(self, workspace_id: str, external_id: str, step: Step) -> None:
        """Run ``step`` for one entity, one transaction each, until it says it is done.

        Each step deletes at most one chunk of the entity's events; the one that
        finds fewer also finishes the entity (so a typical entity takes one
        transaction). ``erased`` carries the running counts between steps.
        """
        erased = Erased()
        while not await self.tx(lambda uow: step(uow, workspace_id, external_id, erased)):
            pass
        tally = self.report.of(workspace_id)
        tally.purged_events += erased.events
        tally.purged_states += erased.states
        tally.entities_purged += erased.purged
        tally.tombstones_released += erased.released

    async def purge_step(self, uow: UnitOfWork, workspace_id: str, external_id: str, erased: Erased) -> bool:
        """Delete a chunk of the entity's events; after the last, its states, then (last of
        all, so an interrupted purge is resumed) its key and attributes, with an audit record."""
        if not await self._delete_rows(uow, workspace_id, external_id, erased):
            return False
        suppressed_until = self.now + self.service.suppression
        if await uow.retention.make_tombstone(workspace_id, external_id, suppressed_until=suppressed_until):
            erased.purged = 1
            await self.service.audit.record_in(
                uow,
                workspace_id=workspace_id,
                action="entity.purge",
                target=external_id,
                details={
                    "events": erased.events,
                    "states": erased.states,
                    "suppressedUntil": format_timestamp(suppressed_until),
                },
            )
        return True

    async def release_step(
        self, uow: UnitOfWork, workspace_id: str, external_id: str, erased: Erased
    ) -> bool:
        """Remove a tombstone whose suppression is over. Normally nothing else is left; this
        also catches rows a crashed sweep, or a batch chunk that raced the deletion, left behind."""
        if not await self._delete_rows(uow, workspace_id, external_id, erased):
            return False
        erased.released = int(await uow.retention.drop_tombstone(workspace_id, external_id, now=self.now))
        return True

    async def _delete_rows(
        self, uow: UnitOfWork, workspace_id: str, external_id: str, erased: Erased
    ) -> bool:
        """One chunk of the entity's events; True (and its states deleted) once none are left."""
        count, latest = await uow.retention.delete_entity_events(
            workspace_id, external_id, after=erased.after, limit=self.chunk
        )
        erased.events += count
        erased.after = latest if latest is not None else erased.after
        if count >= self.chunk:
            return False
        erased.states += await uow.retention.delete_entity_states(workspace_id, external_id)
        return True


@dataclass
class Erased:
    """Running counts for one entity across the transactions that erase it."""

    events: int = 0
    states: int = 0
    purged: int = 0
    released: int = 0
    after: int | None = None
    """The latest event timestamp deleted so far (where the next chunk starts)."""


Step = Callable[[UnitOfWork, str, str, Erased], Awaitable[bool]]


def start_retention_in_background(
    services: Services, options: dict[str, float]
) -> Callable[[], Awaitable[None]]:
    """Sweep every ``interval_seconds`` (the first at once) on the running loop.

    Returns an async ``stop()`` that ends a sweep in progress between two
    transactions and waits for it.
    """
    service = RetentionService(
        services.core,
        suppression_days=options["suppression_days"],
        chunk=int(options["chunk"]),
        pause_seconds=options.get("pause_seconds", 0.0),
    )
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            try:
                report = await service.sweep(stop=stop)
                if report.rows_removed or report.totals()["entitiesPurged"]:
                    log.info("retention sweep", extra={"fields": _log_fields(report)})
            except Exception:
                log.exception("retention sweep failed; retrying at the next interval")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=options["interval_seconds"])

    task = asyncio.ensure_future(loop())

    async def stop_all() -> None:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)

    return stop_all


def _log_fields(report: SweepReport) -> dict[str, Any]:
    """Counts only: workspace ids and numbers, never an externalId."""
    return {
        **report.totals(),
        "workspaces": len(report.to_wire()["workspaces"]),
        "transactions": report.transactions,
        "longestTransactionMs": round(report.longest_transaction * 1000, 1),
    }
