"""Batch jobs and their item outcomes.

Claiming follows one rule: a job may run only when no earlier job (by
acceptance ``seq``) of its workspace is still queued or processing, so a
workspace's jobs apply in order while workspaces proceed in parallel. On
PostgreSQL the claim takes the row with ``FOR UPDATE SKIP LOCKED`` so many
workers never take the same job; on SQLite ``BEGIN IMMEDIATE`` serialises
claimers. A claim is a lease: a worker that dies stops renewing it, and once
it lapses another worker resumes from the committed ``processed`` index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage.engine import is_postgres
from onehazel.storage.tables import job_chunks, jobs

ACTIVE = ("queued", "processing")
STATUSES = (*ACTIVE, "completed", "failed")
JOBS_SEQUENCE = sa.Sequence("jobs_seq")  # PostgreSQL only; created by migration 0002


def _runnable(job: Any, now: int) -> tuple[Any, ...]:
    """Conditions on ``job`` (an alias of jobs): unfinished, lease free, and no earlier job
    of its workspace unfinished."""
    earlier = jobs.alias("earlier")
    blocked = (
        sa.select(earlier.c.id)
        .where(
            earlier.c.workspace_id == job.c.workspace_id,
            earlier.c.status.in_(ACTIVE),
            earlier.c.seq < job.c.seq,
        )
        .exists()
    )
    return (job.c.status.in_(ACTIVE), sa.or_(job.c.lease_until.is_(None), job.c.lease_until < now), ~blocked)


@dataclass(frozen=True)
class JobRecord:
    workspace_id: str
    id: str
    kind: str
    status: str
    total: int
    processed: int
    succeeded: int
    failed: int
    duplicates: int
    errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    idempotency_key: str | None
    body_hash: str | None
    seq: int
    created_at: int
    started_at: int | None
    completed_at: int | None
    lease_owner: str | None
    lease_until: int | None


_COLUMNS = tuple(jobs.c[name] for name in JobRecord.__dataclass_fields__)


class JobRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert(self, record: JobRecord, payload: bytes) -> None:
        """Store a queued job, its ``seq`` (acceptance order) given by the database so that
        a workspace's jobs commit in ``seq`` order, across processes and machines; a worker
        that sees a job committed then sees every earlier one of its workspace too.

        PostgreSQL: one database sequence (no clock skew), drawn under a per-workspace
        transaction lock, so a later acceptance for the workspace draws only once this one
        committed (else a job could commit, and run, before an earlier-numbered one).
        SQLite: transactions are serial (``BEGIN IMMEDIATE``), so one past the largest
        stored ``seq`` (an index lookup per status), or the caller's clock value if larger;
        not the clock alone, which runs apart in two server processes."""
        values: dict[str, Any] = {name: getattr(record, name) for name in JobRecord.__dataclass_fields__}
        values["ready_at"] = record.created_at  # moved on when the job before it finishes
        if is_postgres(self.conn):
            lock_key = sa.func.hashtextextended(f"onehazel.jobs/{record.workspace_id}", 0)
            await self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key)))
            values["seq"] = JOBS_SEQUENCE.next_value()
        else:
            after = [
                sa.select(sa.func.coalesce(sa.func.max(jobs.c.seq), 0) + 1)
                .where(jobs.c.status == status)
                .scalar_subquery()
                for status in STATUSES
            ]
            values["seq"] = sa.func.max(record.seq, *after)
        await self.conn.execute(jobs.insert().values(**values, payload=payload))

    async def get(self, workspace_id: str, job_id: str, *, lock: bool = False) -> JobRecord | None:
        query = sa.select(*_COLUMNS).where(jobs.c.workspace_id == workspace_id, jobs.c.id == job_id)
        if lock and is_postgres(self.conn):
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        return JobRecord(**row._mapping) if row else None

    async def by_idempotency_key(self, workspace_id: str, key: str) -> JobRecord | None:
        query = sa.select(*_COLUMNS).where(jobs.c.workspace_id == workspace_id, jobs.c.idempotency_key == key)
        row = (await self.conn.execute(query)).first()
        return JobRecord(**row._mapping) if row else None

    async def payload(self, workspace_id: str, job_id: str) -> bytes | None:
        query = sa.select(jobs.c.payload).where(jobs.c.workspace_id == workspace_id, jobs.c.id == job_id)
        value = (await self.conn.execute(query)).scalar_one_or_none()
        return bytes(value) if value is not None else None

    async def next_queued(self, workspace_id: str, *, after_seq: int) -> tuple[str, str, int] | None:
        """(id, kind, total) of the workspace's next queued job after ``after_seq``, unclaimed:
        what the worker may read ahead while it applies the current one."""
        query = (
            sa.select(jobs.c.id, jobs.c.kind, jobs.c.total)
            .where(jobs.c.workspace_id == workspace_id, jobs.c.status == "queued", jobs.c.seq > after_seq)
            .order_by(jobs.c.seq)
            .limit(1)
        )
        row = (await self.conn.execute(query)).first()
        return (row[0], row[1], row[2]) if row else None

    async def others_runnable(self, workspace_id: str, *, now: int) -> bool:
        """Has another workspace a runnable job? Then that one is claimed before this
        workspace's next (whose ``ready_at`` moves to the end of the current job)."""
        job = jobs.alias("job")
        query = sa.select(job.c.id).where(job.c.workspace_id != workspace_id, *_runnable(job, now)).limit(1)
        return (await self.conn.execute(query)).first() is not None

    async def claim_next(
        self, *, owner: str, now: int, lease_until: int, clock: Callable[[], int] | None = None
    ) -> JobRecord | None:
        """Lease the runnable job (first unfinished of its workspace, lease free) that has
        waited longest since it became runnable (``ready_at``: its acceptance, or the end of
        the job before it), so that workspaces take turns rather than the one with the most
        queued jobs keeping a worker until all of them are done.

        ``clock``: read again once a job is found, for its ``startedAt`` and lease. The
        query only sees the previous job of the workspace finished after that job's
        transaction committed, so a start read now is never before the previous job's
        ``completedAt``; ``now`` was read before the query and could be.
        """
        job = jobs.alias("job")
        query = (
            sa.select(job.c.workspace_id, job.c.id)
            .where(*_runnable(job, now))
            .order_by(job.c.ready_at, job.c.seq)
            .limit(1)
        )
        if is_postgres(self.conn):
            query = query.with_for_update(skip_locked=True, of=job)
        row = (await self.conn.execute(query)).first()
        if row is None:
            return None
        workspace_id, job_id = row
        if clock is not None:
            claimed = clock()
            lease_until, now = lease_until + (claimed - now), claimed
        claim = (
            sa.update(jobs)
            .where(jobs.c.workspace_id == workspace_id, jobs.c.id == job_id)
            .values(
                status="processing",
                lease_owner=owner,
                lease_until=lease_until,
                started_at=sa.func.coalesce(jobs.c.started_at, now),
            )
        )
        if is_postgres(self.conn):  # one round trip less (SQLite before 3.35 has no RETURNING)
            updated = (await self.conn.execute(claim.returning(*_COLUMNS))).first()
            return JobRecord(**updated._mapping) if updated else None
        await self.conn.execute(claim)
        return await self.get(workspace_id, job_id)

    async def save_progress(self, record: JobRecord) -> None:
        """Persist counters, progress and lease; called in the chunk's own transaction.

        A finished job drops its payload at once: the sealed batch (which may
        hold PII) lives no longer than it is needed.
        """
        extra: dict[str, Any] = {"payload": None} if record.status not in ACTIVE else {}
        if record.status not in ACTIVE:  # the workspace's next job is ready from now on
            following = jobs.alias("following")
            next_seq = (
                sa.select(sa.func.min(following.c.seq))
                .where(
                    following.c.workspace_id == record.workspace_id,
                    following.c.status == "queued",
                    following.c.seq > record.seq,
                )
                .scalar_subquery()
            )
            mine = (jobs.c.workspace_id == record.workspace_id, jobs.c.status == "queued")
            await self.conn.execute(  # (workspace_id, status, seq) finds the one row
                sa.update(jobs).where(*mine, jobs.c.seq == next_seq).values(ready_at=record.completed_at)
            )
        await self.conn.execute(
            sa.update(jobs)
            .where(jobs.c.workspace_id == record.workspace_id, jobs.c.id == record.id)
            .values(
                **extra,
                status=record.status,
                processed=record.processed,
                succeeded=record.succeeded,
                failed=record.failed,
                duplicates=record.duplicates,
                errors=record.errors,
                warnings=record.warnings,
                completed_at=record.completed_at,
                lease_owner=record.lease_owner,
                lease_until=record.lease_until,
            )
        )

    async def release(self, workspace_id: str, job_id: str, *, owner: str) -> None:
        """Give a lease back (graceful shutdown) so another worker resumes at once."""
        await self.conn.execute(
            sa.update(jobs)
            .where(
                jobs.c.workspace_id == workspace_id,
                jobs.c.id == job_id,
                jobs.c.lease_owner == owner,
                jobs.c.status == "processing",
            )
            .values(lease_owner=None, lease_until=None)
        )

    async def add_chunk(
        self, workspace_id: str, job_id: str, *, start_index: int, outcomes: list[dict[str, Any]]
    ) -> None:
        await self.conn.execute(
            job_chunks.insert().values(
                workspace_id=workspace_id, job_id=job_id, start_index=start_index, outcomes=outcomes
            )
        )

    async def chunks(self, workspace_id: str, job_id: str, *, from_index: int) -> list[tuple[int, list[Any]]]:
        """Outcome chunks that hold items at or after ``from_index``, in item order."""
        first = (
            sa.select(sa.func.max(job_chunks.c.start_index))
            .where(
                job_chunks.c.workspace_id == workspace_id,
                job_chunks.c.job_id == job_id,
                job_chunks.c.start_index <= from_index,
            )
            .scalar_subquery()
        )
        query = (
            sa.select(job_chunks.c.start_index, job_chunks.c.outcomes)
            .where(
                job_chunks.c.workspace_id == workspace_id,
                job_chunks.c.job_id == job_id,
                job_chunks.c.start_index >= sa.func.coalesce(first, 0),
            )
            .order_by(job_chunks.c.start_index)
        )
        return [(int(r[0]), list(r[1])) for r in await self.conn.execute(query)]

    async def delete_expired(self, *, before: int, limit: int = 500) -> int:
        """Remove jobs finished before ``before`` (and their outcomes); bounded."""
        doomed = (
            await self.conn.execute(
                sa.select(jobs.c.workspace_id, jobs.c.id)
                # Kept for the retention period after they finished. A job finishes after it
                # was accepted, so created_at < before holds too: the index on it finds them.
                .where(jobs.c.created_at < before, jobs.c.completed_at < before, jobs.c.status.not_in(ACTIVE))
                .limit(limit)
            )
        ).all()
        for workspace_id, job_id in doomed:
            await self.conn.execute(
                job_chunks.delete().where(
                    job_chunks.c.workspace_id == workspace_id, job_chunks.c.job_id == job_id
                )
            )
            await self.conn.execute(
                jobs.delete().where(jobs.c.workspace_id == workspace_id, jobs.c.id == job_id)
            )
        return len(doomed)
