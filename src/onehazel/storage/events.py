"""Events: an append-only log. There is deliberately no update or delete of one event.

The (workspace_id, event_id) primary key is the idempotency record, so the
dedup key can never be recorded for an event that did not commit.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage import rollups
from onehazel.storage.engine import (
    in_sqlite_thread,
    is_postgres,
    json_list,
    pg_driver,
    sqlite_block_sizes,
    sqlite_driver,
    upsert,
)
from onehazel.storage.records import EventRecord
from onehazel.storage.tables import entities, events

_COLUMNS = (
    events.c.event_id,
    events.c.external_id,
    events.c.type,
    events.c.data,
    events.c.pii,
    events.c.fingerprint,
    events.c.timestamp,
    events.c.ts,
    events.c.received_at,
    events.c.seq,
)

SortKey = tuple[int, int, str]


def _row(workspace_id: str, record: EventRecord) -> dict[str, Any]:
    return {
        "workspace_id": workspace_id,
        "event_id": record.event_id,
        "external_id": record.external_id,
        "type": record.type,
        "data": record.data,
        "pii": record.pii,
        "fingerprint": record.fingerprint,
        "timestamp": record.timestamp,
        "ts": record.ts,
        "received_at": record.received_at,
        "seq": record.seq,
    }


_NAMES = (
    "event_id",
    "external_id",
    "type",
    "data",
    "pii",
    "fingerprint",
    "timestamp",
    "ts",
    "received_at",
    "seq",
)
# The liveness check is a LATERAL probe per row, not a join: asyncpg prepares the statement
# once and after five runs PostgreSQL may keep a generic plan, which for a plain join (without
# statistics on entities, e.g. before autovacuum's first analyze) was a nested loop over a
# materialised scan of every entity: 2.3 ms of server CPU per 16-row flush against 0.6 ms for
# this form, whose every plan is one primary-key probe per row.
_PG_INSERT_MANY_IF_LIVE = f"""
INSERT INTO events (workspace_id, {", ".join(_NAMES)})
SELECT u.workspace_id, u.event_id, u.external_id, u.type, u.data::jsonb, u.pii::jsonb, u.fingerprint,
       u.timestamp, u.ts, u.received_at, u.seq
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::int8[], $10::int8[], $11::int8[]) AS u(workspace_id, {", ".join(_NAMES)})
CROSS JOIN LATERAL (
  SELECT 1 FROM entities e
  WHERE e.workspace_id = u.workspace_id AND e.external_id = u.external_id AND e.deleted_at IS NULL LIMIT 1
) AS live
ON CONFLICT (workspace_id, event_id) DO NOTHING
RETURNING workspace_id, event_id, ts, type, data
"""
# The batch path's first try: a binary COPY straight into ``events``, inside a savepoint. When
# one of the rows is stored already the COPY fails (unique violation), the savepoint undoes it,
# and the chunk goes through the staging table below. 100,000 events in 5000-row transactions,
# the same rows: 114-116k rows/s straight against 84-86k through the staging table (the
# INSERT .. SELECT reads and re-inserts every row once more). Released either way: the chunk's
# later statements run in the transaction itself (updating the job row, locked by the
# transaction, from inside a subtransaction would make PostgreSQL record both in a MultiXact).
_PG_COPY_SAVEPOINT = "SAVEPOINT onehazel_copy"
_PG_COPY_KEEP = "RELEASE SAVEPOINT onehazel_copy"
_PG_COPY_UNDO = f"ROLLBACK TO SAVEPOINT onehazel_copy; {_PG_COPY_KEEP}"  # one trip (no parameters)
# The batch path's staging table: temporary (per connection, never shared), emptied
# at every commit and on rollback; created by the first chunk on each connection.
_PG_STAGE_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS events_stage
  (LIKE events INCLUDING DEFAULTS EXCLUDING CONSTRAINTS EXCLUDING INDEXES) ON COMMIT DELETE ROWS
"""
_STAGE_COLUMNS = ("workspace_id", *_NAMES)
_PG_INSERT_STAGED_ROWS = f"""
INSERT INTO events ({", ".join(_STAGE_COLUMNS)})
SELECT {", ".join(_STAGE_COLUMNS)} FROM events_stage
ON CONFLICT (workspace_id, event_id) DO NOTHING
"""
_PG_INSERT_STAGED = _PG_INSERT_STAGED_ROWS + "RETURNING workspace_id, event_id, ts, type, data"
# Deltas handed over: only the eventIds come back (returning ``data`` too, unused, made the
# statement ~25% slower in an isolated test of 100,000 rows).
_PG_INSERT_STAGED_IDS = _PG_INSERT_STAGED_ROWS + "RETURNING event_id"
# Each statement also appends the inserted rows' analytics deltas (storage/rollups.py):
# computed in SQL, or (the batch path, _PG_INSERT_STAGED_APPENDING) handed over precomputed.
_PG_INSERT_MANY_IF_LIVE = rollups.pg_counting(_PG_INSERT_MANY_IF_LIVE, "workspace_id, event_id")
# The inserted eventIds come back as one array, not a row each: asyncpg decoding 5000 rows
# into records cost ~5 ms of this process's CPU per chunk (an array: well under 1 ms).
_PG_INSERT_STAGED_APPENDING = rollups.pg_appending(_PG_INSERT_STAGED_IDS, "array_agg(event_id)")
_PG_INSERT_STAGED = rollups.pg_counting(_PG_INSERT_STAGED, "event_id")
_PG_FINGERPRINTS = """
SELECT event_id, fingerprint FROM events WHERE workspace_id = $1 AND event_id = ANY($2::text[])
"""
# The batch path on SQLite: multi-row INSERT .. VALUES statements. Python's sqlite3 lets go of
# the GIL while SQLite runs a statement, so the worker's next chunk is checked on the other core
# meanwhile; executemany takes the GIL back after every row and, beside a busy event loop,
# waited up to a switch interval each time. Statements hold _SQLITE_ROWS rows, the rest of a
# chunk goes in powers of two (5000 rows: 4 x 1024 + 512 + 256 + 128 + 8): every statement is
# prepared once and cached by the connection at ~1 KB per row, so only a dozen shapes may exist
# (a shape per remainder would let 128 cached statements of ~2 MB each pile up). 1024 rows of
# 11 values stay under SQLite's default limit of 32,766 parameters (since 3.32); a build with a
# lower limit gets executemany (_sqlite_multirow).
_SQLITE_ROWS = 1024
_sqlite_multirow = sqlite3.sqlite_version_info >= (3, 32, 0)


