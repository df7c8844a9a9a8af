"""A batch job's events chunk on SQLite in two calls into the connection's thread.

On SQLite every statement is a hand-off to the aiosqlite connection's thread and back, and
the way back waits for the event loop, which the worker keeps busy checking the next chunk
(``jobs/worker.py``, its look-ahead). The generic chunk (the worker's SQLAlchemy statements,
one hand-off each) made about a dozen of them a chunk, and the database waited for every one.
Here the chunk is two calls:

1. :func:`open_chunk` reads, in the transaction the unit of work began (``BEGIN
   IMMEDIATE``): the job row, the workspace's next queued job (only when the worker will read
   it ahead: ``Ahead`` in the worker), whether every entity the chunk names is live, and
   whether the chunk is a re-send (its first client eventIds stored already), then every
   stored fingerprint of its eventIds;
2. :func:`finish_chunk` writes: the rows (and their analytics deltas), then, only if every row
   went in, the item outcomes, the job's progress, the claim of the next job, and COMMIT.

The statements are the generic path's own (``storage/jobs.py``, ``storage/events.py``,
``storage/entities.py``), compiled once for the driver (``engine.sqlite_sql``), so both
paths run the same SQL. Whatever this path does not take (an entity missing or deleted,
PII to seal, an eventId stored meanwhile, a re-send with new eventIds in it) goes on in the
same transaction by the generic path; nothing is committed before that. The worker decides
(``Worker._sqlite_chunk``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from onehazel.storage import jobs as job_sql
from onehazel.storage.engine import in_sqlite_thread, json_list, sqlite_driver, sqlite_sql
from onehazel.storage.entities import SQLITE_COUNT_LIVE_SQL
from onehazel.storage.events import SQLITE_FINGERPRINTS, SqliteRows, sqlite_insert_rows
from onehazel.storage.jobs import JobRecord
from onehazel.storage.rollups import Delta
from onehazel.storage.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Opening:
    """What :func:`open_chunk` read."""

    job: JobRecord | None
    """The job row (None: gone)."""
    next_job: tuple[str, bytes | None] | None = None
    """The workspace's next queued events job and its payload, when asked for and it will be
    claimed next (no other workspace's job is runnable)."""
    live: bool = False
    """Every entity the chunk names is stored and not deleted."""
    replayed: bool = False
    """The chunk's first client eventIds are stored already (a re-send)."""
    existing: dict[str, str] | None = None
    """When ``replayed``: the stored fingerprint of each of the chunk's eventIds stored."""


@dataclass(frozen=True)
class ChunkQuestions:
    """What :func:`open_chunk` is to find out about the chunk at ``start`` of a job."""

    workspace_id: str
    job_id: str
    start: int
    """The chunk's first index: the reads about it are made only if the job is there."""
    external_ids: list[str]
    sample: list[str]
    """The chunk's first few client-chosen eventIds (``apply.REPLAY_SAMPLE``)."""
    event_ids: list[str]
    read_ahead: int | None
    """When the worker will read the workspace's next job ahead if this chunk is the job's
    last: the chunk size. None: it will not."""
    now: int


def _one(conn: sqlite3.Connection, statement: Any, **params: Any) -> Any:
    sql, fixed = sqlite_sql(statement)
    return conn.execute(sql, {**fixed, **params}).fetchone()


def _record(row: Any) -> JobRecord:
    """A JobRecord from a raw row of ``jobs.GET`` (JSON columns as text)."""
    record = job_sql.record_of(row)
    return replace(record, **{name: orjson.loads(getattr(record, name)) for name in job_sql.JSON_FIELDS})


def _open(conn: sqlite3.Connection, ask: ChunkQuestions) -> Opening:
    ws = ask.workspace_id
    row = _one(conn, job_sql.GET, ws=ws, job=ask.job_id)
    if row is None:
        return Opening(None)
    job = _record(row)
    if job.processed != ask.start or job.status != "processing":
        return Opening(job)  # not the chunk asked about: the generic path takes it
    next_job = None
    last = ask.read_ahead is not None and job.processed + ask.read_ahead >= job.total
    if last and _one(conn, job_sql.OTHERS_RUNNABLE, ws=ws, now=ask.now) is None:
        queued = _one(conn, job_sql.NEXT_QUEUED, ws=ws, after_seq=job.seq)
        if queued is not None and queued[1] == "events":
            payload = _one(conn, job_sql.PAYLOAD, ws=ws, job=queued[0])
            next_job = (queued[0], bytes(payload[0]) if payload and payload[0] is not None else None)
    names = sorted(set(ask.external_ids))
    (live,) = conn.execute(SQLITE_COUNT_LIVE_SQL, {"ws": ws, "ids": json_list(names)}).fetchone()
    if live != len(names):
        return Opening(job, next_job)
    replayed = bool(ask.sample) and len(_fingerprints(conn, ws, ask.sample)) == len(ask.sample)
    existing = _fingerprints(conn, ws, ask.event_ids) if replayed else None
    return Opening(job, next_job, True, replayed, existing)


def _fingerprints(conn: sqlite3.Connection, workspace_id: str, event_ids: list[str]) -> dict[str, str]:
    found = conn.execute(SQLITE_FINGERPRINTS, (workspace_id, json_list(event_ids)))
    return {row[0]: row[1] for row in found}


async def open_chunk(uow: UnitOfWork, ask: ChunkQuestions) -> Opening:
    """The reads of the chunk's transaction, in one call into the driver's thread."""
    driver = await sqlite_driver(uow.conn)
    return await in_sqlite_thread(driver, _open, ask)


@dataclass(frozen=True)
class ChunkWrites:
    """What :func:`finish_chunk` writes: the chunk's effects and the job's progress."""

    workspace_id: str
    rows: SqliteRows | None
    row_count: int
    deltas: list[Delta]
    outcomes: list[dict[str, Any]]
    encoded: str | None
    """``outcomes`` as JSON text, when encoded already (else here, in the thread)."""
    start: int
    progress: JobRecord
    claim: tuple[str, int] | None
    """The worker's (owner, lease length in microseconds) when the job ends and the next
    runnable job is to be claimed in the same transaction."""
    clock: Callable[[], int]


def _finish(conn: sqlite3.Connection, writes: ChunkWrites) -> tuple[int | None, JobRecord | None]:
    if not conn.in_transaction:  # the unit of work's BEGIN IMMEDIATE: the COMMIT below is its end
        raise RuntimeError("the chunk's transaction is not open")
    added = 0
    if writes.rows is not None:
        added_or_none = sqlite_insert_rows(conn, writes.rows, writes.deltas)
        if added_or_none is None or added_or_none != writes.row_count:
            return added_or_none, None  # not committed: the generic path goes on
        added = added_or_none
    ws, job = writes.workspace_id, writes.progress
    outcomes = writes.encoded if writes.encoded is not None else orjson.dumps(writes.outcomes).decode()
    statements = [
        (statement, job_sql.json_encoded(params)) for statement, params in job_sql.progress_statements(job)
    ]
    if writes.outcomes:  # none for an empty job: as on the generic path
        statements.insert(
            0, (job_sql.ADD_CHUNK, job_sql.chunk_parameters(ws, job.id, writes.start, outcomes))
        )
    for statement, params in statements:
        sql, fixed = sqlite_sql(statement)
        conn.execute(sql, {**fixed, **params})
    claimed = _claim(conn, *writes.claim, writes.clock) if writes.claim is not None else None
    conn.execute("COMMIT")
    return added, claimed


def _claim(conn: sqlite3.Connection, owner: str, lease: int, clock: Callable[[], int]) -> JobRecord | None:
    """``JobRepository.claim_next`` (SQLite), in the thread."""
    picked = _one(conn, job_sql.CLAIM_PICK, now=clock())
    if picked is None:
        return None
    ws, job_id = picked
    now = clock()  # read again once found: see claim_next
    _one(conn, job_sql.CLAIM, ws=ws, job=job_id, owner=owner, lease=now + lease, now=now)
    row = _one(conn, job_sql.GET, ws=ws, job=job_id)
    return _record(row) if row is not None else None


async def finish_chunk(uow: UnitOfWork, writes: ChunkWrites) -> tuple[int | None, JobRecord | None, bool]:
    """Write the chunk and, if every row went in, commit it with the job's progress (and the
    next job's claim): (rows added, the job claimed, committed?). Rows added is None when
    none could be written this way (``sqlite_insert_rows``). Not committed, the transaction
    is still open, with the rows that went in: the caller goes on by the generic path."""
    driver = await sqlite_driver(uow.conn)
    added, claimed = await in_sqlite_thread(driver, _finish, writes)
    committed = added is not None and added == writes.row_count
    return added, claimed, committed
