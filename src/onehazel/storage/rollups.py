"""Analytics rollups: per-hour event counts and exact transaction sums, kept exact by deltas.

``event_rollups`` holds rows (workspace, UTC hour, event type, currency, transaction
type, amount scale, count, sum). Every change to the ``events`` table writes its delta
rows *in the same transaction*, computed in SQL from the very rows written, with the
same expressions the analytics queries use on raw events:

* an insert (single write, group commit, batch chunk, import) appends one multi-row
  INSERT of positive deltas, grouped per (hour, type, currency, tx type, scale): on
  PostgreSQL's bulk paths a data-modifying CTE around the events INSERT (no second
  statement, no re-read), elsewhere one ``INSERT .. SELECT`` over the new rows by key;
* a delete (retention expiry, purge of a deleted entity, tombstone release) appends
  the negative deltas of exactly the rows it deleted.

Writers only ever append (no unique key, no row is updated), so concurrent
transactions never wait on each other here. A periodic compaction folds the pending
delta rows of each (workspace, hour) into one row per key, in one statement that
deletes the rows it read and inserts their sums: a row is folded exactly once even
when several compactions overlap, and a reader sees either all the deltas or their
sums. Rows whose count falls to 0 disappear.

The rollup counts every stored event, whatever the state of its entity. Soft-deleted
entities are excluded at query time: their events (those still stored) are read raw
and subtracted, in the same statement, so a delete takes effect at once and no race
between a delete and a concurrent write can leave a deleted entity's event counted
(writers check liveness without locking the entity, so a delete cannot know every event
a write in flight will still add). That read costs one index probe per deleted entity
and a heap fetch per event of theirs in the range (~7 us each from the OS cache); the
retention sweep bounds it by purging deleted entities (``deletedEntitiesDays``), and a
purge deletes their events with negative deltas. An event whose entity row no longer
exists at all would count here and not in the raw join; the server leaves none (a
tombstone's leftover events are deleted before the tombstone is).

Sums are bucketed by the amount's scale (digits after the point) so that the result
keeps the largest scale of the amounts that still count, exactly as ``numeric`` sums
raw amounts (a refund of ``1.234`` deleted later leaves no trace in the scale).
Hours follow floor division of the timestamp, so events before 1970 fall in the
right hour and day too.
"""

from __future__ import annotations

import decimal
import functools
import itertools
import re
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage.engine import (
    DECIMAL_CONTEXT,
    in_sqlite_thread,
    is_postgres,
    json_list,
    sqlite_block_sizes,
    sqlite_driver,
)

HOUR = 3_600 * 1_000_000
DAY = 24 * HOUR
TABLE = "event_rollups"
_COLUMNS = "workspace_id, hour, type, currency, tx_type, scale, count, amount, pending"
# Only a plain decimal string is summed (what the API stores for a decimal field).
_PG_DECIMAL = "'^-?[0-9]+([.][0-9]+)?$'"
# PostgreSQL: one compaction at a time per database (others skip their turn).
_COMPACT_LOCK = 0x0E7E_0A11


def floor_div(expr: str, unit: int) -> str:
    """``floor(expr / unit)`` in integer arithmetic on both databases (both truncate towards 0)."""
    return f"(CASE WHEN {expr} >= 0 THEN {expr} / {unit} ELSE ({expr} + 1) / {unit} - 1 END)"


