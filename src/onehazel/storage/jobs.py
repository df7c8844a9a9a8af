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

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage.engine import is_postgres, sqlite_sql
from onehazel.storage.tables import job_chunks, jobs

ACTIVE = ("queued", "processing")
STATUSES = (*ACTIVE, "completed", "failed")
JOBS_SEQUENCE = sa.Sequence("jobs_seq")  # PostgreSQL only; created by migration 0002


def _runnable(job: Any, now: Any) -> tuple[Any, ...]:
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
JSON_FIELDS = ("errors", "warnings")
JSON_PARAMETERS = ("new_errors", "new_warnings", "results")
"""The JobRecord fields stored as JSON, and the statements' parameters that carry JSON: SQLAlchemy
encodes and decodes them; the SQLite chunk path (storage/sqlite_chunk.py), which runs these
statements on the driver, does it itself."""

# The worker's statements, with named parameters: run through SQLAlchemy by JobRepository, and
# compiled once for SQLite's own driver by the SQLite chunk path, so both run the same SQL.
_THIS = (jobs.c.workspace_id == sa.bindparam("ws"), jobs.c.id == sa.bindparam("job"))
GET = sa.select(*_COLUMNS).where(*_THIS)
PAYLOAD = sa.select(jobs.c.payload).where(*_THIS)
NEXT_QUEUED = (
    sa.select(jobs.c.id, jobs.c.kind, jobs.c.total)
    .where(
        jobs.c.workspace_id == sa.bindparam("ws"),
        jobs.c.status == "queued",
        jobs.c.seq > sa.bindparam("after_seq"),
    )
    .order_by(jobs.c.seq)
    .limit(1)
)
_job = jobs.alias("job")
OTHERS_RUNNABLE = (
    sa.select(_job.c.id)
    .where(_job.c.workspace_id != sa.bindparam("ws"), *_runnable(_job, sa.bindparam("now")))
    .limit(1)
)
# The runnable job (first unfinished of its workspace, lease free) that has waited longest
# since it became runnable: see JobRepository.claim_next.
CLAIM_PICK = (
    sa.select(_job.c.workspace_id, _job.c.id)
    .where(*_runnable(_job, sa.bindparam("now")))
    .order_by(_job.c.ready_at, _job.c.seq)
    .limit(1)
)
CLAIM = (
    sa.update(jobs)
    .where(*_THIS)
    .values(
        status="processing",
        lease_owner=sa.bindparam("owner"),
        lease_until=sa.bindparam("lease"),
        started_at=sa.func.coalesce(jobs.c.started_at, sa.bindparam("now")),
    )
)
_following = jobs.alias("following")
# A job has finished: the workspace's next queued job is ready from now on. ((workspace_id,
# status, seq) finds the one row.)
READY_NEXT = (
    sa.update(jobs)
    .where(
        jobs.c.workspace_id == sa.bindparam("ws"),
        jobs.c.status == "queued",
        jobs.c.seq
        == sa.select(sa.func.min(_following.c.seq))
        .where(
            _following.c.workspace_id == sa.bindparam("ws"),
            _following.c.status == "queued",
            _following.c.seq > sa.bindparam("after_seq"),
        )
        .scalar_subquery(),
    )
    .values(ready_at=sa.bindparam("at"))
)
_PROGRESS_FIELDS = (
    "status",
    "processed",
    "succeeded",
    "failed",
    "duplicates",
    "errors",
    "warnings",
    "completed_at",
    "lease_owner",
    "lease_until",
)
# (A bindparam may not be named after a column the statement sets.)
PROGRESS = (
    sa.update(jobs).where(*_THIS).values({name: sa.bindparam(f"new_{name}") for name in _PROGRESS_FIELDS})
)
# A finished job drops its payload at once: the sealed batch (which may hold PII) lives no
# longer than it is needed.
PROGRESS_FINISHED = PROGRESS.values(payload=None)
ADD_CHUNK = job_chunks.insert().values(
    workspace_id=sa.bindparam("ws"),
    job_id=sa.bindparam("job"),
    start_index=sa.bindparam("start"),
    outcomes=sa.bindparam("results"),
)


_INSERTED = tuple(name for name in JobRecord.__dataclass_fields__ if name != "seq")
_INSERT = jobs.insert().values(
    {
        **{name: sa.bindparam(f"new_{name}") for name in _INSERTED},
        "ready_at": sa.bindparam("new_ready_at"),
        "payload": sa.bindparam("new_payload"),
    }
)
INSERT_PG = _INSERT.values(seq=JOBS_SEQUENCE.next_value())
# One past the largest seq stored (an index lookup per status), or the caller's if larger.
INSERT_SQLITE = _INSERT.values(
    seq=sa.func.max(
        sa.bindparam("new_seq"),
        *(
            sa.select(sa.func.coalesce(sa.func.max(jobs.c.seq), 0) + 1)
            .where(jobs.c.status == status)
            .scalar_subquery()
            for status in STATUSES
        ),
    )
)


def insert_parameters(record: JobRecord, payload: bytes) -> dict[str, Any]:
    """The parameters of ``INSERT_PG`` and ``INSERT_SQLITE``: a queued job, ready (to be
    claimed) from its acceptance on; ``ready_at`` moves on when the job before it finishes."""
    values = {f"new_{name}": getattr(record, name) for name in JobRecord.__dataclass_fields__}
    return {**values, "new_ready_at": record.created_at, "new_payload": payload}