# OR IGNORE, not ON CONFLICT (workspace_id, event_id) DO NOTHING: both skip the same rows (the
# primary key is the table's only unique constraint), but with an upsert clause any other failure
# (NOT NULL) aborts the statement, so SQLite keeps a statement journal to undo half of one; past
# 64 KB that journal is a temporary file. 100,000 events in 5000-row transactions, same rows and
# statements otherwise: 529 MB written through write() against 250 MB, 62-71k rows/s against
# 76-90k. OR IGNORE would skip a row with a NULL where none may be, so such rows (never built)
# are refused before the insert (_sqlite_insert).
_SQLITE_NOT_NULL = tuple(name for name in _NAMES if not events.c[name].nullable)


@functools.lru_cache(maxsize=32)
def _sqlite_insert_rows(count: int) -> str:
    row = f"({', '.join('?' * (len(_NAMES) + 1))})"
    values = ", ".join([row] * count)
    return f"INSERT OR IGNORE INTO events (workspace_id, {', '.join(_NAMES)}) VALUES {values}"


# Many ids as one JSON array parameter: no statement with thousands of placeholders.
_SQLITE_SEQS = (
    "SELECT event_id, seq, received_at FROM events"
    " WHERE workspace_id = ? AND event_id IN (SELECT value FROM json_each(?))"
)
SQLITE_FINGERPRINTS = (
    "SELECT event_id, fingerprint FROM events"
    " WHERE workspace_id = ? AND event_id IN (SELECT value FROM json_each(?))"
)


def _sqlite_statement_sizes(count: int) -> Iterator[int]:
    """Rows per statement for ``count`` rows: blocks of ``_SQLITE_ROWS``, then powers of two."""
    return sqlite_block_sizes(count, _SQLITE_ROWS)


