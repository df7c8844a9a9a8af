"""Analytics: counts and exact sums computed by the database, never row by row in Python.

Every query joins the live entity (``deleted_at IS NULL``), so soft-deleted
entities and their events never count, and reads only plain (non-PII) columns:
nothing is decrypted. The two dialects differ in three places, chosen to give
identical answers: the UTC day of ``ts``, reading a JSON attribute, and the
exact decimal sum (PostgreSQL ``numeric``; SQLite the ``decimal_sum`` aggregate
registered on each connection, see ``storage.engine``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage.engine import is_postgres
from onehazel.storage.tables import entities, events

# Only a plain decimal string is summed (what the API stores for a decimal field);
# a missing or malformed amount is neither counted nor summed.
_PG_DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"


class AnalyticsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.postgres = is_postgres(conn)

    def _day(self) -> sa.ColumnElement[str]:
        """The UTC date of ``ts``, computed from whole seconds (integer division) on both databases.

        A fractional epoch would be rounded (SQLite to milliseconds, PostgreSQL through a
        double), putting 23:59:59.9999995 on the next day.
        """
        seconds = events.c.ts // 1_000_000
        if self.postgres:
            return sa.func.to_char(sa.func.timezone("UTC", sa.func.to_timestamp(seconds)), "YYYY-MM-DD")
        return sa.func.strftime("%Y-%m-%d", seconds, "unixepoch")

    def _json_text(self, column: sa.Column[Any], name: str) -> sa.ColumnElement[Any]:
        """The JSON member ``name`` of ``column`` as text (``name`` is a bound value, never SQL)."""
        if self.postgres:
            return column.op("->>")(sa.bindparam(None, name, type_=sa.String))
        return sa.func.json_extract(column, sa.bindparam(None, f"$.{name}", type_=sa.String))

    def _live_events(self, workspace_id: str, from_ts: int, to_ts: int) -> sa.Select[Any]:
        return (
            sa.select()
            .select_from(
                events.join(
                    entities,
                    sa.and_(
                        entities.c.workspace_id == events.c.workspace_id,
                        entities.c.external_id == events.c.external_id,
                        entities.c.deleted_at.is_(None),
                    ),
                )
            )
            .where(events.c.workspace_id == workspace_id, events.c.ts >= from_ts, events.c.ts < to_ts)
        )

    async def event_counts(
        self, workspace_id: str, *, from_ts: int, to_ts: int, type_: str | None, group_by: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Counts of live entities' events in [from_ts, to_ts), grouped by ``type`` and/or ``day``."""
        keys = {"type": events.c.type, "day": self._day()}
        columns = [keys[name].label(name) for name in group_by]
        query = self._live_events(workspace_id, from_ts, to_ts).add_columns(
            *columns, sa.func.count().label("count")
        )
        if type_ is not None:
            query = query.where(events.c.type == type_)
        query = query.group_by(*columns).order_by(*columns)
        rows = (await self.conn.execute(query)).mappings().all()
        return [dict(row) for row in rows]

    async def transaction_sums(
        self, workspace_id: str, *, from_ts: int, to_ts: int, group_by: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Count and exact sum of ``amount`` of live entities' ``transaction`` events, by group."""
        amount = self._json_text(events.c.data, "amount")
        total: sa.ColumnElement[str]
        if self.postgres:
            summable = sa.and_(
                sa.func.jsonb_typeof(events.c.data.op("->")(sa.bindparam(None, "amount"))) == "string",
                amount.op("~")(sa.bindparam(None, _PG_DECIMAL)),
            )
            total = sa.cast(sa.func.sum(sa.cast(amount, sa.Numeric)), sa.Text)
        else:
            summable = sa.and_(
                sa.func.json_type(events.c.data, "$.amount") == "text",
                sa.func.onehazel_is_decimal(amount) == 1,
            )
            total = sa.func.decimal_sum(amount)
        keys = {
            "currency": self._json_text(events.c.data, "currency"),
            "type": self._json_text(events.c.data, "type"),
        }
        columns = [sa.cast(keys[name], sa.Text).label(name) for name in group_by]
        query = (
            self._live_events(workspace_id, from_ts, to_ts)
            .add_columns(*columns, sa.func.count().label("count"), total.label("sum"))
            .where(events.c.type == "transaction", summable)
            .group_by(*columns)
            .order_by(*(sa.nulls_first(c) if self.postgres else c for c in columns))
        )
        rows = (await self.conn.execute(query)).mappings().all()
        return [dict(row) for row in rows]

    async def entity_counts(self, workspace_id: str, *, group_by: str) -> list[tuple[Any, int]]:
        """Counts of live entities by ``type``, or by an attribute's value (as JSON text; NULL if absent)."""
        if group_by == "type":
            key: sa.ColumnElement[Any] = entities.c.type
        else:
            # The attribute as JSON text, so 1, "1" and true stay different groups on both databases;
            # a JSON null and a missing attribute are the same group.
            path = group_by if self.postgres else f"$.{group_by}"
            member = entities.c.attributes.op("->")(sa.bindparam(None, path, type_=sa.String))
            if self.postgres:
                key = sa.func.nullif(sa.cast(member, sa.Text), "null")
            else:
                key = sa.func.nullif(member, "null")
        query = (
            sa.select(key.label("value"), sa.func.count().label("count"))
            .where(entities.c.workspace_id == workspace_id, entities.c.deleted_at.is_(None))
            .group_by(key)
        )
        rows = (await self.conn.execute(query)).all()
        return [(value, count) for value, count in rows]
