"""Analytics over a month of data (100,000 players, 10,000,000 events) on PostgreSQL.

Run by hand (from the repository root)::

    .venv/bin/python bench/analytics.py [--players 100000] [--events 10000000] [--days 30]
        [--repeat 5] [--deletes 300] [--keep] [--reuse NAME]
        [--database-url postgresql://postgres@127.0.0.1:5432/test]

One run:

1. creates a fresh database ``onehazel_analytics_<random>``, runs ``onehazel migrate`` and
   ``onehazel operators create``, starts the real ``onehazel serve`` (fresh master key; its
   retention sweep off), chooses ``tpl_igaming`` and creates ``--players`` players through
   ``/batch/entities`` (every tenth with an e-mail, i.e. encrypted PII; countries, currencies,
   VIP flags and segments as plain attributes);
2. loads ``--events`` events spread over the ``--days`` whole UTC days before today with
   ``COPY`` straight into the server's ``events`` table, in the shape the server writes them:
   the data as the template validation leaves it (checked on samples), the client timestamp
   string, real fingerprints under the workspace's own secret, no PII. The mix: transactions
   (deposit/bet/win/withdrawal/bonus/refund, decimal-string amounts, EUR/GBP/USD/CAD with 2
   decimals and BTC with 8), game rounds, sessions, bonuses, support contacts, blocks. The
   secondary indexes are dropped for the load and rebuilt after it (the rows are what counts);
   if the server keeps analytics rollups, they are rebuilt for the loaded rows with the server's
   own code, as if the server had written them;
3. writes 1,000 single events and one 5,000-event batch through the API, back-dated over the
   month, then soft-deletes ``--deletes`` players through ``DELETE /entities/{id}`` (their events
   must stop counting), then ``VACUUM ANALYZE``;
4. times every aggregate through HTTP, ``--repeat`` times after one warm-up pass (median and
   max): events by type, by day and by type+day; transactions by currency, by type and by both,
   each over the whole month and over one day (targets < 1 s and < 100 ms); entity counts by
   type and by ``country`` (no range; target < 1 s); and, for information, the default range
   (the last 30 days up to now, partial days at both edges);
5. checks every answer over the month and the day against the figures the loader tallied in
   Python while generating the rows (the deleted players' events left out) and the transaction
   sums by currency over the month against an independent SQL query.

``--keep`` keeps the database (and writes its keys to ``/tmp/onehazel-analytics-<name>.json``);
``--reuse NAME`` measures a kept database again without loading (after a code change: the
server migrates nothing itself, so run ``onehazel migrate`` on it first if the schema moved).
Nothing is asserted: targets are printed beside the figures. Other work on the machine moves
them; compare runs made back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import single_writes as sw  # noqa: E402  (a sibling script, not a package)

DAY = 86_400 * 1_000_000
MONTH_TARGET_S = 1.0
DAY_TARGET_S = 0.1
ENTITY_BATCH = 1000
COPY_CHUNK = 200_000
API_SINGLE = 1000
API_BATCH = 5000
COUNTRIES = ("MT", "DE", "GB", "SE", "FI", "NO", "CA", "IE", "NL", "AT")
SEGMENTS = ("casual", "regular", "high_roller", "dormant")
FIAT = ("EUR", "GBP", "USD", "CAD")
SCALE = {"EUR": 2, "GBP": 2, "USD": 2, "CAD": 2, "BTC": 8}
TX_TYPES = ("deposit", "bet", "bet", "bet", "win", "win", "withdrawal", "bonus", "refund")
METHODS = ("card", "bank_transfer", "e_wallet")
# (event type, share in percent)
MIX = (
    ("transaction", 40),
    ("game_activity", 35),
    ("session", 15),
    ("bonus", 5),
    ("support", 3),
    ("block", 2),
)
COLUMNS = (
    "workspace_id",
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


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def player_id(n: int) -> str:
    return f"player-{n:06d}"


def player_currency(n: int) -> str:
    return "BTC" if n % 50 == 7 else FIAT[n % 4]


def day_label(day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


def timestamp_text(ts: int) -> str:
    seconds, micros = divmod(ts, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


# -- what was written, tallied while writing ---------------------------------------------------------


@dataclass
class Tally:
    """Expected figures: events of players that stay live, by (day, type) and (day, currency, tx type)."""

    deleted: set[str]
    events: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))
    units: dict[tuple[int, str, str], list[int]] = field(default_factory=dict)

    def add(self, external_id: str, ts: int, type_: str, data: dict[str, Any]) -> None:
        if external_id in self.deleted:
            return
        day = ts // DAY
        self.events[(day, type_)] += 1
        if type_ == "transaction":
            currency = data["currency"]
            whole, _, frac = data["amount"].partition(".")
            assert len(frac) == SCALE[currency]
            amount = int(whole + frac)
            slot = self.units.setdefault((day, currency, data["type"]), [0, 0])
            slot[0] += 1
            slot[1] += amount

    def to_json(self) -> dict[str, Any]:
        return {
            "events": [[d, t, c] for (d, t), c in self.events.items()],
            "units": [[d, c, t, n, u] for (d, c, t), (n, u) in self.units.items()],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Tally:
        tally = cls(deleted=set())
        for d, t, c in raw["events"]:
            tally.events[(d, t)] = c
        for d, c, t, n, u in raw["units"]:
            tally.units[(d, c, t)] = [n, u]
        return tally

    def expected_events(self, days: range, groups: list[str]) -> list[dict[str, Any]]:
        out: dict[tuple[Any, ...], int] = defaultdict(int)
        for (day, type_), count in self.events.items():
            if day in days:
                key = tuple(type_ if g == "type" else day_label(day) for g in groups)
                out[key] += count
        return [dict(zip([*groups, "count"], [*k, c], strict=True)) for k, c in sorted(out.items())]

    def expected_transactions(self, days: range, groups: list[str]) -> list[dict[str, Any]]:
        out: dict[tuple[str, ...], list[Any]] = {}
        for (day, currency, tx_type), (count, units) in self.units.items():
            if day in days:
                key = tuple(currency if g == "currency" else tx_type for g in groups)
                slot = out.setdefault(key, [0, Decimal(0)])
                slot[0] += count
                slot[1] += Decimal(units).scaleb(-SCALE[currency])
        return [
            dict(zip([*groups, "count", "sum"], [*k, n, format(s, "f")], strict=True))
            for k, (n, s) in sorted(out.items())
        ]


# -- loading ---------------------------------------------------------------------------------------


def event_data(n: int, type_: str, player: int, rng: random.Random) -> dict[str, Any]:
    """The event's data as the template validation leaves it (no PII members)."""
    if type_ == "transaction":
        currency = player_currency(player)
        if currency == "BTC":
            amount = f"0.{rng.randrange(1, 10**7):08d}"
        else:
            amount = f"{rng.randrange(1, 500)}.{rng.randrange(100):02d}"
        tx_type = TX_TYPES[rng.randrange(len(TX_TYPES))]
        if tx_type == "refund" and n % 3 == 0:
            amount = "-" + amount
        return {
            "type": tx_type,
            "amount": amount,
            "currency": currency,
            "method": METHODS[n % 3],
            "status": "completed",
            "transaction_id": f"tx-{n}",
        }
    if type_ == "game_activity":
        return {
            "game_id": f"game-{n % 400}",
            "bet_amount": f"{rng.randrange(1, 50)}.00",
            "win_amount": f"{rng.randrange(0, 80)}.00",
            "currency": player_currency(player),
            "round_id": f"r-{n}",
            "provider": ("netent", "pragmatic", "evolution")[n % 3],
        }
    if type_ == "session":
        return {"action": ("login", "logout", "heartbeat")[n % 3], "device": ("mobile", "desktop")[n % 2]}
    if type_ == "bonus":
        return {"bonus_id": f"b-{n % 50}", "action": "granted", "amount": "10.00", "currency": "EUR"}
    if type_ == "support":
        return {"channel": ("chat", "mail")[n % 2], "topic": "payments", "ticket_id": f"t-{n}"}
    return {"reason": "self_exclusion", "action": ("placed", "lifted")[n % 2]}


