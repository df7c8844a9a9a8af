"""Per-operator rate limits (requests a second per traffic class); a missing value means the default."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage.engine import upsert
from onehazel.storage.tables import rate_limits

CLASSES = ("writes", "batches", "reads")


class RateLimitRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, operator_id: str) -> dict[str, int]:
        """The classes this operator has its own rate for, and those rates."""
        columns = [rate_limits.c[name] for name in CLASSES]
        row = (
            await self.conn.execute(sa.select(*columns).where(rate_limits.c.operator_id == operator_id))
        ).first()
        if row is None:
            return {}
        return {name: int(value) for name, value in zip(CLASSES, row, strict=True) if value is not None}

    async def put(self, operator_id: str, rates: dict[str, int | None], *, now: int) -> None:
        """Set (or, with None, clear) the rates named in ``rates``; others stay as they were."""
        values = {name: rates[name] for name in CLASSES if name in rates}
        statement = upsert(self.conn, rate_limits).values(operator_id=operator_id, updated_at=now, **values)
        statement = statement.on_conflict_do_update(
            index_elements=[rate_limits.c.operator_id], set_={"updated_at": now, **values}
        )
        await self.conn.execute(statement)