class Sql:
    """The dialect's SQL for one event's analytics keys, shared by rollups and raw queries."""

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres
        self.true, self.false = ("true", "false") if postgres else ("1", "0")

    def member(self, alias: str, name: str) -> str:
        """The JSON member ``name`` of ``alias.data`` as text (names here are constants)."""
        if self.postgres:
            return f"({alias}.data ->> '{name}')"
        return f"CAST(json_extract({alias}.data, '$.{name}') AS TEXT)"

    def summable(self, alias: str) -> str:
        """A ``transaction`` whose ``amount`` is a decimal string: counted and summed."""
        if self.postgres:
            return (
                f"({alias}.type = 'transaction' AND jsonb_typeof({alias}.data -> 'amount') = 'string' "
                f"AND ({alias}.data ->> 'amount') ~ {_PG_DECIMAL})"
            )
        return (
            f"({alias}.type = 'transaction' AND json_type({alias}.data, '$.amount') = 'text' "
            f"AND onehazel_is_decimal(json_extract({alias}.data, '$.amount')) = 1)"
        )

    def scale(self, amount: str) -> str:
        if self.postgres:
            return f"scale(CAST({amount} AS numeric))"
        return f"(CASE WHEN instr({amount}, '.') > 0 THEN length({amount}) - instr({amount}, '.') ELSE 0 END)"

    def number(self, amount: str) -> str:
        return f"CAST({amount} AS numeric)" if self.postgres else amount

    def total(self, amount: str) -> str:
        """The exact sum of ``amount`` (numeric or decimal text), as text."""
        return f"CAST(sum({amount}) AS TEXT)" if self.postgres else f"decimal_sum({amount})"

    def negated(self, amount: str) -> str:
        """``-amount`` for a stored sum (numeric on PostgreSQL, decimal text on SQLite)."""
        if self.postgres:
            return f"-({amount})"
        return (
            f"(CASE WHEN {amount} IS NULL THEN NULL WHEN substr({amount}, 1, 1) = '-' "
            f"THEN substr({amount}, 2) ELSE '-' || {amount} END)"
        )

    def money(self, source: str) -> str:
        """Per event of ``source`` (alias ``s``): ts, type and, for a summable transaction,
        currency, transaction type and amount (else NULL)."""
        ok = self.summable("s")
        return (
            f"SELECT s.workspace_id AS workspace_id, s.ts AS ts, s.type AS type, "
            f"CASE WHEN {ok} THEN {self.member('s', 'currency')} END AS currency, "
            f"CASE WHEN {ok} THEN {self.member('s', 'type')} END AS tx_type, "
            f"CASE WHEN {ok} THEN {self.member('s', 'amount')} END AS amount "
            f"FROM {source}"
        )

    def deltas(self, source: str, *, sign: int, pending: bool = True) -> str:
        """The delta rows (``_COLUMNS`` order) of the events of ``source`` (alias ``s``): one per
        (workspace, hour, type, currency, tx type, scale); ``pending=False`` for rows that are
        already one per key (a rebuild from all events)."""
        hour = floor_div("k.ts", HOUR)
        amount = f"CASE WHEN k.amount IS NOT NULL THEN {self.number('k.amount')} END"
        total = f"sum({amount})" if self.postgres else f"decimal_sum({amount})"
        scale = f"CASE WHEN k.amount IS NOT NULL THEN {self.scale('k.amount')} END"
        grouped = (
            f"SELECT k.workspace_id AS workspace_id, {hour} AS hour, k.type AS type, k.currency AS currency, "
            f"k.tx_type AS tx_type, {scale} AS scale, "
            f"count(*) AS count, {total} AS amount "
            f"FROM ({self.money(source)}) k GROUP BY 1, 2, 3, 4, 5, 6"
        )
        if sign > 0:
            count, amount_out = "g.count", "g.amount"
        else:
            count, amount_out = "-g.count", self.negated("g.amount")
        return (
            f"SELECT g.workspace_id, g.hour, g.type, g.currency, g.tx_type, g.scale, {count}, {amount_out}, "
            f"{self.true if pending else self.false} FROM ({grouped}) g"
        )


PG = Sql(postgres=True)
SQLITE = Sql(postgres=False)


def sql_for(conn: AsyncConnection) -> Sql:
    return PG if is_postgres(conn) else SQLITE


def pg_counting(insert: str, select: str) -> str:
    """Wrap a PostgreSQL ``INSERT INTO events .. RETURNING workspace_id, ts, type, data, <select>``
    so that the same statement appends the rows' deltas; it answers ``SELECT <select>``."""
    return (
        f"WITH inserted AS ({insert}), "
        f"counted AS (INSERT INTO {TABLE} ({_COLUMNS}) {PG.deltas('inserted s', sign=1)}) "
        f"SELECT {select} FROM inserted"
    )