def pick_type(n: int) -> str:
    slot = (n * 37) % 100
    for type_, share in MIX:
        if slot < share:
            return type_
        slot -= share
    return MIX[-1][0]


class EventSource:
    """The COPY rows for events ``first..last``, in timestamp order over [start, start + days)."""

    def __init__(
        self, *, workspace_id: str, fingerprinter: Any, players: int, start: int, span: int, total: int
    ):
        self.workspace_id = workspace_id
        self.fingerprinter = fingerprinter
        self.players = players
        self.start = start
        self.span = span
        self.total = total
        self.rng = random.Random(20260101)

    def rows(self, first: int, last: int, tally: Tally) -> list[tuple[Any, ...]]:
        rng, fp, ws = self.rng, self.fingerprinter, self.workspace_id
        received = int(time.time() * 1_000_000)
        out = []
        for n in range(first, last):
            ts = self.start + n * self.span // self.total
            player = rng.randrange(self.players)
            external_id = player_id(player)
            type_ = pick_type(n)
            data = event_data(n, type_, player, rng)
            tally.add(external_id, ts, type_, data)
            source = {"externalId": external_id, "type": type_, "data": data, "timestamp": ts}
            out.append(
                (
                    ws,
                    f"ev-{n:09d}",
                    external_id,
                    type_,
                    orjson.dumps(data).decode(),
                    None,
                    fp.of(source),
                    timestamp_text(ts),
                    ts,
                    received,
                    received + n,
                )
            )
        return out


