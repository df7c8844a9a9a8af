"""The batch path's rollup deltas, computed in Python, equal what the database computes.

``rollups.python_deltas`` stands in for ``Sql.deltas`` on the batch hot path (the rows'
values are in memory, so the database is spared the per-row JSON and numeric work). Here
the same events are stored for real and the database's own delta query runs over them, on
SQLite and on PostgreSQL: every key, count and exact sum (as text) must match, for the
shapes the API stores and the odd ones it may store through ``any`` fields or old rows.
Where the two renderings could differ, ``python_deltas`` must decline (None).
"""

from __future__ import annotations

import random
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from onehazel.services.container import Services
from onehazel.storage import rollups
from onehazel.storage.engine import is_postgres
from onehazel.storage.tables import events

HOUR = 3_600 * 1_000_000
AMOUNTS = [
    "0",
    "0.00",
    "-0.00",
    "12.50",
    "-12.5",
    "007.10",
    "1",
    "99999999999999999999999999999999999999.99",  # 40 characters: beyond a double, beyond 28 digits
    "-0.000000001",
    "12345678901234567890.12",
]
NOT_SUMMABLE: list[Any] = ["", "1e5", "+1", ".5", "1.", "12,50", "abc", " 1", None, 5, True, [1], {"a": "1"}]


def random_events(rng: random.Random, count: int) -> list[tuple[str, int, dict[str, Any]]]:
    """(type, ts, data) of transactions and other events over a few hours either side of 1970."""
    rows = []
    for _ in range(count):
        ts = rng.choice([0, -1, 1, HOUR - 1, HOUR, -HOUR, -HOUR - 1, 1_790_000_000_000_000])
        ts += rng.randrange(-3 * HOUR, 3 * HOUR)
        if rng.random() < 0.25:
            rows.append((rng.choice(["session", "game_activity"]), ts, {"action": "login", "amount": "1.5"}))
            continue
        data: dict[str, Any] = {}
        if rng.random() < 0.9:
            data["amount"] = rng.choice(AMOUNTS if rng.random() < 0.8 else NOT_SUMMABLE)
        for member, choices in (
            ("currency", ["EUR", "GBP", "€uro", None]),
            ("type", ["deposit", "bet", None]),
        ):
            if rng.random() < 0.9:
                data[member] = rng.choice(choices)
        rows.append(("transaction", ts, data))
    return rows


async def database_deltas(services: Services, ws: str, rows: list[tuple[str, int, dict[str, Any]]]) -> Any:
    """Store the rows and run the database's own delta query over them."""
    async with services.core.store.begin() as uow:
        conn = uow.conn
        await conn.execute(
            events.insert(),
            [
                {
                    "workspace_id": ws,
                    "event_id": f"e{n}",
                    "external_id": "p1",
                    "type": type_,
                    "data": data,
                    "pii": None,
                    "fingerprint": "f",
                    "timestamp": None,
                    "ts": ts,
                    "received_at": 0,
                    "seq": n,
                }
                for n, (type_, ts, data) in enumerate(rows)
            ],
        )
        sql = rollups.sql_for(conn)
        query = sql.deltas("events s WHERE s.workspace_id = :ws", sign=1)
        found = (await conn.execute(sa.text(query), {"ws": ws})).all()
        postgres = is_postgres(conn)
    return ordered(
        (
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            None if r[7] is None else (format(r[7], "f") if postgres else str(r[7])),
        )
        for r in found
    )


def ordered(rows: Any) -> list[Any]:
    return sorted(rows, key=repr)  # keys hold None


def python_side(ws: str, rows: list[tuple[str, int, dict[str, Any]]], sign: int = 1) -> Any:
    deltas = rollups.python_deltas(
        ws, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], sign=sign
    )
    assert deltas is not None
    assert all(d[0] == ws for d in deltas)
    return ordered(
        (d[1], d[2], d[3], d[4], d[5], d[6], None if d[7] is None else format(d[7], "f")) for d in deltas
    )


@pytest.mark.parametrize("seed", range(6))
async def test_python_deltas_equal_the_databases(services: Services, seed: int) -> None:
    rng = random.Random(seed)
    rows = random_events(rng, rng.choice([1, 7, 60, 400]))
    ws = f"ws_deltas_{uuid.uuid4().hex[:12]}"
    assert python_side(ws, rows) == await database_deltas(services, ws, rows)