def pg_uncounting(delete: str, select: str) -> str:
    """Wrap a PostgreSQL ``DELETE FROM events .. RETURNING workspace_id, ts, type, data``
    so that the same statement appends the negative deltas; answers ``<select>`` over ``doomed``."""
    return (
        f"WITH doomed AS ({delete}), "
        f"uncounted AS (INSERT INTO {TABLE} ({_COLUMNS}) {PG.deltas('doomed s', sign=-1)}) "
        f"{select}"
    )


# ``_PG_DECIMAL`` for Python's fullmatch (no "$" that would admit a trailing newline).
_DECIMAL = re.compile(r"-?[0-9]+(?:[.][0-9]+)?")
# Amount strings longer than this are left to SQL (the API's decimals have at most 40 digits).
_LONGEST_AMOUNT = 900
Delta = tuple[str, int, str, str | None, str | None, int | None, int, decimal.Decimal | None]
"""A delta row: workspace, hour, type, currency, tx type, scale, count, amount (pending)."""


class DeltaCounter:
    """Counts events one at a time into delta rows (:func:`python_deltas`, incrementally)."""

    __slots__ = ("groups", "declined")

    def __init__(self) -> None:
        # Per key: [count, sum of the amounts as integers in units of 10**-scale] (one key
        # holds one scale, so the exact sum is integer arithmetic; no Decimal per event).
        self.groups: dict[tuple[int, str, Any, Any, int | None], list[Any]] = {}
        self.declined = False
        """An event only SQL can count exactly was added: :meth:`rows` answers None."""

    def add(self, type_: str, ts: int, members: Mapping[str, Any]) -> None:
        hour = ts // HOUR  # floor division, as floor_div() spells it in SQL
        currency = tx_type = units = scale = None
        if type_ == "transaction":
            raw = members.get("amount")
            if type(raw) is str:
                if len(raw) > _LONGEST_AMOUNT:  # past int()'s digit limit and the exact context
                    self.declined = True
                    return
                if _DECIMAL.fullmatch(raw) is not None:
                    currency, tx_type = members.get("currency"), members.get("type")
                    if not (currency is None or type(currency) is str) or not (
                        tx_type is None or type(tx_type) is str
                    ):
                        self.declined = True
                        return
                    point = raw.find(".")
                    if point < 0:
                        scale, units = 0, int(raw)
                    else:
                        scale, units = len(raw) - point - 1, int(raw[:point] + raw[point + 1 :])
                elif "\n" in raw:
                    self.declined = True
                    return
        key = (hour, type_, currency, tx_type, scale)
        group = self.groups.get(key)
        if group is None:
            self.groups[key] = [1, units]
        else:
            group[0] += 1
            if units is not None:
                group[1] += units

    def rows(self, workspace_id: str, *, sign: int = 1) -> list[Delta] | None:
        if self.declined:
            return None
        rows: list[Delta] = []
        for (hour, type_, currency, tx_type, scale), (count, units) in self.groups.items():
            total = None
            if units is not None and scale is not None:
                total = decimal.Decimal(sign * units).scaleb(-scale, DECIMAL_CONTEXT)  # never "-0"
            rows.append((workspace_id, hour, type_, currency, tx_type, scale, sign * count, total))
        return rows


def python_deltas(
    workspace_id: str,
    types: Sequence[str],
    times: Sequence[int],
    data: Sequence[Mapping[str, Any]],
    *,
    sign: int = 1,
) -> list[Delta] | None:
    """The delta rows of events given as (type, ts, stored data), computed here instead of in
    SQL: what :meth:`Sql.deltas` gives for the same rows on either database.

    The batch hot path uses it to save the database the per-row JSON and numeric work
    (the rows' values are already in memory). It answers None (let the SQL compute it)
    for any event where the two could disagree: a ``currency`` or ``type`` member of a
    transaction that is neither a string nor null (the databases render those as JSON
    text, each its own way), an amount string with a newline in it, or one of more than
    900 characters (beyond what Python sums here exactly).
    """
    counter = DeltaCounter()
    for type_, ts, members in zip(types, times, data, strict=True):
        counter.add(type_, ts, members)
        if counter.declined:
            return None
    return counter.rows(workspace_id, sign=sign)


