"""Analytics: aggregate counts and exact sums over a workspace's live data, never PII.

The database does the aggregation (``storage.analytics``); this layer checks the
parameters and shapes the answer.

* Range (``from`` inclusive, ``to`` exclusive, over the events' timestamps): ``to``
  defaults to now and ``from`` to 30 days before ``to``; a range longer than
  ``MAX_RANGE_DAYS`` or not moving forward is a 422, so one request can never scan
  years of events.
* Events and transactions are read from the rollups (``storage.rollups``) for whole
  hours and from the raw events at the edges; ``compact`` folds the rollups' pending
  deltas (the server runs it every ONEHAZEL_ANALYTICS_COMPACT_SECONDS).
* ``groupBy`` on entities accepts ``type`` or an attribute name (letters, digits and
  ``_``); any PII field of a template is refused with ``pii_not_aggregatable``: its
  values are stored encrypted and must never leave in aggregate form either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from onehazel.domain.errors import Detail, ValidationFailed
from onehazel.domain.templates import BUILT_IN
from onehazel.domain.values import format_timestamp
from onehazel.domain.workspace import Workspace
from onehazel.services.core import Core
from onehazel.storage import rollups

if TYPE_CHECKING:
    from onehazel.services.container import Services

log = logging.getLogger("onehazel.analytics")

DAY = 86_400 * 1_000_000
DEFAULT_RANGE_DAYS = 30
MAX_RANGE_DAYS = 366
EVENT_GROUPS = ("type", "day")
TRANSACTION_GROUPS = ("currency", "type")
_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def pii_field_names() -> frozenset[str]:
    """Every entity PII field of every template: never a grouping key, whatever the workspace's template."""
    return frozenset(
        name
        for template in BUILT_IN.values()
        for kind in template.entity_types.values()
        for name in kind.pii_fields
    )


def _invalid(path: str, code: str, message: str) -> ValidationFailed:
    return ValidationFailed.of([Detail(path, code, message)])


def parse_group_by(raw: str, allowed: Sequence[str]) -> list[str]:
    names = raw.split(",")
    if any(name not in allowed for name in names) or len(set(names)) != len(names):
        choices = ", ".join(allowed)
        raise _invalid("groupBy", "invalid_group_by", f"groupBy: a comma-separated subset of {choices}")
    return [name for name in allowed if name in names]


def check_range(from_ts: int | None, to_ts: int | None) -> None:
    """422 ``invalid_range`` unless ``from`` is before ``to`` (either may be absent); the
    events listing checks its range with this too."""
    if from_ts is not None and to_ts is not None and from_ts >= to_ts:
        raise _invalid("from", "invalid_range", "from must be before to")


def resolve_range(now: int, from_ts: int | None, to_ts: int | None) -> tuple[int, int]:
    to = to_ts if to_ts is not None else now
    start = from_ts if from_ts is not None else to - DEFAULT_RANGE_DAYS * DAY
    check_range(start, to)
    if to - start > MAX_RANGE_DAYS * DAY:
        raise _invalid("to", "range_too_large", f"the range from..to is at most {MAX_RANGE_DAYS} days")
    return start, to


def _sorted(rows: list[dict[str, Any]], groups: Sequence[str]) -> list[dict[str, Any]]:
    """Groups in one order on both databases (code-point order, absent values first)."""

    def key(row: dict[str, Any]) -> list[tuple[bool, bytes]]:
        return [(row[g] is not None, orjson.dumps(row[g])) for g in groups]

    return sorted(rows, key=key)


class AnalyticsService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def events(
        self,
        ws: Workspace,
        *,
        from_ts: int | None,
        to_ts: int | None,
        type_: str | None,
        group_by: str,
    ) -> dict[str, Any]:
        groups = parse_group_by(group_by, EVENT_GROUPS)
        start, end = resolve_range(self.core.clock(), from_ts, to_ts)
        async with self.core.store.begin() as uow:
            rows = await uow.analytics.event_counts(
                ws.id, from_ts=start, to_ts=end, type_=type_, group_by=groups
            )
        return {"data": _sorted(rows, groups), "from": format_timestamp(start), "to": format_timestamp(end)}

    async def transactions(
        self, ws: Workspace, *, from_ts: int | None, to_ts: int | None, group_by: str
    ) -> dict[str, Any]:
        groups = parse_group_by(group_by, TRANSACTION_GROUPS)
        start, end = resolve_range(self.core.clock(), from_ts, to_ts)
        async with self.core.store.begin() as uow:
            rows = await uow.analytics.transaction_sums(ws.id, from_ts=start, to_ts=end, group_by=groups)
        return {"data": _sorted(rows, groups), "from": format_timestamp(start), "to": format_timestamp(end)}

    async def entities(self, ws: Workspace, *, group_by: str) -> dict[str, Any]:
        if group_by != "type":
            if _ATTRIBUTE.match(group_by) is None or group_by == "count":
                raise _invalid(
                    "groupBy",
                    "invalid_group_by",
                    "groupBy: type, or an attribute name (letters, digits and _, at most 64)",
                )
            if group_by in pii_field_names():
                raise _invalid(
                    "groupBy",
                    "pii_not_aggregatable",
                    f"groupBy: {group_by} is a PII field; PII is never aggregated",
                )
        async with self.core.store.begin() as uow:
            rows = await uow.analytics.entity_counts(ws.id, group_by=group_by)
        if group_by == "type":
            data = [{"type": value, "count": count} for value, count in rows]
        else:
            data = [
                {group_by: None if value is None else orjson.loads(value), "count": count}
                for value, count in rows
            ]
        return {"data": _sorted(data, [group_by])}

    async def compact(self, *, limit: int = 1000) -> int:
        """Fold every pending analytics delta (a transaction per ``limit`` workspace-hours);
        returns how many workspace-hours were folded."""
        total = 0
        while True:
            async with self.core.store.begin() as uow:
                folded = await rollups.compact(uow.conn, limit=limit)
            total += folded
            if folded < limit:
                return total


def start_compaction_in_background(services: Services, interval: float) -> Callable[[], Awaitable[None]]:
    """Compact every ``interval`` seconds on the running loop; returns an async ``stop()``."""
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set():
                return
            try:
                await services.analytics.compact()
            except Exception:
                log.exception("analytics compaction failed; retrying at the next interval")

    task = asyncio.ensure_future(loop())

    async def stop_all() -> None:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)

    return stop_all
