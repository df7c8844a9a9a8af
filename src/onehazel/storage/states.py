"""States: one row per (workspace, entity, key); last writer wins by timestamp."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage.engine import upsert
from onehazel.storage.records import StateRecord
from onehazel.storage.tables import states

_COLUMNS = (states.c.key, states.c.value, states.c.timestamp, states.c.ts, states.c.updated_at)


class StateRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def put(self, workspace_id: str, external_id: str, record: StateRecord) -> bool:
        """Write the state unless the stored one has a later timestamp.

        One statement (INSERT .. ON CONFLICT DO UPDATE .. WHERE stored.ts <= new.ts),
        so concurrent writers cannot interleave a read and a write. Returns
        whether the write was applied; equal timestamps apply (the later arrival wins).
        """
        statement = upsert(self.conn, states).values(
            workspace_id=workspace_id,
            external_id=external_id,
            key=record.key,
            value=record.value,
            timestamp=record.timestamp,
            ts=record.ts,
            updated_at=record.updated_at,
        )
        excluded: Any = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=["workspace_id", "external_id", "key"],
            set_={
                "value": excluded.value,
                "timestamp": excluded.timestamp,
                "ts": excluded.ts,
                "updated_at": excluded.updated_at,
            },
            where=states.c.ts <= excluded.ts,
        )
        return (await self.conn.execute(statement)).rowcount == 1

    async def get(self, workspace_id: str, external_id: str, key: str) -> StateRecord | None:
        query = sa.select(*_COLUMNS).where(
            states.c.workspace_id == workspace_id,
            states.c.external_id == external_id,
            states.c.key == key,
        )
        row = (await self.conn.execute(query)).first()
        return StateRecord(**row._mapping) if row else None

    async def list(self, workspace_id: str, external_id: str) -> list[StateRecord]:
        query = (
            sa.select(*_COLUMNS)
            .where(states.c.workspace_id == workspace_id, states.c.external_id == external_id)
            .order_by(states.c.key)
        )
        return [StateRecord(**row._mapping) for row in await self.conn.execute(query)]
