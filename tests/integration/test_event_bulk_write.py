"""The batch path's bulk write stores every value exactly as given, on SQLite and PostgreSQL.

``EventRepository.insert_many`` hands the database a whole chunk at once: on PostgreSQL a
binary COPY straight into the table (or, when an eventId is stored already, into a staging
table and on with ``INSERT .. ON CONFLICT DO NOTHING``), on SQLite multi-row INSERT
statements (or executemany, where SQLite's parameter limit is low). Here random rows full of
awkward text (quotes, backslashes, control characters, U+2028, astral characters, every
length) and extreme integers go in, and the stored rows must read back identical; rows
already stored are left as they were and reported as not inserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from onehazel.services.container import Services
from onehazel.storage import events as event_storage
from onehazel.storage import rollups
from onehazel.storage.events import EventColumns
from onehazel.storage.tables import events

AWKWARD = [
    '"',
    "\\",
    "\\u0041",
    "\n",
    "\r\t\b\f",
    "\x01",
    "\x1f",
    "\x7f",
    "\u2028\u2029",
    "é",
    "€",
    "😀",
    "𝄞",
    "'",
    "%",
    "$[0]",
    " ",
    "",
    "a" * 300,
]
ID_CHARS = ["a", "Z", "0", "-", "_", ".", ":", "/", " ", "é", "😀", '"', "\\", "'", "€"]


def _text(rng: random.Random, pieces: int = 6) -> str:
    return "".join(rng.choice(AWKWARD) for _ in range(rng.randrange(0, pieces)))


def _short(rng: random.Random) -> str:
    """At most 24 characters (``type`` and ``timestamp`` hold 64, ``fingerprint`` 100)."""
    return _text(rng)[:24]


def _identifier(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ID_CHARS) for _ in range(rng.randrange(1, 12))) + f"#{n}"


def random_rows(rng: random.Random, count: int, prefix: str) -> EventColumns:
    rows = EventColumns()
    for n in range(count):
        data = {_text(rng): _text(rng), "amount": _text(rng), "n": rng.choice([0, -1, 2**63 - 1, -(2**63)])}
        rows.event_id.append(f"{prefix}{_identifier(rng, n)}")
        rows.external_id.append(_identifier(rng, n))
        rows.type.append(rng.choice(["transaction", "session", _short(rng) or "x"]))
        rows.data.append(orjson.dumps(data).decode())
        rows.pii.append(orjson.dumps({"email": _text(rng)}).decode() if rng.random() < 0.3 else None)
        rows.fingerprint.append("s1." + _short(rng))
        rows.timestamp.append(rng.choice([None, "2026-11-27T10:00:00Z", _short(rng)]))
        rows.ts.append(rng.choice([0, -1, 2**62, -(2**62), rng.randrange(-(10**15), 10**15)]))
        rows.received_at.append(rng.randrange(0, 2**62))
        rows.seq.append(10_000 + n)
    return rows


async def stored_rows(services: Services, ws: str) -> list[tuple[object, ...]]:
    columns = [events.c[name] for name in ("event_id", "external_id", "type", "fingerprint", "timestamp")]
    columns += [events.c[name] for name in ("ts", "received_at", "seq", "data", "pii")]
    async with services.core.store.begin() as uow:
        result = await uow.conn.execute(
            sa.select(*columns).where(events.c.workspace_id == ws).order_by(events.c.seq)
        )
        return [tuple(row) for row in result]


async def counted(services: Services, ws: str, *, rebuilt: bool = False) -> dict[tuple[Any, ...], Any]:
    """The workspace's analytics counts per rollup key, summed over its delta rows; ``rebuilt``:
    as the rollup rebuilt from the stored events reads (in a transaction rolled back)."""
    query = sa.text(
        "SELECT hour, type, currency, tx_type, scale, count, amount"
        " FROM event_rollups WHERE workspace_id = :ws"
    )
    async with services.core.store.rehearse() as uow:
        if rebuilt:
            await rollups.rebuild(uow.conn, ws)
        found = (await uow.conn.execute(query, {"ws": ws})).all()
    totals: dict[tuple[Any, ...], list[Any]] = {}
    for *key, count, amount in found:
        total = totals.setdefault(tuple(key), [0, None])
        total[0] += count
        if amount is not None:
            total[1] = (total[1] or Decimal(0)) + Decimal(str(amount))
    return {key: tuple(total) for key, total in totals.items() if total[0]}


def expected_rows(rows: EventColumns) -> list[tuple[object, ...]]:
    return sorted(
        (
            (e, x, t, f, ts_text, ts, r, s, orjson.loads(d), None if p is None else orjson.loads(p))
            for e, x, t, d, p, f, ts_text, ts, r, s in zip(*rows.columns(), strict=True)
        ),
        key=lambda row: row[7],  # seq
    )


# Each database with each of its ways to write a chunk (PostgreSQL has one).
WRITES = pytest.mark.parametrize(
    ("backend", "write_mode"),
    [
        ("sqlite", "multi-row"),
        ("sqlite", "small statements"),
        ("sqlite", "executemany"),
        ("postgres", "copy"),
    ],
    indirect=["write_mode"],
)


@pytest.fixture
def write_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "small statements":  # several statements per chunk, and a shorter last one
        monkeypatch.setattr(event_storage, "_SQLITE_ROWS", 7)
    if request.param == "executemany":
        monkeypatch.setattr(event_storage, "_sqlite_multirow", False)
    return str(request.param)


@WRITES
@pytest.mark.parametrize("seed", [1, 2])
async def test_every_value_is_stored_exactly(services: Services, seed: int, write_mode: str) -> None:
    rng = random.Random(seed)
    ws = f"ws_bulk_{uuid.uuid4().hex[:12]}"
    rows = random_rows(rng, 400, "e")
    calls: list[str] = []
    async with services.core.store.begin() as uow:
        inserted = await uow.events.insert_many(ws, rows, started=lambda: calls.append("started"))
    assert inserted == set(rows.event_id)
    assert calls == ["started"]  # told once that the long part of the write began
    assert await stored_rows(services, ws) == expected_rows(rows)
    assert await counted(services, ws) == await counted(services, ws, rebuilt=True)


@WRITES
async def test_rows_already_stored_are_kept_and_not_reported(services: Services, write_mode: str) -> None:
    rng = random.Random(7)
    ws = f"ws_bulk_{uuid.uuid4().hex[:12]}"
    first = random_rows(rng, 50, "a")
    async with services.core.store.begin() as uow:
        assert await uow.events.insert_many(ws, first) == set(first.event_id)

    # The same eventIds again with other values, beside new ones: only the new ones go in.
    again = random_rows(rng, 50, "a")
    again.event_id[:] = first.event_id
    new = random_rows(rng, 30, "b")
    mixed = EventColumns(*(old + extra for old, extra in zip(again.columns(), new.columns(), strict=True)))
    mixed.seq = [20_000 + n for n in range(len(mixed.event_id))]
    calls: list[str] = []
    async with services.core.store.begin() as uow:
        inserted = await uow.events.insert_many(ws, mixed, started=lambda: calls.append("started"))
    assert inserted == set(new.event_id)
    assert calls == ["started"]  # once, also when PostgreSQL's COPY was undone and redone another way
    new.seq = mixed.seq[len(first.event_id) :]
    assert await stored_rows(services, ws) == sorted(
        expected_rows(first) + expected_rows(new), key=lambda row: row[7]
    )
    assert await counted(services, ws) == await counted(services, ws, rebuilt=True)


class _Abandoned(Exception):
    """Raised to roll the holding transaction back."""


@pytest.mark.parametrize("backend", ["postgres"])  # SQLite has one writer at a time: no race
@pytest.mark.parametrize("holder", ["commits", "rolls back"])
async def test_a_row_another_transaction_holds_is_waited_for(services: Services, holder: str) -> None:
    """A single write holds one of the chunk's eventIds, not yet committed: the chunk's COPY
    waits for it. When it commits, the COPY fails and the chunk goes in without that row;
    when it rolls back, the whole chunk goes in."""
    rng = random.Random(13)
    ws = f"ws_bulk_{uuid.uuid4().hex[:12]}"
    chunk = random_rows(rng, 40, "c")
    single = random_rows(rng, 1, "s")
    single.event_id[:] = [chunk.event_id[25]]
    single.seq = [1]

    async def write_chunk() -> set[str]:
        async with services.core.store.begin() as other:
            return await other.events.insert_many(ws, chunk)

    with contextlib.suppress(_Abandoned):
        async with services.core.store.begin() as uow:
            assert await uow.events.insert_many(ws, single) == set(single.event_id)
            racing = asyncio.ensure_future(write_chunk())
            await asyncio.sleep(0.3)
            assert not racing.done()  # waiting for this transaction's row
            if holder == "rolls back":
                raise _Abandoned
    inserted = await asyncio.wait_for(racing, timeout=30)
    if holder == "rolls back":
        assert inserted == set(chunk.event_id)
        assert await stored_rows(services, ws) == expected_rows(chunk)
    else:
        assert inserted == set(chunk.event_id) - set(single.event_id)
        rest = EventColumns(*([v for n, v in enumerate(column) if n != 25] for column in chunk.columns()))
        assert await stored_rows(services, ws) == sorted(
            expected_rows(single) + expected_rows(rest), key=lambda row: row[7]
        )
    assert await counted(services, ws) == await counted(services, ws, rebuilt=True)


@pytest.mark.parametrize("backend", ["sqlite"])  # SQLite's INSERT OR IGNORE: no PostgreSQL case
@pytest.mark.parametrize("column", ["external_id", "data", "fingerprint", "ts"])
async def test_sqlite_refuses_a_row_missing_a_required_value_instead_of_skipping_it(
    services: Services, column: str
) -> None:
    """SQLite's bulk insert is INSERT OR IGNORE, which would silently skip a row with a NULL
    where the table requires a value: such a row fails the whole chunk, and nothing is written."""
    rng = random.Random(5)
    ws = f"ws_bulk_{uuid.uuid4().hex[:12]}"
    rows = random_rows(rng, 20, "n")
    getattr(rows, column)[13] = None
    with pytest.raises(ValueError, match="no value where the table requires one"):
        async with services.core.store.begin() as uow:
            await uow.events.insert_many(ws, rows)
    assert await stored_rows(services, ws) == []


@pytest.mark.parametrize("backend", ["sqlite"])  # SQLite's own limit: no PostgreSQL case
async def test_a_statement_over_sqlites_parameter_limit_falls_back_to_executemany(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SQLite whose parameter limit is lower than a multi-row statement needs: the first
    statement is refused, nothing is written by it, and executemany writes the chunk."""
    monkeypatch.setattr(event_storage, "_sqlite_multirow", True)
    rng = random.Random(11)
    ws = f"ws_bulk_{uuid.uuid4().hex[:12]}"
    rows = random_rows(rng, 300, "e")
    async with services.core.store.begin() as uow:
        driver = (await uow.conn.get_raw_connection()).driver_connection
        assert driver is not None
        limit = sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER
        old = await driver._execute(driver._conn.setlimit, limit, 999)  # as a build with 999 has
        try:
            assert await uow.events.insert_many(ws, rows) == set(rows.event_id)
        finally:
            await driver._execute(driver._conn.setlimit, limit, old)
    assert await stored_rows(services, ws) == expected_rows(rows)
    assert event_storage._sqlite_multirow is False  # remembered: later chunks go straight there


def test_sqlite_statements_come_in_a_dozen_shapes() -> None:
    """Every prepared shape stays cached by the connection (~1 KB per row): whatever the
    chunk sizes, only the full block and the powers of two below it are ever used."""
    shapes: set[int] = set()
    for count in range(0, 5001):
        sizes = list(event_storage._sqlite_statement_sizes(count))
        assert sum(sizes) == count
        shapes.update(sizes)
    block = event_storage._SQLITE_ROWS
    assert shapes <= {block} | {1 << bit for bit in range(block.bit_length()) if 1 << bit < block}
    assert len(shapes) <= 11