@dataclass(frozen=True)
class SqliteRows:
    """A chunk's rows as the multi-row INSERTs take them (``sqlite_rows``)."""

    values: list[Any]
    """Every row's values, flat, rows ordered by entity (their externalId)."""
    sizes: list[int]
    """Rows per statement (``_sqlite_statement_sizes``)."""
    width: int
    """Values per row."""
    order: list[int]
    """The index in ``rows`` of each row here (``restamp``)."""


def sqlite_rows(workspace_id: str, rows: EventColumns) -> SqliteRows:
    """``rows`` flattened for ``_sqlite_insert_blocks``.

    The rows go in ordered by entity (by externalId; stable, so an entity's events keep
    their order). Of the table's b-trees only the per-entity index takes a chunk's rows at
    random places (the primary key and the time indexes take them near their end), and
    SQLite's 2 MB page cache holds little of it: in entity order each of its leaf pages is
    visited once per chunk instead of once per row: the statements took ~20% less of the
    SQLite thread's CPU for 100,000 events over 1000 players (bench/batch_ingest.py). Nothing
    reads the rows' physical order (seq, assigned in item order, orders an entity's events).
    """
    columns = rows.columns()
    if any(len(column) != len(rows.event_id) for column in columns):
        raise ValueError("the event columns differ in length")
    if any(None in getattr(rows, name) for name in _SQLITE_NOT_NULL):
        raise ValueError("an event row has no value where the table requires one")
    table = list(zip(itertools.repeat(workspace_id), *columns))
    order = sorted(range(len(table)), key=rows.external_id.__getitem__)
    sizes = list(_sqlite_statement_sizes(len(rows.event_id)))
    values = list(itertools.chain.from_iterable(table[i] for i in order))
    return SqliteRows(values, sizes, len(_NAMES) + 1, order)


_RECEIVED_AT, _SEQ = 1 + _NAMES.index("received_at"), 1 + _NAMES.index("seq")


def restamp(flat: SqliteRows, rows: EventColumns) -> None:
    """Put ``rows``' time of receipt and server order, given anew (``apply.stamp``), into
    ``flat`` (made from ``rows`` by ``sqlite_rows``)."""
    flat.values[_RECEIVED_AT :: flat.width] = [rows.received_at[i] for i in flat.order]
    flat.values[_SEQ :: flat.width] = [rows.seq[i] for i in flat.order]


def sqlite_insert_rows(
    conn: sqlite3.Connection, flat: SqliteRows, appended: list[rollups.Delta]
) -> int | None:
    """In the driver's thread: insert the rows, and the ``appended`` deltas if every row went
    in; rows added, or None (nothing written) when this SQLite takes fewer parameters than a
    statement has: then ``EventRepository.insert_many`` inserts them (it falls back to
    executemany)."""
    if not _sqlite_multirow:
        return None
    return _sqlite_insert_blocks(conn, flat.values, flat.sizes, flat.width, appended)


async def _sqlite_insert(
    driver: Any, workspace_id: str, rows: EventColumns, deltas: list[rollups.Delta] | None
) -> int:
    """Insert ``rows`` (those whose eventId is new); returns how many went in. When that
    is every row, ``deltas`` (their analytics deltas, if given) are appended too.

    The multi-row statements run back to back in the driver's thread, in one call: the
    event loop is not asked in between (its look-ahead work would hold each next statement
    up by a slice, ~25 ms a chunk in all). The first statement is the largest, so a
    parameter limit lower than ours fails it before anything is written.
    """
    global _sqlite_multirow
    flat = sqlite_rows(workspace_id, rows)
    appended = deltas or []
    if _sqlite_multirow:
        added = await in_sqlite_thread(driver, sqlite_insert_rows, flat, appended)
        if added is not None:
            return added
        _sqlite_multirow = False  # this SQLite was built with a lower limit
    values, width = flat.values, flat.width
    cursor = await driver.executemany(
        _sqlite_insert_rows(1), [values[n : n + width] for n in range(0, len(values), width)]
    )
    if cursor.rowcount == len(rows.event_id) and appended:
        await in_sqlite_thread(driver, rollups.sqlite_append, appended)
    return int(cursor.rowcount)