async def check_shape(database_url: str, env: dict[str, str], workspace_id: str, samples: list[Any]) -> Any:
    """The workspace's fingerprinter, and proof that the generated data is what validation keeps."""
    from onehazel.bootstrap import open_services
    from onehazel.config import Config
    from onehazel.domain.templates import BUILT_IN
    from onehazel.domain.validation import validate_event
    from onehazel.domain.workspace import Workspace

    template = BUILT_IN["tpl_igaming"]
    for external_id, type_, data, ts in samples:
        write = validate_event(
            template,
            {"externalId": external_id, "type": type_, "data": data, "timestamp": timestamp_text(ts)},
        )
        if write.plain != data or write.pii or write.ts != ts:
            raise RuntimeError(f"generated {type_} data is not what the server stores: {write}")
    services = await open_services(Config.load(database_url, env=env), null_pool=True)
    try:
        ws = Workspace(id=workspace_id, operator_id="", mode="live", key_id="")
        return await services.core.fingerprinter(ws)
    finally:
        await services.close()


async def load_events(
    database_url: str,
    env: dict[str, str],
    workspace_id: str,
    args: argparse.Namespace,
    tally: Tally,
    start: int,
) -> None:
    span = args.days * DAY
    sample_rng = random.Random(1)
    samples = [
        (player_id(p), t, event_data(n, t, p, sample_rng), start + n)
        for n, (t, _) in enumerate(MIX)
        for p in (3, 7)
    ]
    fingerprinter = await check_shape(database_url, env, workspace_id, samples)
    source = EventSource(
        workspace_id=workspace_id,
        fingerprinter=fingerprinter,
        players=args.players,
        start=start,
        span=span,
        total=args.events,
    )
    conn = await asyncpg.connect(sw.asyncpg_dsn(database_url), timeout=10)
    try:
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'events' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'events'::regclass)"
        )
        for row in indexes:
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')
        began = time.perf_counter()
        for first in range(0, args.events, COPY_CHUNK):
            rows = source.rows(first, min(first + COPY_CHUNK, args.events), tally)
            await conn.copy_records_to_table("events", records=rows, columns=COLUMNS)
            done = first + len(rows)
            if done % 1_000_000 == 0 or done == args.events:
                log(f"  {done:,} events copied ({done / (time.perf_counter() - began):,.0f}/s)")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        for row in indexes:
            started = time.perf_counter()
            await conn.execute(row["indexdef"])
            log(f"  index {row['indexname']} rebuilt in {time.perf_counter() - started:.0f} s")
    finally:
        await conn.close()