def insert_sqlite(conn: sqlite3.Connection, record: JobRecord, payload: bytes) -> None:
    """``JobRepository.insert`` (SQLite) on the driver, in its thread: the accepting request's
    one call there (``Store.sqlite_transaction``)."""
    params = insert_parameters(record, payload)
    sql, fixed = sqlite_sql(INSERT_SQLITE)
    conn.execute(sql, {**fixed, **json_encoded(params)})


def json_encoded(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the JSON ones (``JSON_PARAMETERS``) as JSON text, for the driver."""
    return {
        name: orjson.dumps(value).decode() if name in JSON_PARAMETERS else value
        for name, value in params.items()
    }


def progress_statements(record: JobRecord) -> list[tuple[Any, dict[str, Any]]]:
    """The statements (and parameters) that persist ``record``'s counters, progress and
    lease; for a finished job also moving its workspace's next job to the front."""
    values = {f"new_{name}": getattr(record, name) for name in _PROGRESS_FIELDS}
    this = {"ws": record.workspace_id, "job": record.id}
    if record.status in ACTIVE:
        return [(PROGRESS, {**this, **values})]
    ready = {"ws": record.workspace_id, "after_seq": record.seq, "at": record.completed_at}
    return [(READY_NEXT, ready), (PROGRESS_FINISHED, {**this, **values})]


def chunk_parameters(
    workspace_id: str, job_id: str, start_index: int, outcomes: list[dict[str, Any]] | str
) -> dict[str, Any]:
    """``ADD_CHUNK``'s parameters (``outcomes`` as JSON text for the driver)."""
    return {"ws": workspace_id, "job": job_id, "start": start_index, "results": outcomes}


def record_of(row: Any) -> JobRecord:
    """A JobRecord from a row of ``GET`` (columns in JobRecord's order)."""
    return JobRecord(*row)


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
        if is_postgres(self.conn):
            lock_key = sa.func.hashtextextended(f"onehazel.jobs/{record.workspace_id}", 0)
            await self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key)))
            await self.conn.execute(INSERT_PG, insert_parameters(record, payload))
        else:
            await self.conn.execute(INSERT_SQLITE, insert_parameters(record, payload))

    async def get(self, workspace_id: str, job_id: str, *, lock: bool = False) -> JobRecord | None:
        query = GET.with_for_update() if lock and is_postgres(self.conn) else GET
        row = (await self.conn.execute(query, {"ws": workspace_id, "job": job_id})).first()
        return record_of(row) if row else None

    async def by_idempotency_key(self, workspace_id: str, key: str) -> JobRecord | None:
        query = sa.select(*_COLUMNS).where(jobs.c.workspace_id == workspace_id, jobs.c.idempotency_key == key)
        row = (await self.conn.execute(query)).first()
        return JobRecord(**row._mapping) if row else None

    async def payload(self, workspace_id: str, job_id: str) -> bytes | None:
        value = (await self.conn.execute(PAYLOAD, {"ws": workspace_id, "job": job_id})).scalar_one_or_none()
        return bytes(value) if value is not None else None

    async def next_queued(self, workspace_id: str, *, after_seq: int) -> tuple[str, str, int] | None:
        """(id, kind, total) of the workspace's next queued job after ``after_seq``, unclaimed:
        what the worker may read ahead while it applies the current one."""
        row = (await self.conn.execute(NEXT_QUEUED, {"ws": workspace_id, "after_seq": after_seq})).first()
        return (row[0], row[1], row[2]) if row else None

    async def others_runnable(self, workspace_id: str, *, now: int) -> bool:
        """Has another workspace a runnable job? Then that one is claimed before this
        workspace's next (whose ``ready_at`` moves to the end of the current job)."""
        return (
            await self.conn.execute(OTHERS_RUNNABLE, {"ws": workspace_id, "now": now})
        ).first() is not None

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
        query = CLAIM_PICK
        if is_postgres(self.conn):
            query = query.with_for_update(skip_locked=True, of=_job)
        row = (await self.conn.execute(query, {"now": now})).first()
        if row is None:
            return None
        workspace_id, job_id = row
        if clock is not None:
            claimed = clock()
            lease_until, now = lease_until + (claimed - now), claimed
        params = {"ws": workspace_id, "job": job_id, "owner": owner, "lease": lease_until, "now": now}
        if is_postgres(self.conn):  # one round trip less (SQLite before 3.35 has no RETURNING)
            updated = (await self.conn.execute(CLAIM.returning(*_COLUMNS), params)).first()
            return record_of(updated) if updated else None
        await self.conn.execute(CLAIM, params)
        return await self.get(workspace_id, job_id)

    async def save_progress(self, record: JobRecord) -> None:
        """Persist counters, progress and lease; called in the chunk's own transaction.
        A finished job drops its payload (``PROGRESS_FINISHED``)."""
        for statement, params in progress_statements(record):
            await self.conn.execute(statement, params)

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
        await self.conn.execute(ADD_CHUNK, chunk_parameters(workspace_id, job_id, start_index, outcomes))

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