def _sqlite_insert_blocks(
    conn: sqlite3.Connection, values: list[Any], sizes: list[int], width: int, appended: list[rollups.Delta]
) -> int | None:
    """In the driver's thread: one multi-row INSERT per size, then the ``appended`` deltas
    if every row went in; rows added, or None when the first statement has more parameters
    than this SQLite allows (nothing was written). The deltas' statement runs here too: as
    a statement of its own it waited ~20 ms for the event loop while the look-ahead worked."""
    added = start = 0
    for count in sizes:
        end = start + count * width
        try:
            added += conn.execute(_sqlite_insert_rows(count), values[start:end]).rowcount
        except sqlite3.OperationalError as exc:
            if "too many SQL variables" not in str(exc) or start:
                raise
            return None
        start = end
    if appended and added * width == len(values):
        rollups.sqlite_append(conn, appended)
    return added


@dataclass
class EventColumns:
    """Events to append, column by column in ``_NAMES`` order: the batch hot path
    builds these lists directly instead of one record object per event.
    ``data`` and ``pii`` hold JSON text (``pii`` None when the event has none)."""

    event_id: list[str] = field(default_factory=list)
    external_id: list[str] = field(default_factory=list)
    type: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    pii: list[str | None] = field(default_factory=list)
    fingerprint: list[str] = field(default_factory=list)
    timestamp: list[str | None] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    received_at: list[int] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    members: list[Mapping[str, Any]] = field(default_factory=list)
    """Optional: each event's ``data`` as a dict (what ``data`` encodes). Given, the
    analytics deltas are computed in Python (``rollups.python_deltas``), not in SQL."""
    counted: rollups.DeltaCounter | None = None
    """Optional, with ``members``: every row already counted (e.g. while the rows were built)."""

    def columns(self) -> list[list[Any]]:
        return [getattr(self, name) for name in _NAMES]

    def deltas(
        self, workspace_id: str, keep: set[str] | None = None, *, sign: int = 1
    ) -> list[rollups.Delta] | None:
        """The rollup deltas of these events (only the eventIds in ``keep``, if given), or
        None when they are to be computed in SQL (no ``members``, or values only SQL renders)."""
        if len(self.members) != len(self.event_id):
            return None
        if keep is None and self.counted is not None:
            return self.counted.rows(workspace_id, sign=sign)
        if keep is None:
            return rollups.python_deltas(workspace_id, self.type, self.ts, self.members, sign=sign)
        chosen = [i for i, event_id in enumerate(self.event_id) if event_id in keep]
        return rollups.python_deltas(
            workspace_id,
            [self.type[i] for i in chosen],
            [self.ts[i] for i in chosen],
            [self.members[i] for i in chosen],
            sign=sign,
        )


async def _pg_copy_new(
    driver: Any, workspace_id: str, rows: EventColumns, started: Callable[[], None] | None
) -> bool:
    """COPY the rows straight into ``events``; False, with nothing written, when one of them
    is stored already (by an earlier chunk, or a transaction that committed meanwhile).
    ``started`` is called as the COPY begins: from then on the server reads the rows while
    asyncpg encodes and sends them (512 KB at a time), and the look-ahead's slices run in
    between."""
    await driver.execute(_PG_COPY_SAVEPOINT)
    if started is not None:
        started()
    records = zip(itertools.repeat(workspace_id), *rows.columns())
    try:
        await driver.copy_records_to_table("events", records=records, columns=_STAGE_COLUMNS)
    except asyncpg.UniqueViolationError:
        await driver.execute(_PG_COPY_UNDO)
        return False
    await driver.execute(_PG_COPY_KEEP)
    return True


def _values(r: EventRecord) -> tuple[Any, ...]:
    pii = orjson.dumps(r.pii).decode() if r.pii is not None else None
    data = orjson.dumps(r.data).decode()
    return (
        r.event_id,
        r.external_id,
        r.type,
        data,
        pii,
        r.fingerprint,
        r.timestamp,
        r.ts,
        r.received_at,
        r.seq,
    )


def _columns(records: list[EventRecord]) -> list[list[Any]]:
    """Column arrays for unnest(): one list per column, in _NAMES order."""
    return [list(column) for column in zip(*(_values(r) for r in records), strict=True)]


class EventRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert(self, workspace_id: str, record: EventRecord) -> bool:
        """Append an event; False when its eventId already exists in the workspace."""
        statement = (
            upsert(self.conn, events)
            .values(_row(workspace_id, record))
            .on_conflict_do_nothing(index_elements=["workspace_id", "event_id"])
        )
        if (await self.conn.execute(statement)).rowcount != 1:
            return False
        await rollups.count_inserted(self.conn, workspace_id, [record.event_id])
        return True

    async def insert_if_live(self, workspace_id: str, record: EventRecord) -> bool:
        """Append an event only if its entity exists and is not deleted and the eventId
        is new, in one statement (INSERT .. SELECT FROM entities .. ON CONFLICT DO
        NOTHING). False means "look closer": missing, deleted, or a replay."""
        values = _row(workspace_id, record)
        source = sa.select(
            *(sa.bindparam(f"v_{name}", value, type_=events.c[name].type) for name, value in values.items())
        ).where(
            entities.c.workspace_id == workspace_id,
            entities.c.external_id == record.external_id,
            entities.c.deleted_at.is_(None),
        )
        statement = (
            upsert(self.conn, events)
            .from_select(list(values), source)
            .on_conflict_do_nothing(index_elements=["workspace_id", "event_id"])
            .returning(events.c.event_id)
        )
        if (await self.conn.execute(statement)).first() is None:
            return False
        await rollups.count_inserted(self.conn, workspace_id, [record.event_id])
        return True

    async def insert_many_if_live(self, rows: list[tuple[str, EventRecord]]) -> set[tuple[str, str]]:
        """``insert_if_live`` for many (workspace, event) pairs in one statement (group
        commit of concurrent single writes). Returns the (workspace, eventId) pairs
        inserted; the caller must not pass one (workspace, eventId) twice."""
        if not rows:
            return set()
        if not is_postgres(self.conn):
            return {(ws, r.event_id) for ws, r in rows if await self.insert_if_live(ws, r)}
        driver = (await self.conn.get_raw_connection()).driver_connection
        assert driver is not None
        columns = _columns([r for _, r in rows])
        found = await driver.fetch(_PG_INSERT_MANY_IF_LIVE, [ws for ws, _ in rows], *columns)
        return {(row[0], row[1]) for row in found}

    async def insert_many(
        self, workspace_id: str, rows: EventColumns, *, started: Callable[[], None] | None = None
    ) -> set[str]:
        """Append many events; returns the eventIds actually inserted.

        The ones missing from the result already existed (replays or conflicts).
        This is the batch hot path, so it talks to the driver directly inside the
        current transaction: PostgreSQL gets a binary COPY straight into the table,
        the cheapest bulk write there is for both Python and the server; when an
        eventId is stored already that COPY fails and is undone (a savepoint), and the
        rows go by a binary COPY into a per-connection temporary table (emptied at
        every commit) and one ``INSERT .. SELECT .. ON CONFLICT DO NOTHING RETURNING``.
        SQLite, under ``BEGIN IMMEDIATE`` (no concurrent writer), inserts the rows in
        multi-row statements (``_sqlite_insert``).
        ``started`` is called once, when the long part begins (at once when there are no
        rows): the database is busy from then on, and this process's CPU is free.
        """
        if not rows.event_id:
            if started is not None:
                started()
            return set()
        if is_postgres(self.conn):
            driver = await pg_driver(self.conn)
            if await _pg_copy_new(driver, workspace_id, rows, started):
                await self._count(workspace_id, rows, None)
                return set(rows.event_id)
            await driver.execute(_PG_STAGE_TABLE)  # in the transaction: a rollback may undo it
            records = zip(itertools.repeat(workspace_id), *rows.columns())
            await driver.copy_records_to_table("events_stage", records=records, columns=_STAGE_COLUMNS)
            deltas = rows.deltas(workspace_id)  # as if every row goes in; corrected below if not
            if deltas is None:
                found = await driver.fetch(_PG_INSERT_STAGED)
                return {row[0] for row in found}
            ids = await driver.fetchval(_PG_INSERT_STAGED_APPENDING, *rollups.delta_columns(deltas))
            inserted = set(ids or ())  # array_agg over no row is NULL
            if len(inserted) < len(rows.event_id):  # take back the deltas of the rows that conflicted
                taken_back = rows.deltas(workspace_id, set(rows.event_id) - inserted, sign=-1)
                assert taken_back is not None  # some of the rows that gave deltas above
                await rollups.append(self.conn, taken_back)
            return inserted
        driver = await sqlite_driver(self.conn)
        if started is not None:
            started()
        deltas = rows.deltas(workspace_id)  # appended with the rows if every row goes in
        added = await _sqlite_insert(driver, workspace_id, rows, deltas)
        return await self.settle_sqlite_insert(workspace_id, rows, added, counted=deltas is not None)

    async def settle_sqlite_insert(
        self, workspace_id: str, rows: EventColumns, added: int, *, counted: bool
    ) -> set[str]:
        """SQLite, after ``added`` of ``rows`` went in by ``_sqlite_insert_blocks`` (which
        appended their deltas if they all did and ``counted``): the eventIds inserted, their
        analytics deltas appended if that was not done."""
        if added == len(rows.event_id):  # the usual case: every eventId was new
            if not counted:
                await self._count(workspace_id, rows, None)
            return set(rows.event_id)
        if added == 0:  # a re-sent chunk
            return set()
        # Some were new: ours are the stored rows with this chunk's (seq, received_at).
        driver = await sqlite_driver(self.conn)
        found = await driver.execute_fetchall(_SQLITE_SEQS, (workspace_id, json_list(rows.event_id)))
        stored = {row[0]: (row[1], row[2]) for row in found}
        inserted = {
            event_id
            for event_id, seq, received_at in zip(rows.event_id, rows.seq, rows.received_at, strict=True)
            if stored.get(event_id) == (seq, received_at)
        }
        await self._count(workspace_id, rows, inserted)
        return inserted

    async def _count(self, workspace_id: str, rows: EventColumns, inserted: set[str] | None) -> None:
        """Append the deltas of the rows just inserted (all, or the eventIds ``inserted``)."""
        deltas = rows.deltas(workspace_id, inserted)
        if deltas is not None:
            await rollups.append(self.conn, deltas)
        else:
            ids = rows.event_id if inserted is None else sorted(inserted)
            await rollups.count_inserted(self.conn, workspace_id, ids)

    async def fingerprints(self, workspace_id: str, event_ids: list[str]) -> dict[str, str]:
        """The stored fingerprint of each of ``event_ids`` that exists."""
        if not event_ids:
            return {}
        if is_postgres(self.conn):
            driver = await pg_driver(self.conn)
            found = await driver.fetch(_PG_FINGERPRINTS, workspace_id, event_ids)
            return {row[0]: row[1] for row in found}
        driver = await sqlite_driver(self.conn)
        found = await driver.execute_fetchall(SQLITE_FINGERPRINTS, (workspace_id, json_list(event_ids)))
        return {row[0]: row[1] for row in found}

    async def get(self, workspace_id: str, event_id: str) -> EventRecord | None:
        query = sa.select(*_COLUMNS).where(
            events.c.workspace_id == workspace_id, events.c.event_id == event_id
        )
        row = (await self.conn.execute(query)).first()
        return EventRecord(**row._mapping) if row else None

    async def list(
        self,
        workspace_id: str,
        external_id: str,
        *,
        type_: str | None,
        from_ts: int | None,
        to_ts: int | None,
        descending: bool,
        after: SortKey | None,
        limit: int,
    ) -> list[EventRecord]:
        """One entity's events by (timestamp, server order), strictly after ``after``."""
        key = sa.tuple_(events.c.ts, events.c.seq, events.c.event_id)
        query = sa.select(*_COLUMNS).where(
            events.c.workspace_id == workspace_id, events.c.external_id == external_id
        )
        if type_ is not None:
            query = query.where(events.c.type == type_)
        if from_ts is not None:
            query = query.where(events.c.ts >= from_ts)
        if to_ts is not None:
            query = query.where(events.c.ts < to_ts)
        if after is not None:
            query = query.where(key < sa.tuple_(*after) if descending else key > sa.tuple_(*after))
        columns = (events.c.ts, events.c.seq, events.c.event_id)
        order = [c.desc() for c in columns] if descending else list(columns)
        query = query.order_by(*order).limit(limit)
        return [EventRecord(**row._mapping) for row in await self.conn.execute(query)]
