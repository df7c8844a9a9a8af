"""Events: an append-only log. There is deliberately no update or delete of one event.

The (workspace_id, event_id) primary key is the idempotency record, so the
dedup key can never be recorded for an event that did not commit.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage import rollups
from onehazel.storage.engine import is_postgres, upsert
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
_PG_INSERT_MANY = f"""
INSERT INTO events (workspace_id, {", ".join(_NAMES)})
SELECT $1, u.event_id, u.external_id, u.type, u.data::jsonb, u.pii::jsonb, u.fingerprint, u.timestamp,
       u.ts, u.received_at, u.seq
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::int8[], $10::int8[], $11::int8[]) AS u({", ".join(_NAMES)})
ON CONFLICT (workspace_id, event_id) DO NOTHING
RETURNING workspace_id, event_id, ts, type, data
"""
_PG_INSERT_MANY_IF_LIVE = f"""
INSERT INTO events (workspace_id, {", ".join(_NAMES)})
SELECT u.workspace_id, u.event_id, u.external_id, u.type, u.data::jsonb, u.pii::jsonb, u.fingerprint,
       u.timestamp, u.ts, u.received_at, u.seq
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::int8[], $10::int8[], $11::int8[]) AS u(workspace_id, {", ".join(_NAMES)})
JOIN entities e ON e.workspace_id = u.workspace_id AND e.external_id = u.external_id AND e.deleted_at IS NULL
ON CONFLICT (workspace_id, event_id) DO NOTHING
RETURNING workspace_id, event_id, ts, type, data
"""
# Each statement also appends the inserted rows' analytics deltas (storage/rollups.py).
_PG_INSERT_MANY = rollups.pg_counting(_PG_INSERT_MANY, "event_id")
_PG_INSERT_MANY_IF_LIVE = rollups.pg_counting(_PG_INSERT_MANY_IF_LIVE, "workspace_id, event_id")
_SQLITE_INSERT = (
    f"INSERT INTO events (workspace_id, {', '.join(_NAMES)}) VALUES ({', '.join('?' * (len(_NAMES) + 1))})"
)


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

    async def insert_many(self, workspace_id: str, records: list[EventRecord]) -> set[str]:
        """Append many events; returns the eventIds actually inserted.

        The ones missing from the result already existed (replays or conflicts).
        This is the batch hot path, so it talks to the driver directly inside the
        current transaction: PostgreSQL gets one prepared ``INSERT .. SELECT FROM
        unnest(arrays) .. ON CONFLICT DO NOTHING RETURNING`` (no per-chunk
        statement compilation, 11 parameters whatever the size); SQLite, under
        ``BEGIN IMMEDIATE`` (no concurrent writer), looks up existing ids and
        ``executemany``-inserts the rest.
        """
        if not records:
            return set()
        driver = (await self.conn.get_raw_connection()).driver_connection
        assert driver is not None
        if is_postgres(self.conn):
            if not driver.is_in_transaction():  # make sure SQLAlchemy's BEGIN was sent
                await self.conn.execute(sa.text("SELECT 1"))
            rows = await driver.fetch(_PG_INSERT_MANY, workspace_id, *_columns(records))
            return {row[0] for row in rows}
        taken = set((await self.fingerprints(workspace_id, [r.event_id for r in records])).keys())
        fresh = [r for r in records if r.event_id not in taken]
        await driver.executemany(_SQLITE_INSERT, [(workspace_id, *_values(r)) for r in fresh])
        await rollups.count_inserted(self.conn, workspace_id, [r.event_id for r in fresh])
        return {r.event_id for r in fresh}

    async def fingerprints(self, workspace_id: str, event_ids: list[str]) -> dict[str, str]:
        if not event_ids:
            return {}
        query = sa.select(events.c.event_id, events.c.fingerprint).where(
            events.c.workspace_id == workspace_id, events.c.event_id.in_(event_ids)
        )
        return {row[0]: row[1] for row in await self.conn.execute(query)}

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
