"""Analytics: counts and exact sums computed by the database, never row by row in Python.

Events and transactions are answered from the rollups (``storage.rollups``) for the
whole UTC hours inside [from, to) and from the raw events for the partial hours at its
edges, in ONE statement (one snapshot) of ``UNION ALL`` branches:

* the rollup rows of the whole hours (every stored event, pending deltas included);
* minus the events of deleted entities in those hours (read raw: usually few, and this
  is what makes a soft delete count at once whatever the timing of concurrent writes);
* plus the events of live entities in the partial hours at the edges.

Each branch answers per group and, for sums, per amount scale; Python adds the branches
up with exact decimals and renders each sum with the largest scale among the amounts
that count, as ``numeric`` renders a sum of raw amounts. Only plain (non-PII) columns
are read: nothing is decrypted. Days are UTC days of ``ts`` by floor division, the
same on both databases.
"""

from __future__ import annotations

import decimal
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage.engine import is_postgres
from onehazel.storage.rollups import DAY, HOUR, TABLE, floor_div, sql_for
from onehazel.storage.tables import entities

_EXACT = decimal.Context(prec=1000, traps=[decimal.InvalidOperation, decimal.Inexact])
_EPOCH = date(1970, 1, 1)


def day_label(day: int) -> str:
    """The UTC date of day number ``day`` (days since 1970-01-01), as YYYY-MM-DD."""
    return (_EPOCH + timedelta(days=day)).isoformat()


def _render(total: decimal.Decimal) -> str:
    """A sum as PostgreSQL renders numeric: plain digits, its scale kept, never ``-0``."""
    return format(total.copy_abs() if total.is_zero() else total, "f")