async def rebuild_rollups(database_url: str, workspace_id: str) -> bool:
    """If the server keeps analytics rollups, rebuild them for the COPYed rows with its own code."""
    try:
        from onehazel.storage import rollups
    except ImportError:
        return False
    from onehazel.storage.engine import create_engine

    engine = create_engine(database_url, null_pool=True)
    try:
        async with engine.begin() as conn:
            await rollups.rebuild(conn, workspace_id)
    finally:
        await engine.dispose()
    return True


# -- the API --------------------------------------------------------------------------------------


class Api:
    def __init__(self, port: int, key: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=f"http://{sw.HOST}:{port}{sw.BASE}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=600,
            limits=httpx.Limits(max_connections=32),
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for _ in range(200):
            response = await self.http.request(method, path, **kwargs)
            if response.status_code not in (429, 503):
                return response
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
        raise RuntimeError(f"{method} {path}: still {response.status_code} after 200 tries")

    async def wait(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            while True:
                job = (await self.request("GET", f"/batch/jobs/{job_id}")).json()
                if job["status"] in ("completed", "failed"):
                    if job["status"] == "failed" or job.get("failed"):
                        raise RuntimeError(f"job {job_id}: {job}")
                    break
                await asyncio.sleep(0.2)

    async def submit(self, kind: str, items: list[dict[str, Any]]) -> str:
        response = await self.request("POST", f"/batch/{kind}", json={kind: items})
        if response.status_code != 202:
            raise RuntimeError(f"POST /batch/{kind}: {response.status_code} {response.text[:300]}")
        return str(response.json()["jobId"])


def player(n: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "country": COUNTRIES[n % len(COUNTRIES)],
        "currency": player_currency(n),
        "vip": n % 25 == 0,
        "segment": SEGMENTS[n % len(SEGMENTS)],
    }
    if n % 10 == 0:
        attributes["email"] = f"player{n}@example.com"
    return {"externalId": player_id(n), "type": "player", "attributes": attributes}


async def create_players(api: Api, players: int) -> None:
    response = await api.request("PUT", "/settings", json={"templateId": "tpl_igaming"})
    response.raise_for_status()
    jobs = []
    for first in range(0, players, ENTITY_BATCH):
        jobs.append(
            await api.submit(
                "entities", [player(n) for n in range(first, min(first + ENTITY_BATCH, players))]
            )
        )
    await api.wait(jobs)


def api_event(
    n: int, prefix: str, args: argparse.Namespace, start: int, rng: random.Random
) -> dict[str, Any]:
    p = rng.randrange(args.players)
    type_ = "transaction" if n % 2 == 0 else pick_type(n)
    ts = start + rng.randrange(args.days * DAY)
    return {
        "externalId": player_id(p),
        "type": type_,
        "eventId": f"{prefix}-{n}",
        "timestamp": timestamp_text(ts),
        "data": event_data(n, type_, p, rng),
        "_ts": ts,
    }


async def api_writes(api: Api, args: argparse.Namespace, start: int, tally: Tally) -> None:
    """Back-dated events through the single and the batch endpoints."""
    rng = random.Random(7)
    singles = [api_event(n, "single", args, start, rng) for n in range(API_SINGLE)]
    batch = [api_event(n, "batch", args, start, rng) for n in range(API_BATCH)]
    gate = asyncio.Semaphore(16)

    async def one(e: dict[str, Any]) -> None:
        body = {k: v for k, v in e.items() if k not in ("externalId", "_ts")}
        async with gate:
            response = await api.request("POST", f"/entities/{e['externalId']}/events", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"POST event: {response.status_code} {response.text[:300]}")

    await asyncio.gather(*(one(e) for e in singles))
    await api.wait([await api.submit("events", [{k: v for k, v in e.items() if k != "_ts"} for e in batch])])
    for e in [*singles, *batch]:
        tally.add(e["externalId"], e["_ts"], e["type"], e["data"])


async def delete_players(api: Api, deleted: set[str]) -> None:
    gate = asyncio.Semaphore(8)

    async def one(external_id: str) -> None:
        async with gate:
            response = await api.request("DELETE", f"/entities/{external_id}")
        if response.status_code != 200:
            raise RuntimeError(f"DELETE {external_id}: {response.status_code} {response.text[:300]}")

    await asyncio.gather(*(one(e) for e in sorted(deleted)))


# -- measuring ------------------------------------------------------------------------------------


@dataclass
class Query:
    label: str
    path: str
    params: dict[str, str]
    target: float
    expected: list[dict[str, Any]] | None = None
    times: list[float] = field(default_factory=list)
    answer: list[dict[str, Any]] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times) * 1000

    @property
    def max_ms(self) -> float:
        return max(self.times) * 1000

    @property
    def met(self) -> bool:
        return max(self.times) < self.target

    @property
    def correct(self) -> str:
        if self.expected is None:
            return "-"
        return "ok" if self.answer == self.expected else "WRONG"


def iso(ts: int) -> str:
    return timestamp_text(ts)


def queries(start: int, days: int, tally: Tally | None) -> list[Query]:
    first_day = start // DAY
    month = range(first_day, first_day + days)
    one = range(first_day + days // 2, first_day + days // 2 + 1)
    out = []
    for name, span, target in (("month", month, MONTH_TARGET_S), ("day", one, DAY_TARGET_S)):
        bounds = {"from": iso(span.start * DAY), "to": iso(span.stop * DAY)}
        for group in ("type", "day", "type,day"):
            expected = tally.expected_events(span, group.split(",")) if tally else None
            out.append(
                Query(
                    f"events by {group}, {name}",
                    "/analytics/events",
                    {**bounds, "groupBy": group},
                    target,
                    expected,
                )
            )
        for group in ("currency", "type", "currency,type"):
            expected = tally.expected_transactions(span, group.split(",")) if tally else None
            out.append(
                Query(
                    f"transactions by {group}, {name}",
                    "/analytics/transactions",
                    {**bounds, "groupBy": group},
                    target,
                    expected,
                )
            )
    for group in ("type", "country"):
        out.append(Query(f"entities by {group}", "/analytics/entities", {"groupBy": group}, MONTH_TARGET_S))
    out.append(Query("events by type, last 30 days (default)", "/analytics/events", {}, MONTH_TARGET_S))
    out.append(Query("transactions by currency, last 30 days", "/analytics/transactions", {}, MONTH_TARGET_S))
    return out


async def measure(api: Api, plan: list[Query], repeat: int) -> None:
    for rep in range(repeat + 1):
        for q in plan:
            began = time.perf_counter()
            response = await api.request("GET", q.path, params=q.params)
            took = time.perf_counter() - began
            if response.status_code != 200:
                raise RuntimeError(f"GET {q.path} {q.params}: {response.status_code} {response.text[:300]}")
            if rep == 0:
                q.answer = response.json()["data"]  # the warm-up pass is not timed
            else:
                q.times.append(took)


async def sql_check(database_url: str, workspace_id: str, start: int, days: int) -> list[dict[str, Any]]:
    """Transaction sums by currency over the month, written independently of the server's SQL."""
    conn = await asyncpg.connect(sw.asyncpg_dsn(database_url), timeout=10)
    try:
        rows = await conn.fetch(
            """
            SELECT ev.data->>'currency' AS currency, count(*) AS count,
                   sum((ev.data->>'amount')::numeric)::text AS sum
            FROM events ev
            WHERE ev.workspace_id = $1 AND ev.type = 'transaction' AND ev.ts >= $2 AND ev.ts < $3
              AND NOT EXISTS (SELECT 1 FROM entities d WHERE d.workspace_id = ev.workspace_id
                              AND d.external_id = ev.external_id AND d.deleted_at IS NOT NULL)
            GROUP BY 1 ORDER BY 1
            """,
            workspace_id,
            start,
            start + days * DAY,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


# -- the run --------------------------------------------------------------------------------------


def meta_path(name: str) -> Path:
    return Path(tempfile_dir()) / f"onehazel-analytics-{name}.json"


def tempfile_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


async def workspace_of(database_url: str, operator_id: str) -> str:
    conn = await asyncpg.connect(sw.asyncpg_dsn(database_url), timeout=10)
    try:
        return str(
            await conn.fetchval(
                "SELECT id FROM workspaces WHERE operator_id = $1 AND mode = 'live'", operator_id
            )
        )
    finally:
        await conn.close()


async def vacuum(database_url: str) -> None:
    conn = await asyncpg.connect(sw.asyncpg_dsn(database_url), timeout=10)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def bench(args: argparse.Namespace) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEHAZEL_")}
    env["ONEHAZEL_RETENTION_INTERVAL_SECONDS"] = "0"
    if args.reuse:
        name = args.reuse
        meta = json.loads(meta_path(name).read_text())
        env["ONEHAZEL_MASTER_KEY"] = meta["masterKey"]
        database_url = sw.with_database(args.database_url, name)
        return await measure_run(args, env, database_url, meta, Tally.from_json(meta["tally"]), keep=True)
    name = f"onehazel_analytics_{uuid.uuid4().hex[:10]}"
    env["ONEHAZEL_MASTER_KEY"] = base64.b64encode(os.urandom(32)).decode()
    database_url = sw.with_database(args.database_url, name)
    await sw.admin(args.database_url, f'CREATE DATABASE "{name}"')
    keep = False
    try:
        log(f"database {name}")
        sw.onehazel_cli(["migrate", "--database-url", database_url], env)
        operator = json.loads(
            sw.onehazel_cli(["operators", "create", "bench", "--json", "--database-url", database_url], env)
        )
        limits = ["--writes", "1000000", "--reads", "1000000", "--batches", "1000"]
        sw.onehazel_cli(
            ["operators", "limits", operator["operatorId"], *limits, "--database-url", database_url], env
        )
        workspace_id = await workspace_of(database_url, operator["operatorId"])
        today = int(time.time() * 1_000_000) // DAY * DAY
        start = today - args.days * DAY
        rng = random.Random(99)
        deleted = {player_id(n) for n in rng.sample(range(args.players), args.deletes)}
        tally = Tally(deleted=deleted)
        port = sw.free_port()
        serve = [
            sys.executable,
            "-m",
            "onehazel",
            "serve",
            "--port",
            str(port),
            "--database-url",
            database_url,
        ]
        serve += ["--log-level", "warning"]
        with_log = Path(tempfile_dir()) / f"{name}-serve.log"
        async with sw.running(serve, env=env, log=with_log, port=port):
            api = Api(port, operator["liveKey"])
            try:
                began = time.perf_counter()
                await create_players(api, args.players)
                log(f"{args.players:,} players through /batch/entities: {time.perf_counter() - began:.0f} s")
                began = time.perf_counter()
                await load_events(database_url, env, workspace_id, args, tally, start)
                log(f"{args.events:,} events by COPY, indexes rebuilt: {time.perf_counter() - began:.0f} s")
                began = time.perf_counter()
                if await rebuild_rollups(database_url, workspace_id):
                    log(f"rollups rebuilt with the server's code: {time.perf_counter() - began:.0f} s")
                await api_writes(api, args, start, tally)
                log(f"{API_SINGLE} single events and a {API_BATCH}-event batch written through the API")
                await delete_players(api, deleted)
                log(f"{len(deleted)} players soft-deleted through the API")
            finally:
                await api.close()
        began = time.perf_counter()
        await vacuum(database_url)
        log(f"VACUUM ANALYZE: {time.perf_counter() - began:.0f} s")
        meta = {
            "masterKey": env["ONEHAZEL_MASTER_KEY"],
            "liveKey": operator["liveKey"],
            "workspaceId": workspace_id,
            "start": start,
            "days": args.days,
            "players": args.players,
            "events": args.events,
            "tally": tally.to_json(),
        }
        if args.keep:
            path = meta_path(name)
            path.touch(mode=0o600)
            path.write_text(json.dumps(meta))
            keep = True
        return await measure_run(args, env, database_url, meta, tally, keep=keep)
    finally:
        if keep:
            log(f"kept database {name}: --reuse {name}")
        else:
            await sw.admin(args.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def measure_run(
    args: argparse.Namespace,
    env: dict[str, str],
    database_url: str,
    meta: dict[str, Any],
    tally: Tally,
    *,
    keep: bool,
) -> int:
    port = sw.free_port()
    serve = [sys.executable, "-m", "onehazel", "serve", "--port", str(port), "--database-url", database_url]
    serve += ["--log-level", "warning"]
    plan = queries(meta["start"], meta["days"], tally)
    log_file = Path(tempfile_dir()) / f"onehazel-analytics-{os.getpid()}-serve.log"
    async with sw.running(serve, env=env, log=log_file, port=port):
        api = Api(port, meta["liveKey"])
        try:
            await measure(api, plan, args.repeat)
        finally:
            await api.close()
    checked = await sql_check(database_url, meta["workspaceId"], meta["start"], meta["days"])
    month_by_currency = next(q for q in plan if q.label == "transactions by currency, month")
    return report(args, meta, plan, checked, month_by_currency)


def report(
    args: argparse.Namespace,
    meta: dict[str, Any],
    plan: list[Query],
    checked: list[dict[str, Any]],
    by_currency: Query,
) -> int:
    print()
    print(
        f"analytics over {meta['events']:,} events, {meta['players']:,} players, {meta['days']} days "
        f"(PostgreSQL; {args.repeat} timed requests each, after one warm-up)"
    )
    header = f"{'aggregate':44} {'groups':>6} {'median ms':>10} {'max ms':>9} {'target':>8} {'met':>4}"
    print(f"{header} {'answer':>7}")
    for q in plan:
        print(
            f"{q.label:44} {len(q.answer):>6} {q.median_ms:>10.1f} {q.max_ms:>9.1f} "
            f"{'< ' + format(q.target * 1000, '.0f') + ' ms':>8} {'yes' if q.met else 'NO':>4} {q.correct:>7}"
        )
    sql_ok = checked == by_currency.answer
    print()
    print(f"transactions by currency over the month = independent SQL query: {'yes' if sql_ok else 'NO'}")
    if not sql_ok:
        print(f"  API: {by_currency.answer}\n  SQL: {checked}")
    wrong = [q.label for q in plan if q.correct == "WRONG"]
    for label in wrong:
        q = next(x for x in plan if x.label == label)
        print(f"WRONG {label}:\n  API:      {q.answer[:8]}\n  expected: {(q.expected or [])[:8]}")
    missed = [q.label for q in plan if not q.met]
    print(
        f"targets met: {len(plan) - len(missed)}/{len(plan)}; answers checked: "
        f"{sum(q.correct == 'ok' for q in plan)} ok, {len(wrong)} wrong"
    )
    return 0 if sql_ok and not wrong else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    default_url = os.environ.get("ONEHAZEL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed requests per aggregate (after a warm-up)"
    )
    parser.add_argument("--deletes", type=int, default=300, help="players soft-deleted through the API")
    parser.add_argument(
        "--database-url", default=default_url, help="a PostgreSQL server to CREATE DATABASE on"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database, to measure it again with --reuse"
    )
    parser.add_argument("--reuse", metavar="NAME", help="measure a database kept by --keep, without loading")
    args = parser.parse_args(argv)
    if args.deletes > args.players:
        parser.error("--deletes must not exceed --players")
    return args


def main() -> int:
    args = parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(bench(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