_PG_APPEND = (
    f"INSERT INTO {TABLE} ({_COLUMNS}) SELECT *, true FROM unnest("
    "$1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[], $8::numeric[])"
)


def pg_appending(insert: str, select: str) -> str:
    """Like :func:`pg_counting`, but the deltas come as eight arrays ($1..$8, the columns of
    :data:`Delta`) computed by :func:`python_deltas`; the insert's own parameters start at $9."""
    return f"WITH inserted AS ({insert}), counted AS ({_PG_APPEND}) SELECT {select} FROM inserted"


def delta_columns(rows: Sequence[Delta]) -> list[list[Any]]:
    """The eight parameter arrays of :func:`pg_appending` / :func:`append`."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(8)]


async def append(conn: AsyncConnection, rows: Sequence[Delta]) -> None:
    """Append delta rows computed by :func:`python_deltas` (amounts as exact text on SQLite)."""
    if not rows:
        return
    if is_postgres(conn):
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.execute(_PG_APPEND, *delta_columns(rows))
        return
    driver = await sqlite_driver(conn)
    await in_sqlite_thread(driver, sqlite_append, rows)


# SQLite: the deltas go in multi-row INSERT .. VALUES statements of up to _SQLITE_APPEND_ROWS
# rows (64 x 8 parameters: under the 999 that SQLite allowed before 3.32). Not executemany:
# it takes the GIL back after every row, and beside a busy event loop (the batch worker
# checking its next chunk) each row waited up to a switch interval: 16 delta rows took 4-10 ms
# of wall time for under 1 ms of CPU (bench/batch_ingest.py, timed in the driver's thread).
_SQLITE_APPEND_ROWS = 64


@functools.lru_cache(maxsize=8)
def _sqlite_append_statement(count: int) -> str:
    return f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES {', '.join(['(?, ?, ?, ?, ?, ?, ?, ?, 1)'] * count)}"


def sqlite_append(conn: sqlite3.Connection, rows: Sequence[Delta]) -> None:
    """In SQLite's driver thread: append delta rows computed by :func:`python_deltas` (the
    amounts as exact text), a few statements in all (``sqlite_block_sizes``)."""
    parameters = [(*row[:7], None if row[7] is None else format(row[7], "f")) for row in rows]
    start = 0
    for size in sqlite_block_sizes(len(parameters), _SQLITE_APPEND_ROWS):
        values = list(itertools.chain.from_iterable(parameters[start : start + size]))
        conn.execute(_sqlite_append_statement(size), values)
        start += size


async def count_inserted(conn: AsyncConnection, workspace_id: str, event_ids: Sequence[str]) -> None:
    """Append the deltas of events just inserted in this transaction (read back by key)."""
    if not event_ids:
        return
    sql = sql_for(conn)
    if sql.postgres:
        source = "events s WHERE s.workspace_id = :ws AND s.event_id = ANY(:ids)"
        ids = sa.bindparam("ids", list(event_ids), type_=postgresql.ARRAY(sa.Text))
    else:
        source = "events s WHERE s.workspace_id = :ws AND s.event_id IN (SELECT value FROM json_each(:ids))"
        ids = sa.bindparam("ids", json_list(event_ids), type_=sa.Text)
    statement = sa.text(f"INSERT INTO {TABLE} ({_COLUMNS}) {sql.deltas(source, sign=1)}")
    await conn.execute(statement.bindparams(ids, sa.bindparam("ws", workspace_id)))


async def uncount_rowids(conn: AsyncConnection, rowids: Sequence[int]) -> None:
    """SQLite: append the negative deltas of the events with these rowids (about to be deleted)."""
    if not rowids:
        return
    source = "events s WHERE s.rowid IN (SELECT value FROM json_each(:ids))"
    statement = sa.text(f"INSERT INTO {TABLE} ({_COLUMNS}) {SQLITE.deltas(source, sign=-1)}")
    await conn.execute(statement, {"ids": json_list(rowids)})


async def rebuild(conn: AsyncConnection, workspace_id: str | None = None) -> None:
    """Recompute the rollup from the events table (one workspace, or all): the migration's
    backfill, and a repair for rows written behind the server's back (e.g. a bulk load).
    Run it while nothing else writes to those events (it replaces the rows in two statements).
    """
    if workspace_id is None:
        await conn.execute(sa.text(f"DELETE FROM {TABLE}"))
        await conn.execute(sa.text(backfill_sql(is_postgres(conn))))
        return
    params = {"ws": workspace_id}
    await conn.execute(sa.text(f"DELETE FROM {TABLE} WHERE workspace_id = :ws"), params)
    source = "events s WHERE s.workspace_id = :ws"
    insert = f"INSERT INTO {TABLE} ({_COLUMNS}) {sql_for(conn).deltas(source, sign=1, pending=False)}"
    await conn.execute(sa.text(insert), params)


def backfill_sql(postgres: bool) -> str:
    """Every stored event, as rollup rows (one per key already: nothing pending)."""
    sql = PG if postgres else SQLITE
    return f"INSERT INTO {TABLE} ({_COLUMNS}) {sql.deltas('events s', sign=1, pending=False)}"


_PG_COMPACT = f"""
WITH due AS (
    SELECT DISTINCT workspace_id, hour FROM {TABLE} WHERE pending LIMIT :limit
), gone AS (
    DELETE FROM {TABLE} r USING due WHERE r.workspace_id = due.workspace_id AND r.hour = due.hour
    RETURNING r.workspace_id, r.hour, r.type, r.currency, r.tx_type, r.scale, r.count, r.amount
), folded AS (
    INSERT INTO {TABLE} ({_COLUMNS})
    SELECT workspace_id, hour, type, currency, tx_type, scale, sum(count), sum(amount), false
    FROM gone GROUP BY workspace_id, hour, type, currency, tx_type, scale HAVING sum(count) <> 0
)
SELECT count(*) FROM due
"""
_SQLITE_DUE = f"SELECT DISTINCT workspace_id, hour FROM {TABLE} WHERE pending AND rowid <= :top"
_SQLITE_FOLD = f"""
INSERT INTO {TABLE} ({_COLUMNS})
SELECT workspace_id, hour, type, currency, tx_type, scale, sum(count), decimal_sum(amount), 0
FROM {TABLE} WHERE rowid <= :top AND (workspace_id, hour) IN ({_SQLITE_DUE})
GROUP BY workspace_id, hour, type, currency, tx_type, scale HAVING sum(count) <> 0
"""
_SQLITE_DROP = f"DELETE FROM {TABLE} WHERE rowid <= :top AND (workspace_id, hour) IN ({_SQLITE_DUE})"


async def compact(conn: AsyncConnection, *, limit: int = 1000) -> int:
    """Fold pending deltas into one row per key, for up to ``limit`` (workspace, hour) pairs
    (SQLite: all of them); returns how many pairs. Idempotent: with nothing pending it
    changes nothing, and answers are the same before and after.

    PostgreSQL runs one statement under a transaction-level advisory lock: a compaction
    already running elsewhere makes this one return 0 at once.
    """
    if is_postgres(conn):
        locked = await conn.scalar(sa.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _COMPACT_LOCK})
        if not locked:
            return 0
        return int(await conn.scalar(sa.text(_PG_COMPACT), {"limit": limit}) or 0)
    top = await conn.scalar(sa.text(f"SELECT max(rowid) FROM {TABLE}"))
    if top is None:
        return 0
    due = int(await conn.scalar(sa.text(f"SELECT count(*) FROM ({_SQLITE_DUE})"), {"top": top}) or 0)
    if due:
        await conn.execute(sa.text(_SQLITE_FOLD), {"top": top})
        await conn.execute(sa.text(_SQLITE_DROP), {"top": top})
    return due


async def pending(conn: AsyncConnection) -> int:
    """Delta rows not yet folded (all workspaces)."""
    return int(await conn.scalar(sa.text(f"SELECT count(*) FROM {TABLE} WHERE pending")) or 0)