async def test_the_exact_sum_keeps_the_largest_scale_and_has_no_negative_zero(services: Services) -> None:
    rows = [
        ("transaction", 5, {"amount": a, "currency": "EUR", "type": "bet"}) for a in ("0.30", "0.2", "-0.5")
    ]
    ws = f"ws_deltas_{uuid.uuid4().hex[:12]}"
    expected = await database_deltas(services, ws, rows)
    assert python_side(ws, rows) == expected
    # Two scales, two keys; the scale-2 key sums 0.30 to "0.30", the scale-1 key 0.2 - 0.5 to "-0.3".
    assert {(d[4], d[6]) for d in expected} == {(2, "0.30"), (1, "-0.3")}
    zero = [("transaction", 5, {"amount": a, "currency": "EUR", "type": "bet"}) for a in ("0.50", "-0.50")]
    assert [d[6] for d in python_side(ws, zero)] == ["0.00"]


def test_negative_deltas_mirror_positive_ones() -> None:
    rows = random_events(random.Random(7), 200)
    plus, minus = python_side("ws", rows), python_side("ws", rows, sign=-1)
    assert [(d[:5], -d[5]) for d in plus] == [(d[:5], d[5]) for d in minus]
    assert [Decimal(d[6]) if d[6] else None for d in plus] == [
        Decimal(d[6]).copy_negate() if d[6] else None for d in minus
    ]


@pytest.mark.parametrize(
    "data",
    [
        {"amount": "1.5", "currency": 5, "type": "bet"},  # a number: each database renders it its own way
        {"amount": "1.5", "currency": "EUR", "type": {"k": "v"}},
        {"amount": "1.5", "currency": ["EUR"], "type": "bet"},
        {"amount": "1.5\n", "currency": "EUR", "type": "bet"},  # "$" before a newline: SQLite's check differs
        {"amount": "9" * 5000, "currency": "EUR", "type": "bet"},  # past int()'s 4300-digit limit
        {"amount": "1." + "0" * 950, "currency": "EUR", "type": "bet"},  # beyond the exact context
    ],
)
def test_python_deltas_decline_what_only_the_database_renders(data: dict[str, Any]) -> None:
    assert rollups.python_deltas("ws", ["transaction"], [0], [data]) is None
    # Not a transaction: those members are never read, so nothing to decline.
    assert rollups.python_deltas("ws", ["session"], [0], [data]) is not None


def test_non_string_members_of_unsummable_transactions_are_not_read() -> None:
    deltas = rollups.python_deltas("ws", ["transaction"], [0], [{"amount": 5, "currency": 5, "type": [1]}])
    assert deltas == [("ws", 0, "transaction", None, None, None, 1, None)]
    assert orjson.dumps(deltas)  # plain values only


@pytest.mark.parametrize("count", [1, 64, 165])
async def test_appended_deltas_are_stored_exactly_once_each(services: Services, count: int) -> None:
    """``rollups.append`` writes every delta row once, however many statements it takes
    (SQLite: blocks of 64 rows, then powers of two), amounts as exact text."""
    ws = f"ws_append_{uuid.uuid4().hex[:12]}"
    deltas = [
        (ws, n * HOUR, "transaction", "EUR", "bet", 2, n + 1, Decimal(f"{n}.{n % 100:02d}"))
        for n in range(count)
    ]
    async with services.core.store.begin() as uow:
        await rollups.append(uow.conn, deltas)
    async with services.core.store.begin() as uow:
        found = (
            await uow.conn.execute(
                sa.text(
                    "SELECT hour, type, currency, tx_type, scale, count, amount, pending"
                    " FROM event_rollups WHERE workspace_id = :ws"
                ),
                {"ws": ws},
            )
        ).all()
    assert sorted((r[0], r[5], Decimal(str(r[6])), bool(r[7])) for r in found) == [
        (d[1], d[6], d[7], True) for d in deltas
    ]
    assert {(r[1], r[2], r[3], r[4]) for r in found} == {("transaction", "EUR", "bet", 2)}