class _Plan:
    """[from, to) split into whole hours (rollups) and partial edges (raw events)."""

    def __init__(self, from_ts: int, to_ts: int) -> None:
        first, last = -(-from_ts // HOUR), to_ts // HOUR
        self.whole: tuple[int, int] | None = (first, last) if first < last else None
        if self.whole is None:
            self.edges = [(from_ts, to_ts)]
        else:
            edges = ((from_ts, first * HOUR), (last * HOUR, to_ts))
            self.edges = [(a, b) for a, b in edges if a < b]


def _live(alive: bool) -> str:
    state = "IS NULL" if alive else "IS NOT NULL"
    return (
        "JOIN entities e ON e.workspace_id = s.workspace_id AND e.external_id = s.external_id "
        f"AND e.deleted_at {state}"
    )


class AnalyticsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.postgres = is_postgres(conn)
        self.sql = sql_for(conn)

    def _branches(
        self, plan: _Plan, params: dict[str, Any], rollup: str, raw: str, raw_where: str
    ) -> list[str]:
        """``rollup`` (over ``r``, for :h1..:h2) and ``raw`` (over events ``s`` joined to
        entities ``e``, with ``{sign}``, ``{join}`` and ``{range}`` to fill) as UNION branches."""
        branches = []
        if plan.whole is not None:
            params["h1"], params["h2"] = plan.whole
            params["t1"], params["t2"] = plan.whole[0] * HOUR, plan.whole[1] * HOUR
            branches.append(rollup)
            branches.append(
                raw.format(sign="-1", join=_live(False), where=f"{raw_where} AND s.ts >= :t1 AND s.ts < :t2")
            )
        for n, (a, b) in enumerate(plan.edges):
            params[f"a{n}"], params[f"b{n}"] = a, b
            where = f"{raw_where} AND s.ts >= :a{n} AND s.ts < :b{n}"
            branches.append(raw.format(sign="1", join=_live(True), where=where))
        return branches

    async def event_counts(
        self, workspace_id: str, *, from_ts: int, to_ts: int, type_: str | None, group_by: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Counts of live entities' events in [from_ts, to_ts), grouped by ``type`` and/or ``day``."""
        params: dict[str, Any] = {"ws": workspace_id}
        rollup_keys = {"type": "r.type", "day": floor_div("r.hour", 24)}
        raw_keys = {"type": "s.type", "day": floor_div("s.ts", DAY)}
        positions = ", ".join(str(n + 2) for n in range(len(group_by)))
        rollup_where = "r.workspace_id = :ws AND r.hour >= :h1 AND r.hour < :h2"
        raw_where = "s.workspace_id = :ws"
        if type_ is not None:
            params["type"] = type_
            rollup_where += " AND r.type = :type"
            raw_where += " AND s.type = :type"
        rollup = (
            f"SELECT 1 AS sign, {', '.join(rollup_keys[g] for g in group_by)}, "
            f"CAST(sum(r.count) AS BIGINT) AS n FROM {TABLE} r WHERE {rollup_where} GROUP BY {positions}"
        )
        raw = (
            f"SELECT {{sign}}, {', '.join(raw_keys[g] for g in group_by)}, count(*) "
            f"FROM events s {{join}} WHERE {{where}} GROUP BY {positions}"
        )
        branches = self._branches(_Plan(from_ts, to_ts), params, rollup, raw, raw_where)
        totals: dict[tuple[Any, ...], int] = defaultdict(int)
        for row in await self.conn.execute(sa.text(" UNION ALL ".join(branches)), params):
            totals[tuple(row[1:-1])] += int(row[0]) * int(row[-1])
        out = []
        for key, count in totals.items():
            if count > 0:
                values = [day_label(v) if g == "day" else v for g, v in zip(group_by, key, strict=True)]
                out.append({**dict(zip(group_by, values, strict=True)), "count": count})
        return out

    async def transaction_sums(
        self, workspace_id: str, *, from_ts: int, to_ts: int, group_by: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Count and exact sum of ``amount`` of live entities' ``transaction`` events, by group."""
        params: dict[str, Any] = {"ws": workspace_id}
        columns = {"currency": "currency", "type": "tx_type"}
        keys = ", ".join(f"k.{columns[g]}" for g in group_by)
        positions = ", ".join(str(n + 2) for n in range(len(group_by) + 1))
        sql = self.sql
        rollup = (
            f"SELECT 1 AS sign, {keys}, k.scale, CAST(sum(k.count) AS BIGINT) AS n, {sql.total('k.amount')} "
            f"FROM {TABLE} k WHERE k.workspace_id = :ws AND k.hour >= :h1 AND k.hour < :h2 "
            f"AND k.type = 'transaction' AND k.scale IS NOT NULL GROUP BY {positions}"
        )
        source = "events s {join} WHERE {where}"
        total = sql.total(sql.number("k.amount"))
        raw = (
            f"SELECT {{sign}}, {keys}, {sql.scale('k.amount')}, count(*), {total} "
            f"FROM ({sql.money(source)}) k WHERE k.amount IS NOT NULL GROUP BY {positions}"
        )
        raw_where = "s.workspace_id = :ws AND s.type = 'transaction'"
        branches = self._branches(_Plan(from_ts, to_ts), params, rollup, raw, raw_where)
        buckets: dict[tuple[Any, ...], list[Any]] = {}
        for row in await self.conn.execute(sa.text(" UNION ALL ".join(branches)), params):
            sign = int(row[0])
            slot = buckets.setdefault(tuple(row[1:-2]), [0, decimal.Decimal(0)])
            amount = decimal.Decimal(row[-1]) if row[-1] is not None else decimal.Decimal(0)
            slot[0] += sign * int(row[-2])
            slot[1] = _EXACT.add(slot[1], amount) if sign > 0 else _EXACT.subtract(slot[1], amount)
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for bucket, (count, total) in buckets.items():
            if count > 0:  # every event of the bucket subtracted: its scale no longer counts
                slot = groups.setdefault(bucket[:-1], [0, None])
                slot[0] += count
                slot[1] = total if slot[1] is None else _EXACT.add(slot[1], total)
        return [
            {**dict(zip(group_by, key, strict=True)), "count": count, "sum": _render(total)}
            for key, (count, total) in groups.items()
        ]

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
