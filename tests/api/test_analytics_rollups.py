"""Analytics from rollups (storage/rollups.py) answer exactly what the raw events say, on both databases.

The reference here reads the workspace's raw rows (events joined to live entities) and
computes the answer in Python: counts by type and UTC day (floor of the timestamp), and
exact decimal sums of decimal-string amounts, rendered with the largest scale among the
amounts that count. Every scenario compares the API with it over many windows (whole
hours, partial hours, day boundaries, a window inside one hour), with deltas pending,
after compaction, and after more changes on top of compacted rows.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from onehazel.domain.values import format_timestamp, parse_timestamp
from onehazel.jobs.worker import Worker
from onehazel.services.auth import CreatedOperator
from onehazel.services.container import Services
from onehazel.services.retention import RetentionService
from onehazel.storage import rollups
from onehazel.storage.tables import entities, event_rollups, events, workspaces
from tests.conftest import Api

HOUR = 3_600 * 1_000_000
DAY = 24 * HOUR
BASE = parse_timestamp("2026-03-01T00:00:00Z")
DECIMAL = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
WINDOWS = [
    (BASE - DAY, BASE + 4 * DAY),  # everything, whole days
    (BASE, BASE + DAY),  # one whole day
    (BASE + 1, BASE + HOUR),  # inside the first hour
    (BASE + 30 * 60_000_000, BASE + DAY + 30 * 60_000_000),  # partial hours at both edges
    (BASE + HOUR - 1, BASE + 2 * HOUR + 1),  # one whole hour and one microsecond each side
    (BASE + 23 * HOUR, BASE + 25 * HOUR),  # across midnight, whole hours
    (BASE + 23 * HOUR + 1, BASE + 25 * HOUR - 1),  # across midnight, partial hours only
    (BASE - 1, BASE + 1),  # two microseconds around midnight
    (BASE + 2 * DAY + 5, BASE + 3 * DAY + 7 * HOUR + 11),
]
EVENT_GROUPS = ["type", "day", "type,day"]
SUM_GROUPS = ["currency", "type", "currency,type"]


def uid() -> str:
    return uuid.uuid4().hex[:10]


def ts(offset: int) -> str:
    return format_timestamp(BASE + offset)


async def workspace_id(services: Services, operator: CreatedOperator) -> str:
    async with services.core.store.begin() as uow:
        query = sa.select(workspaces.c.id).where(
            workspaces.c.operator_id == operator.operator_id, workspaces.c.mode == "live"
        )
        return str((await uow.conn.execute(query)).scalar_one())


async def player(api: Api) -> str:
    external_id = f"p-{uid()}"
    created = await api.post(
        "/entities", json={"externalId": external_id, "type": "player", "attributes": {"country": "MT"}}
    )
    assert created.status_code == 201, created.text
    return external_id


def tx(
    external_id: str, at: int, amount: str, currency: str = "EUR", kind: str = "deposit"
) -> dict[str, Any]:
    return {
        "externalId": external_id,
        "type": "transaction",
        "eventId": f"e-{uid()}",
        "timestamp": ts(at),
        "data": {"type": kind, "amount": amount, "currency": currency},
    }


def session(external_id: str, at: int, pii: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"action": "login"}
    if pii:
        data["ip_address"] = "192.0.2.1"  # sealed: the full (transactional) single-write path
    return {
        "externalId": external_id,
        "type": "session",
        "eventId": f"e-{uid()}",
        "timestamp": ts(at),
        "data": data,
    }


async def post(api: Api, event: dict[str, Any], *, gone: bool = False) -> None:
    body = {k: v for k, v in event.items() if k != "externalId"}
    created = await api.post(f"/entities/{event['externalId']}/events", json=body)
    assert created.status_code in ((200, 201, 410) if gone else (200, 201)), created.text


async def drain(services: Services) -> None:
    worker = Worker(services)
    while await worker.run_once():
        pass


async def batch(api: Api, services: Services, items: list[dict[str, Any]]) -> dict[str, Any]:
    response = await api.post("/batch/events", json={"events": items})
    assert response.status_code == 202, response.text
    await drain(services)
    job = await api.get(f"/batch/jobs/{response.json()['jobId']}")
    return dict(job.json())


# --- the reference ------------------------------------------------------------------------------


async def live_rows(services: Services, ws: str) -> list[tuple[int, str, dict[str, Any]]]:
    query = (
        sa.select(events.c.ts, events.c.type, events.c.data)
        .select_from(
            events.join(
                entities,
                sa.and_(
                    entities.c.workspace_id == events.c.workspace_id,
                    entities.c.external_id == events.c.external_id,
                ),
            )
        )
        .where(events.c.workspace_id == ws, entities.c.deleted_at.is_(None))
    )
    async with services.core.store.begin() as uow:
        return [(row[0], row[1], row[2]) for row in await uow.conn.execute(query)]


def day_of(at: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=at // DAY)).isoformat()


def canonical(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(repr(sorted(r.items())) for r in rows)


def expected_events(
    rows: list[tuple[int, str, Any]], lo: int, hi: int, groups: list[str]
) -> list[dict[str, Any]]:
    counts: Counter[tuple[Any, ...]] = Counter()
    for at, type_, _ in rows:
        if lo <= at < hi:
            counts[tuple(type_ if g == "type" else day_of(at) for g in groups)] += 1
    return [{**dict(zip(groups, key, strict=True)), "count": n} for key, n in counts.items()]


def expected_sums(
    rows: list[tuple[int, str, Any]], lo: int, hi: int, groups: list[str]
) -> list[dict[str, Any]]:
    totals: dict[tuple[Any, ...], list[Any]] = {}
    for at, type_, data in rows:
        amount = data.get("amount")
        if (
            type_ != "transaction"
            or not lo <= at < hi
            or not isinstance(amount, str)
            or not DECIMAL.match(amount)
        ):
            continue
        key = tuple(data.get("currency") if g == "currency" else data.get("type") for g in groups)
        slot = totals.setdefault(key, [0, Decimal(0)])
        slot[0] += 1
        slot[1] += Decimal(amount)
    return [
        {
            **dict(zip(groups, key, strict=True)),
            "count": n,
            "sum": format(s.copy_abs() if s.is_zero() else s, "f"),
        }
        for key, (n, s) in totals.items()
    ]


async def assert_exact(api: Api, services: Services, ws: str) -> None:
    """Every window and grouping: the API (rollups) equals the reference (raw rows)."""
    rows = await live_rows(services, ws)
    for lo, hi in WINDOWS:
        window = {"from": format_timestamp(lo), "to": format_timestamp(hi)}
        for group in EVENT_GROUPS:
            answer = await api.get("/analytics/events", params={**window, "groupBy": group})
            assert answer.status_code == 200, answer.text
            expected = expected_events(rows, lo, hi, group.split(","))
            assert canonical(answer.json()["data"]) == canonical(expected), (window, group)
        only = await api.get("/analytics/events", params={**window, "groupBy": "day", "type": "session"})
        sessions = [(at, t, d) for at, t, d in rows if t == "session"]
        assert canonical(only.json()["data"]) == canonical(expected_events(sessions, lo, hi, ["day"]))
        for group in SUM_GROUPS:
            answer = await api.get("/analytics/transactions", params={**window, "groupBy": group})
            assert answer.status_code == 200, answer.text
            expected = expected_sums(rows, lo, hi, group.split(","))
            assert canonical(answer.json()["data"]) == canonical(expected), (window, group)


async def compact(services: Services) -> None:
    await services.analytics.compact()


async def rollup_rows(services: Services, ws: str) -> list[tuple[Any, ...]]:
    columns = [c for c in event_rollups.c if c.name != "amount"]
    query = sa.select(*columns, sa.cast(event_rollups.c.amount, sa.Text)).where(
        event_rollups.c.workspace_id == ws
    )
    async with services.core.store.begin() as uow:
        return sorted((tuple(r) for r in await uow.conn.execute(query)), key=repr)


# --- scenarios ----------------------------------------------------------------------------------


async def seed(api: Api, services: Services) -> tuple[str, str]:
    a, b = await player(api), await player(api)
    singles = [
        tx(a, 0, "10.00"),
        tx(a, -1, "1"),  # the last microsecond of the day before
        tx(b, 30 * 60_000_000, "2.5", kind="bet"),
        tx(b, HOUR - 1, "-1.234", kind="refund"),
        tx(a, HOUR, "0.30", currency="USD"),
        tx(a, 23 * HOUR + 59 * 60_000_000, "0.00000001", currency="BTC", kind="win"),
        tx(b, DAY, "7", currency="USD", kind="bet"),
        session(a, 5),
        session(b, DAY + 90 * 60_000_000, pii=True),
        session(a, 2 * DAY + 12 * HOUR),
        {**session(b, 3 * DAY), "type": "support", "data": {"channel": "chat"}},
    ]
    for event in singles:
        await post(api, event)
    items = [tx(a if n % 2 else b, n * 37 * 60_000_000 + n, f"{n}.{n % 10}", kind="win") for n in range(60)]
    items += [session(b, n * 53 * 60_000_000) for n in range(30)]
    job = await batch(api, services, items)
    assert job["succeeded"] == len(items), job
    return a, b


async def test_rollups_equal_raw_answers_pending_compacted_and_late(
    api: Api, services: Services, operator: CreatedOperator
) -> None:
    ws = await workspace_id(services, operator)
    a, b = await seed(api, services)
    await assert_exact(api, services, ws)  # every delta pending
    await compact(services)
    assert all(not row[7] for row in await rollup_rows(services, ws))
    await assert_exact(api, services, ws)
    # late (back-dated) events land in hours already compacted: single, sealed and batch paths
    await post(api, tx(a, 2 * HOUR + 3, "100.001", kind="adjustment"))
    await post(api, session(b, HOUR + 17, pii=True))
    await batch(api, services, [tx(b, 40 * 60_000_000, "0.5"), tx(a, -DAY + 1, "3.25", currency="GBP")])
    await assert_exact(api, services, ws)
    await compact(services)
    await assert_exact(api, services, ws)


async def test_compaction_is_idempotent(api: Api, services: Services, operator: CreatedOperator) -> None:
    ws = await workspace_id(services, operator)
    await seed(api, services)
    before = await rollup_rows(services, ws)
    assert any(row[7] for row in before)  # pending deltas
    await compact(services)
    once = await rollup_rows(services, ws)
    await compact(services)
    assert await rollup_rows(services, ws) == once
    async with services.core.store.begin() as uow:
        assert await rollups.compact(uow.conn) == 0
    # one row per key after compaction
    keys = [row[:6] for row in once]
    assert len(keys) == len(set(keys))
    await assert_exact(api, services, ws)


async def test_replays_count_once(api: Api, services: Services, operator: CreatedOperator) -> None:
    ws = await workspace_id(services, operator)
    p = await player(api)
    event = tx(p, HOUR, "5.00")
    await post(api, event)
    await post(api, event)  # a replay: 200, nothing new
    items = [tx(p, 2 * HOUR, "1.10"), tx(p, 3 * HOUR, "2.20")]
    await batch(api, services, items)
    job = await batch(api, services, [*items, event])  # every item a duplicate
    assert job["duplicates"] == 3, job
    job = await batch(api, services, [*items, tx(p, 4 * HOUR, "0.01")])  # some new, some not
    assert (job["duplicates"], job["succeeded"]) == (2, 1), job
    await assert_exact(api, services, ws)
    sums = await api.get("/analytics/transactions", params={"from": ts(0), "to": ts(DAY)})
    assert sums.json()["data"] == [{"currency": "EUR", "count": 4, "sum": "8.31"}]


async def test_a_stored_event_deep_in_a_new_chunk_counts_once(
    api: Api, services: Services, operator: CreatedOperator
) -> None:
    """The chunk's first eventIds are new, so it is written as new rows at once (PostgreSQL:
    one COPY straight into the table); a stored one further on fails that write, which is
    undone and redone without it: every new event stored and counted once, the old one not again."""
    ws = await workspace_id(services, operator)
    p = await player(api)
    stored = tx(p, HOUR, "5.00")
    await post(api, stored)
    new = [tx(p, n * 60_000_000, f"1.{n:02d}") for n in range(20)]
    job = await batch(api, services, [*new[:10], stored, *new[10:]])
    assert (job["succeeded"], job["duplicates"], job["failed"]) == (20, 1, 0), job
    listed = await api.get(f"/entities/{p}/events", params={"limit": 100})
    assert sorted(e["eventId"] for e in listed.json()["data"]) == sorted(e["eventId"] for e in [stored, *new])
    await assert_exact(api, services, ws)
    sums = await api.get("/analytics/transactions", params={"from": ts(0), "to": ts(DAY)})
    assert sums.json()["data"] == [{"currency": "EUR", "count": 21, "sum": "26.90"}]


async def test_a_deleted_entity_stops_counting_at_once_scale_included(
    api: Api, services: Services, operator: CreatedOperator
) -> None:
    ws = await workspace_id(services, operator)
    gone, kept = await player(api), await player(api)
    await post(api, tx(gone, HOUR, "1.234"))
    await post(api, tx(kept, HOUR, "1.5"))
    await post(api, session(gone, 2 * HOUR))
    await compact(services)
    window = {"from": ts(0), "to": ts(DAY)}
    sums = await api.get("/analytics/transactions", params=window)
    assert sums.json()["data"] == [{"currency": "EUR", "count": 2, "sum": "2.734"}]
    assert (await api.delete(f"/entities/{gone}")).status_code == 200
    sums = await api.get("/analytics/transactions", params=window)
    assert sums.json()["data"] == [{"currency": "EUR", "count": 1, "sum": "1.5"}]  # not "1.500"
    counts = await api.get("/analytics/events", params=window)
    assert counts.json()["data"] == [{"type": "transaction", "count": 1}]
    await assert_exact(api, services, ws)
    await compact(services)
    await assert_exact(api, services, ws)


async def test_purge_and_expiry_take_their_counts_with_them(
    api: Api, services: Services, operator: CreatedOperator
) -> None:
    ws = await workspace_id(services, operator)
    assert (await api.put("/settings", json={"retention": {"deletedEntitiesDays": 0}})).status_code == 200
    a, b = await seed(api, services)
    await compact(services)
    assert (await api.delete(f"/entities/{a}")).status_code == 200
    await RetentionService(services.core, chunk=7).sweep()  # erases a: its events, in chunks
    await assert_exact(api, services, ws)
    await compact(services)
    await assert_exact(api, services, ws)
    async with services.core.store.begin() as uow:
        left = (
            await uow.conn.execute(sa.select(sa.func.count()).where(events.c.workspace_id == ws))
        ).scalar_one()
    total = sum(row[6] for row in await rollup_rows(services, ws))
    assert total == left  # nothing of a's events is left in the rollups either
    # events past retention (March is long ago) expire, with their counts
    assert (await api.put("/settings", json={"retention": {"eventsDays": 30}})).status_code == 200
    await RetentionService(services.core, chunk=5).sweep()
    await assert_exact(api, services, ws)
    await compact(services)
    assert await rollup_rows(services, ws) == []


async def test_writes_deletes_and_compactions_at_once_stay_exact(
    api: Api, services: Services, operator: CreatedOperator
) -> None:
    ws = await workspace_id(services, operator)
    players = [await player(api) for _ in range(6)]
    stop = asyncio.Event()

    async def compactions() -> None:
        while not stop.is_set():
            await compact(services)
            await asyncio.sleep(0)

    async def writes(n: int) -> None:
        for i in range(15):
            await post(
                api,
                tx(players[(n + i) % 6], (n * 15 + i) * 11 * 60_000_000, f"{i}.{n}", kind="bet"),
                gone=True,
            )

    compactor = asyncio.ensure_future(compactions())
    deletes = [api.delete(f"/entities/{p}") for p in players[:2]]
    await asyncio.gather(*(writes(n) for n in range(4)), *deletes, return_exceptions=False)
    stop.set()
    await compactor
    await assert_exact(api, services, ws)
    await compact(services)
    await assert_exact(api, services, ws)


async def test_events_before_1970_fall_on_their_own_day(
    api: Api, services: Services, operator: CreatedOperator
) -> None:
    ws = await workspace_id(services, operator)
    p = await player(api)
    created = await api.post(
        f"/entities/{p}/events",
        json={"type": "session", "timestamp": "1969-12-31T23:59:59.500000Z", "data": {"action": "login"}},
    )
    if created.status_code != 201:
        pytest.skip(f"timestamps before 1970 are refused ({created.status_code})")
    window = {"from": "1969-12-31T00:00:00Z", "to": "1970-01-02T00:00:00Z", "groupBy": "day"}
    answer = await api.get("/analytics/events", params=window)
    assert answer.json()["data"] == [{"day": "1969-12-31", "count": 1}]
    await compact(services)
    assert (await api.get("/analytics/events", params=window)).json()["data"] == answer.json()["data"]
    partial = {"from": "1969-12-31T23:59:59Z", "to": "1970-01-01T00:00:01Z", "groupBy": "day"}
    assert (await api.get("/analytics/events", params=partial)).json()["data"] == [
        {"day": "1969-12-31", "count": 1}
    ]
    assert ws


async def test_rebuild_gives_the_same_rows(api: Api, services: Services, operator: CreatedOperator) -> None:
    ws = await workspace_id(services, operator)
    await seed(api, services)
    await compact(services)
    compacted = await rollup_rows(services, ws)
    async with services.core.store.begin() as uow:
        await rollups.rebuild(uow.conn, ws)
    assert await rollup_rows(services, ws) == compacted
    await assert_exact(api, services, ws)
