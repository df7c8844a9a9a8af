"""Soak test: mixed traffic from many clients against the real server on PostgreSQL, then checks.

Run by hand (from the repository root)::

    .venv/bin/python bench/soak.py [--duration 600] [--clients 32] [--workers 1] [--seed 1]
        [--database-url postgresql://postgres@127.0.0.1:5432/test]

One run:

1. creates a fresh database ``onehazel_bench_<random>``, runs ``onehazel migrate``, ``onehazel
   operators create soak --json`` and ``onehazel operators limits`` (rates well above what the
   soak sends, so it measures the server and not the limiter; the 429s that still happen are
   handled like a real client would: wait ``Retry-After``, send again, count them), and starts
   the real ``python -m onehazel serve`` (``--workers`` processes, each with its in-process batch
   worker) with a fresh ``ONEHAZEL_MASTER_KEY``;
2. chooses ``tpl_igaming``, creates shared "hot" players (every client writes to them
   concurrently) and a few players per client that only that client writes ("owned": the
   client knows exactly what each must hold);
3. runs ``--clients`` asyncio clients (httpx, keep-alive) for ``--duration`` seconds, each a
   closed loop over a weighted mix: entity upserts with PII, single events with client
   eventIds (some without, some with PII, some missing a required field), exact replays
   (200 ``duplicate: true``), replays with another payload (409), the same new event sent twice
   at once (one 201, one duplicate), state PUTs with explicit timestamps (stale ones must answer
   ``applied: false``), batches of events / entities / states (polled to completion; the job's
   per-item outcomes say which items are acknowledged, and each must be the one expected: bad
   items, deleted or unknown entities and conflicting eventIds are mixed in), Idempotency-Key
   resubmits (some batches gzip-compressed), reads (one entity, entity listings and event listings
   with cursors, the subject-access export, analytics),
   and entity deletes, after which every write or read of that entity must answer 410;
   every answer is checked against what the client knows as it arrives;
4. samples the server processes' RSS (sum of ``VmRSS`` over the server's process group) every
   10 s;
5. when the clients have stopped (each finishes its request and its batch job), checks the
   database with SQL and the API: every acknowledged event stored exactly once with the fields
   sent (plain fields compared, PII field names; through the API the whole payload, PII
   decrypted), no stored event that was not acknowledged, every live entity at its latest
   version with the expected attributes, every state at the newest-timestamp value, deleted
   entities answering 410 and absent from listings and analytics, analytics counts and exact
   transaction sums equal to the acknowledged live events, every job completed;
6. prints requests, req/s, items/s, p50 and p99 per kind, the answers by status, the RSS series
   and the memory verdict: median of the first 2 minutes after a 1-minute warm-up against the
   median of the last 2 minutes, "flat" when it grew less than 10% (shorter runs scale these
   windows down).

Any 5xx, connection error or timeout, unexpected answer, lost, doubled or altered data, or
memory growth of 10% or more is a failure: the exit status is 1. The database is dropped and
every process stopped at the end, also after an error or Ctrl-C. The clients share the machine
with the server and PostgreSQL: throughput figures are those of the whole box under this mix.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import hashlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import single_writes as sw  # noqa: E402  (a sibling script, not a package)

HOST = sw.HOST
BASE = sw.BASE
SAMPLE_SECONDS = 10.0
PROGRESS_SECONDS = 30.0
GROWTH_LIMIT = 0.10
HOT_ENTITIES = 24
OWNED_START = 10
OWNED_MIN_LIVE = 6
JOB_WAIT_SECONDS = 600.0
REQUEST_TIMEOUT = 60.0
TEMPLATE = "tpl_igaming"

TX_TYPES = ("deposit", "withdrawal", "bet", "win", "bonus")
CURRENCIES = ("EUR", "GBP", "USD", "CAD", "SEK")
METHODS = ("card", "bank_transfer", "e_wallet")
COUNTRIES = ("MT", "GB", "DE", "SE", "CA", "IE")
SEGMENTS = ("new", "casual", "regular", "vip", "dormant")
KYC = ("not_started", "pending", "verified", "rejected", "expired")
TIERS = ("bronze", "silver", "gold", "platinum")
STATE_KEYS = ("balance", "kyc_status", "risk_score", "loyalty_tier")

# One client's mix: operation -> weight.
MIX: dict[str, float] = {
    "upsert": 10,
    "event": 30,
    "replay": 4,
    "conflict": 1,
    "race": 1,
    "state": 12,
    "batch_events": 2.5,
    "batch_entities": 0.7,
    "batch_states": 1.2,
    "get_entity": 10,
    "list_entities": 2,
    "list_events": 4,
    "analytics": 2,
    "export": 0.5,
    "delete": 0.8,
    "deleted_probe": 1.5,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def digest(value: Any) -> bytes:
    return hashlib.blake2b(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=12).digest()


def rfc3339(micros: int) -> str:
    seconds, frac = divmod(micros, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:06d}Z"


def now_micros() -> int:
    return time.time_ns() // 1000


def merge(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The server's merge rule for entity attributes: a null removes the key."""
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


# -- what the clients know ---------------------------------------------------------------------------


@dataclass(slots=True)
class AckedEvent:
    external_id: str
    type: str
    timestamp: str
    plain: bytes
    """digest of the data without PII fields (what the events.data column holds)"""
    full: bytes
    """digest of the whole data (what a single-entity read returns, PII decrypted)"""
    pii: tuple[str, ...]
    money: tuple[str | None, str] | None
    """(currency, amount) of a transaction with a decimal-string amount"""


@dataclass(slots=True)
class StateValue:
    ts: int
    timestamp: str
    value: Any


@dataclass
class Owned:
    """An entity only its owning client writes: its exact expected content."""

    external_id: str
    attributes: dict[str, Any]
    version: int
    deleted: bool = False
    tainted: bool = False
    """an answer was lost (connection error or 5xx): exact checks are skipped (already a failure)"""
    states: dict[str, StateValue] = field(default_factory=dict)


@dataclass
class Hot:
    """An entity every client writes at once: checked against the acknowledged answers."""

    external_id: str
    versions: dict[int, dict[str, Any]] = field(default_factory=dict)
    """version -> attributes, from each acknowledged upsert"""
    upserts: int = 0
    tainted: bool = False
    states: dict[str, StateValue] = field(default_factory=dict)
    """the acknowledged write with the newest timestamp, per key"""


@dataclass
class Expect:
    """The outcome one batch item must have."""

    status: str  # succeeded | duplicate | failed
    code: str | None = None
    on_success: Callable[[dict[str, Any]], None] | None = None


class Stats:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, Counter[int]] = defaultdict(Counter)
        self.items: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.retried_409: Counter[str] = Counter()
        self.checks: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.examples: list[str] = []
        self.requests = 0

    def fail(self, category: str, message: str) -> None:
        self.failures[category] += 1
        if len(self.examples) < 40:
            self.examples.append(f"[{category}] {message}")
            log(f"FAILURE [{category}] {message}")


class Soak:
    """State shared by every client: the HTTP pool, statistics and everything acknowledged."""

    def __init__(self, http: httpx.AsyncClient, args: argparse.Namespace, run: str) -> None:
        self.http = http
        self.args = args
        self.run = run
        self.stats = Stats()
        self.events: dict[str, AckedEvent] = {}
        self.by_entity: dict[str, list[str]] = defaultdict(list)
        self.uncertain_events: set[str] = set()
        self.uncertain_entities: set[str] = set()
        self.owned: dict[str, Owned] = {}
        self.hot: dict[str, Hot] = {}
        self.deleted_at: dict[str, float] = {}
        self.entity_pii: frozenset[str] = frozenset()
        self.event_pii: dict[str, frozenset[str]] = {}
        self._last_ts = 0
        self._hot_used: set[int] = set()
        self.deadline = 0.0
        self.counter = 0
        self.cpu = (0.0, 0.0)
        """(server processes, this process) CPU seconds during the traffic"""

    def unique_ts(self) -> int:
        """A timestamp (µs) no other write of this run uses: concurrent state writes never tie."""
        self._last_ts = max(self._last_ts + 1, now_micros())
        return self._last_ts

    def hot_ts(self, back: int) -> int:
        """A unique timestamp up to ``back`` µs in the past: writes to hot entities arrive out of order."""
        ts = self.unique_ts() - back
        while ts in self._hot_used:
            ts += 1
        self._hot_used.add(ts)
        return ts

    def next_number(self) -> int:
        self.counter += 1
        return self.counter

    def ack_event(
        self, event_id: str, external_id: str, type_: str, timestamp: str, data: dict[str, Any]
    ) -> None:
        pii_fields = self.event_pii.get(type_, frozenset())
        plain = {k: v for k, v in data.items() if k not in pii_fields}
        money = None
        if type_ == "transaction" and isinstance(data.get("amount"), str):
            money = (data.get("currency"), data["amount"])
        self.events[event_id] = AckedEvent(
            external_id=external_id,
            type=type_,
            timestamp=timestamp,
            plain=digest(plain),
            full=digest(data),
            pii=tuple(sorted(k for k in data if k in pii_fields)),
            money=money,
        )
        self.by_entity[external_id].append(event_id)

    async def call(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        items: int = 0,
        compress: bool = False,
    ) -> httpx.Response | None:
        """One request, resent after a 429 (honouring Retry-After), a 503 or a 409 ``conflict``.

        Returns None when no answer could be had (connection error, timeout, a 5xx other than
        503): that is a failure, recorded here.
        """
        content = orjson.dumps(body) if body is not None else None
        all_headers = {"Content-Type": "application/json"} if content is not None else {}
        all_headers.update(headers or {})
        if compress and content is not None:
            content = gzip.compress(content, compresslevel=1)
            all_headers["Content-Encoding"] = "gzip"
        attempts = 0
        while True:
            attempts += 1
            trace: list[str] = []
            record = _tracer(trace)
            started = time.perf_counter()
            try:
                answer = await self.http.request(
                    method,
                    path,
                    content=content,
                    params=params,
                    headers=all_headers,
                    extensions={"trace": record},
                )
            except httpx.HTTPError as exc:
                fresh = any(e.startswith("connection.connect_tcp") for e in trace)
                self.stats.fail(
                    "connection",
                    f"{kind}: {method} {path}: {type(exc).__name__} {exc} (cause {exc.__context__!r}) on a "
                    f"{'new' if fresh else 'reused keep-alive'} connection after "
                    f"{time.perf_counter() - started:.2f} s, at {trace[-1] if trace else '-'}",
                )
                return None
            elapsed = (time.perf_counter() - started) * 1000
            self.stats.requests += 1
            self.stats.statuses[kind][answer.status_code] += 1
            status = answer.status_code
            if status == 429:
                self.stats.throttled[kind] += 1
                retry_after = answer.headers.get("Retry-After")
                if retry_after is None:
                    self.stats.fail("protocol", f"{kind}: 429 without Retry-After")
                    retry_after = "1"
                await asyncio.sleep(float(retry_after) + random.uniform(0, 0.2))
                continue
            self.stats.latencies[kind].append(elapsed)
            if items:
                self.stats.items[kind] += items
            if status >= 500:
                self.stats.fail("5xx", f"{kind}: {method} {path} answered {status}: {answer.text[:300]}")
                if status == 503 and attempts < 5:  # nothing half-written: a client sends it again
                    await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))
                    continue
                return None
            if status == 409 and attempts < 10 and _error_code(answer) == "conflict":
                self.stats.retried_409[kind] += 1  # "being updated concurrently; retry the request"
                await asyncio.sleep(random.uniform(0.005, 0.05) * attempts)
                continue
            return answer


def _tracer(events: list[str]) -> Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]]:
    """An httpx trace hook noting the transport's steps (was a new connection opened?)."""

    async def record(event: str, info: dict[str, Any]) -> None:
        events.append(event)

    return record


def _error_code(answer: httpx.Response) -> str | None:
    try:
        return str(answer.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def _json(answer: httpx.Response) -> Any:
    return orjson.loads(answer.content)


# -- one client -------------------------------------------------------------------------------------


class Client:
    def __init__(self, soak: Soak, cid: int, seed: int) -> None:
        self.soak = soak
        self.stats = soak.stats
        self.cid = cid
        self.rng = random.Random(seed * 1000 + cid)
        self.owned: list[Owned] = []
        self.recent: deque[tuple[str, str, dict[str, Any]]] = deque(maxlen=300)
        """(eventId, externalId, body) of acknowledged single events, for replays"""
        self.pending: dict[str, Owned] = {}
        """entities created by the batch in flight: known only once its job completes"""
        self.n = 0
        self.ops: Counter[str] = Counter()
        names = list(MIX)
        self._ops = names
        self._weights = [MIX[n] for n in names]

    # -- helpers --

    def next_id(self, what: str) -> str:
        self.n += 1
        return f"{self.soak.run}-c{self.cid:02d}-{what}{self.n}"

    def live_owned(self) -> list[Owned]:
        return [o for o in self.owned if not o.deleted and not o.tainted]

    def deleted_owned(self) -> list[Owned]:
        return [o for o in self.owned if o.deleted]

    def pick_writable(self) -> Owned | Hot:
        live = self.live_owned()
        if live and self.rng.random() < 0.65:
            return self.rng.choice(live)
        return self.soak.hot[self.rng.choice(list(self.soak.hot))]

    def mismatch(self, what: str, message: str) -> None:
        self.stats.fail("mismatch", f"client {self.cid} {what}: {message}")

    def check(self, name: str, ok: bool, message: str) -> bool:
        self.stats.checks[name] += 1
        if not ok:
            self.mismatch(name, message)
        return ok

    def expect_status(self, what: str, answer: httpx.Response | None, *codes: int) -> bool:
        if answer is None:
            return False
        if answer.status_code in codes:
            return True
        self.mismatch(what, f"answered {answer.status_code} (expected {codes}): {answer.text[:300]}")
        return False

    def new_attributes(self, first: bool) -> dict[str, Any]:
        r = self.rng
        n = self.soak.next_number()
        changes: dict[str, Any] = {"rev": n}
        if first or r.random() < 0.5:
            changes["email"] = f"p{n}@example.com"
        if first or r.random() < 0.3:
            changes["first_name"] = r.choice(("Ada", "Bo", "Cy", "Di", "Ed")) + str(n % 97)
            changes["last_name"] = f"Soak{n}"
        if first or r.random() < 0.2:
            changes["phone"] = f"+356{n:08d}"[:15]
        if r.random() < 0.15:
            changes["address"] = {"line1": f"{n % 200} Main St", "city": "Valletta", "zip": f"VLT{n % 9999}"}
        if first:
            changes["country"] = r.choice(COUNTRIES)
            changes["currency"] = r.choice(CURRENCIES[:4])
        if r.random() < 0.3:
            changes["segment"] = r.choice(SEGMENTS)
        if r.random() < 0.2:
            changes["vip"] = r.random() < 0.2
        if not first and r.random() < 0.1:
            changes[r.choice(("segment", "phone", "address"))] = None  # null removes a key
        return changes

    def event_body(self, target: str, *, with_id: bool = True) -> dict[str, Any]:
        r = self.rng
        n = self.soak.next_number()
        kind = r.choices(("transaction", "game_activity", "session", "bonus"), (55, 25, 12, 8))[0]
        currency = CURRENCIES[n % 4]
        data: dict[str, Any]
        if kind == "transaction":
            data = {
                "type": r.choice(TX_TYPES),
                "amount": f"{r.randint(1, 999)}.{r.randint(0, 99):02d}",
                "currency": currency,
                "method": r.choice(METHODS),
                "transaction_id": f"tx-{n}",
            }
            if r.random() < 0.03:
                del data["currency"]  # accepted, flagged with a missing_required_field warning
        elif kind == "game_activity":
            data = {
                "game_id": f"game-{n % 50}",
                "bet_amount": f"{r.randint(1, 50)}.00",
                "win_amount": f"{r.randint(0, 100)}.{r.randint(0, 99):02d}",
                "currency": currency,
                "round_id": f"r-{n}",
            }
        elif kind == "session":
            data = {
                "action": r.choice(("login", "logout", "heartbeat")),
                "ip_address": f"10.{n % 250}.{(n // 250) % 250}.{r.randint(1, 254)}",
                "user_agent": f"SoakBrowser/{n % 17}",
                "device": r.choice(("ios", "android", "desktop")),
                "duration_seconds": r.randint(0, 7200),
            }
        else:
            data = {
                "bonus_id": f"b-{n % 40}",
                "action": "granted",
                "amount": f"{r.randint(5, 50)}",
                "currency": currency,
            }
        body: dict[str, Any] = {
            "type": kind,
            "timestamp": rfc3339(now_micros() - r.randint(0, 2 * 86_400 * 1_000_000)),
            "data": data,
        }
        if with_id:
            body["eventId"] = self.next_id("e")
        return body

    def state_value(self, key: str) -> Any:
        r = self.rng
        if key == "balance":
            return f"{r.randint(0, 99999)}.{r.randint(0, 99):02d}"
        if key == "kyc_status":
            return r.choice(KYC)
        if key == "risk_score":
            return r.randint(0, 1000) / 10
        return r.choice(TIERS)

    # -- setup --

    async def create_owned(self) -> Owned | None:
        external_id = self.next_id("p")
        attributes = self.new_attributes(first=True)
        answer = await self.soak.call(
            "entity upsert",
            "POST",
            "/entities",
            body={"externalId": external_id, "type": "player", "attributes": attributes},
        )
        if not self.expect_status("create entity", answer, 201):
            self.soak.uncertain_entities.add(external_id)
            return None
        assert answer is not None
        owned = Owned(external_id, merge({}, attributes), 1)
        self.check_entity(owned, _json(answer), "create entity")
        self.owned.append(owned)
        self.soak.owned[external_id] = owned
        return owned

    def check_entity(self, owned: Owned, got: dict[str, Any], what: str) -> bool:
        return self.check(
            "entity content",
            got.get("attributes") == owned.attributes and got.get("version") == owned.version,
            f"{what} {owned.external_id}: got version {got.get('version')} {got.get('attributes')}, "
            f"expected version {owned.version} {owned.attributes}",
        )

    # -- the loop --

    async def run(self) -> None:
        for _ in range(OWNED_START):
            await self.create_owned()
        while time.monotonic() < self.soak.deadline:
            op = self.rng.choices(self._ops, self._weights)[0]
            self.ops[op] += 1
            await getattr(self, f"op_{op}")()

    # -- writes --

    async def op_upsert(self) -> None:
        if len(self.live_owned()) < OWNED_MIN_LIVE or self.rng.random() < 0.05:
            await self.create_owned()
            return
        target = self.pick_writable()
        changes = self.new_attributes(first=False)
        body = {"externalId": target.external_id, "type": "player", "attributes": changes}
        answer = await self.soak.call("entity upsert", "POST", "/entities", body=body)
        if answer is None:
            target.tainted = True
            return
        if not self.expect_status("upsert", answer, 200):
            return
        got = _json(answer)
        if isinstance(target, Owned):
            target.attributes = merge(target.attributes, changes)
            target.version += 1
            self.check_entity(target, got, "upsert")
            return
        version = int(got["version"])
        target.upserts += 1
        self.check(
            "hot upsert version unique",
            version not in target.versions,
            f"two acknowledged upserts of {target.external_id} answered version {version} (a lost update)",
        )
        target.versions[version] = got["attributes"]
        ok = all(
            (got["attributes"].get(k) == v) if v is not None else (k not in got["attributes"])
            for k, v in changes.items()
        )
        self.check("hot upsert applied", ok, f"{target.external_id}: {changes} not in {got['attributes']}")

    async def post_event(
        self, external_id: str, body: dict[str, Any], kind: str = "event write"
    ) -> httpx.Response | None:
        return await self.soak.call(kind, "POST", f"/entities/{external_id}/events", body=body)

    async def op_event(self) -> None:
        target = self.pick_writable()
        body = self.event_body(target.external_id, with_id=self.rng.random() >= 0.05)
        answer = await self.post_event(target.external_id, body)
        if answer is None:
            if "eventId" in body:
                self.soak.uncertain_events.add(body["eventId"])
            else:
                target.tainted = True  # an unknown server-assigned id may have been stored
            return
        if not self.expect_status("event", answer, 201):
            return
        got = _json(answer)
        event_id = got["eventId"]
        if "eventId" in body:
            self.check("event id", event_id == body["eventId"], f"{event_id} != {body['eventId']}")
        self.check(
            "event echo", got.get("data") == body["data"], f"{event_id}: {got.get('data')} != {body['data']}"
        )
        self.check(
            "event timestamp",
            got.get("timestamp") == body["timestamp"],
            f"{got.get('timestamp')} != {body['timestamp']}",
        )
        missing = "currency" not in body["data"] and body["type"] == "transaction"
        self.check(
            "missing field warning",
            bool(got.get("warnings")) == missing,
            f"{event_id}: warnings {got.get('warnings')} for data {body['data']}",
        )
        self.soak.ack_event(event_id, target.external_id, body["type"], body["timestamp"], body["data"])
        if "eventId" in body:
            self.recent.append((event_id, target.external_id, body))

    def deleted(self, external_id: str) -> bool:
        owned = self.soak.owned.get(external_id)
        return owned is not None and owned.deleted

    async def op_replay(self) -> None:
        if not self.recent:
            await self.op_event()
            return
        event_id, external_id, body = self.rng.choice(self.recent)
        answer = await self.post_event(external_id, body, "event replay")
        if answer is None:
            return
        if self.deleted(external_id):
            self.expect_status("replay of a deleted entity's event", answer, 410)
            return
        if self.expect_status("replay", answer, 200):
            got = _json(answer)
            self.check(
                "replay duplicate",
                got.get("duplicate") is True
                and got.get("eventId") == event_id
                and got.get("data") == body["data"],
                f"replay of {event_id} answered {got}",
            )

    async def op_conflict(self) -> None:
        if not self.recent:
            await self.op_event()
            return
        event_id, external_id, body = self.rng.choice(self.recent)
        changed = dict(body)
        changed["data"] = {**body["data"], "conflict": self.soak.next_number()}
        answer = await self.post_event(external_id, changed, "event conflict")
        if answer is None:
            return
        if self.deleted(external_id):
            self.expect_status("conflict on a deleted entity", answer, 410)
        elif self.expect_status("eventId reuse with another payload", answer, 409):
            self.check("conflict code", _error_code(answer) == "event_id_conflict", answer.text[:200])

    async def op_race(self) -> None:
        """The same new event twice at once: exactly one 201, the other a 200 duplicate."""
        target = self.pick_writable()
        body = self.event_body(target.external_id)
        answers = await asyncio.gather(
            self.post_event(target.external_id, body, "event race"),
            self.post_event(target.external_id, body, "event race"),
        )
        if any(a is None for a in answers):
            self.soak.uncertain_events.add(body["eventId"])
            return
        statuses = sorted(a.status_code for a in answers if a is not None)
        if not self.check(
            "race exactly once", statuses == [200, 201], f"{body['eventId']}: answers {statuses}"
        ):
            if 201 in statuses:
                self.soak.uncertain_events.add(body["eventId"])
            return
        duplicate = next(_json(a) for a in answers if a is not None and a.status_code == 200)
        self.check("race duplicate flag", duplicate.get("duplicate") is True, str(duplicate)[:200])
        self.soak.ack_event(
            body["eventId"], target.external_id, body["type"], body["timestamp"], body["data"]
        )
        self.recent.append((body["eventId"], target.external_id, body))

    async def op_state(self) -> None:
        target = self.pick_writable()
        key = self.rng.choice(STATE_KEYS)
        current = target.states.get(key)
        if isinstance(target, Owned) and current is not None and self.rng.random() < 0.25:
            ts = current.ts - self.rng.randint(1, 3_600_000_000)  # stale: must not be applied
        elif isinstance(target, Hot):
            ts = self.soak.hot_ts(self.rng.randint(0, 3_000_000))  # concurrent writers, unique times
        else:
            ts = self.soak.unique_ts()
        value = self.state_value(key)
        timestamp = rfc3339(ts)
        answer = await self.soak.call(
            "state put",
            "PUT",
            f"/entities/{target.external_id}/state/{key}",
            body={"value": value, "timestamp": timestamp},
        )
        if answer is None:
            target.tainted = True
            return
        if not self.expect_status("state put", answer, 200):
            return
        got = _json(answer)
        self.record_state(target, key, ts, timestamp, value, bool(got.get("applied")), got, "state put")

    def record_state(
        self,
        target: Owned | Hot,
        key: str,
        ts: int,
        timestamp: str,
        value: Any,
        applied: bool,
        got: dict[str, Any] | None,
        what: str,
    ) -> None:
        current = target.states.get(key)
        if isinstance(target, Owned):
            should_apply = current is None or ts >= current.ts
            self.check(
                "state applied",
                applied == should_apply,
                f"{what} {target.external_id}/{key} at {timestamp}: applied={applied}, stored "
                f"{current.timestamp if current else None}",
            )
            if should_apply:
                target.states[key] = StateValue(ts, timestamp, value)
            elif got is not None and current is not None:
                self.check(
                    "stale state answer",
                    got.get("value") == current.value and got.get("timestamp") == current.timestamp,
                    f"{target.external_id}/{key}: stale write answered {got}, stored {current}",
                )
            return
        if got is not None and applied:
            self.check(
                "state echo", got.get("value") == value and got.get("timestamp") == timestamp, str(got)[:200]
            )
        if current is None or ts > current.ts:
            target.states[key] = StateValue(ts, timestamp, value)

    async def op_delete(self) -> None:
        live = self.live_owned()
        if len(live) <= OWNED_MIN_LIVE // 2:
            await self.create_owned()
            return
        target = self.rng.choice(live)
        answer = await self.soak.call("delete", "DELETE", f"/entities/{target.external_id}")
        if answer is None:
            target.tainted = True
            return
        if self.expect_status("delete", answer, 200):
            target.deleted = True
            self.soak.deleted_at[target.external_id] = time.monotonic()
        if len(self.live_owned()) < OWNED_MIN_LIVE:
            await self.create_owned()

    async def op_deleted_probe(self) -> None:
        """Any read or write of a deleted entity must answer 410 entity_deleted."""
        gone = self.deleted_owned()
        if not gone:
            await self.op_get_entity()
            return
        target = self.rng.choice(gone)
        path = f"/entities/{target.external_id}"
        which = self.rng.randrange(8)
        call = self.soak.call
        if which == 0:
            body = {"externalId": target.external_id, "type": "player", "attributes": {"rev": 0}}
            answer = await call("410 probe", "POST", "/entities", body=body)
        elif which == 1:
            answer = await call(
                "410 probe", "POST", path + "/events", body=self.event_body(target.external_id)
            )
        elif which == 2:
            answer = await call("410 probe", "PUT", path + "/state/balance", body={"value": "1.00"})
        elif which == 3:
            answer = await call("410 probe", "GET", path)
        elif which == 4:
            answer = await call("410 probe", "GET", path + "/events")
        elif which == 5:
            answer = await call("410 probe", "GET", path + "/state")
        elif which == 6:
            answer = await call("410 probe", "GET", path + "/export")
        else:
            answer = await call("delete", "DELETE", path)  # idempotent
            self.expect_status("repeated delete", answer, 200)
            return
        if self.expect_status(f"probe {which} of deleted {target.external_id}", answer, 410):
            assert answer is not None
            self.check("410 code", _error_code(answer) == "entity_deleted", answer.text[:200])

    # -- batches --

    async def submit_batch(self, kind: str, items: list[dict[str, Any]], expects: list[Expect]) -> None:
        """Submit, wait for the job, and hold every item outcome against its expectation."""
        key = f"{self.soak.run}-c{self.cid}-k{self.n}" if self.rng.random() < 0.25 else None
        self.n += 1
        headers = {"Idempotency-Key": key} if key else None
        body = {kind: items}
        answer = await self.soak.call(
            f"batch {kind}",
            "POST",
            f"/batch/{kind}",
            body=body,
            headers=headers,
            items=len(items),
            compress=self.rng.random() < 0.2,
        )
        if answer is None or not self.expect_status(f"batch {kind} submit", answer, 202):
            self.taint_batch(kind, items)
            return
        job_id = _json(answer)["jobId"]
        job = await self.wait_job(job_id)
        if job is None:
            self.taint_batch(kind, items)
            return
        outcomes = await self.job_items(job_id, len(items))
        if outcomes is None:
            self.taint_batch(kind, items)
            return
        counts = Counter(o["status"] for o in outcomes)
        self.check(
            "job counts",
            (job["succeeded"], job["duplicates"], job["failed"], job["total"])
            == (counts["succeeded"], counts["duplicate"], counts["failed"], len(items)),
            f"job {job_id}: {job['succeeded']}/{job['duplicates']}/{job['failed']} of {job['total']}, "
            f"items {dict(counts)}",
        )
        for index, (outcome, expect) in enumerate(zip(outcomes, expects, strict=True)):
            code = (outcome.get("error") or {}).get("code")
            ok = outcome["index"] == index and outcome["status"] == expect.status
            if expect.status == "failed":
                ok = ok and code == expect.code
            if not self.check(
                f"batch {kind} item",
                ok,
                f"job {job_id} item {index}: {outcome}, expected {expect.status} {expect.code or ''}",
            ):
                self.taint_item(kind, items[index])
                continue
            if expect.on_success is not None and outcome["status"] != "failed":
                expect.on_success(outcome)
        if key is not None and self.rng.random() < 0.4:
            again = await self.soak.call(
                f"batch {kind}", "POST", f"/batch/{kind}", body=body, headers=headers
            )
            if self.expect_status("Idempotency-Key resubmit", again, 202):
                assert again is not None
                self.check("idempotent job", _json(again)["jobId"] == job_id, f"{_json(again)} != {job_id}")
            other = {kind: items[:1]}
            again = await self.soak.call(
                f"batch {kind}", "POST", f"/batch/{kind}", body=other, headers=headers
            )
            if self.expect_status("Idempotency-Key with another body", again, 409):
                assert again is not None
                self.check(
                    "idempotency conflict code",
                    _error_code(again) == "idempotency_conflict",
                    again.text[:200],
                )

    def taint_batch(self, kind: str, items: list[dict[str, Any]]) -> None:
        for item in items:
            self.taint_item(kind, item)

    def taint_item(self, kind: str, item: dict[str, Any]) -> None:
        if kind == "events" and "eventId" in item:
            self.soak.uncertain_events.add(item["eventId"])
            return
        external_id = item.get("externalId")
        target = (
            self.soak.owned.get(external_id)  # type: ignore[arg-type]
            or self.pending.get(external_id)  # type: ignore[arg-type]
            or self.soak.hot.get(external_id)  # type: ignore[arg-type]
        )
        if target is not None:
            target.tainted = True
        elif isinstance(external_id, str):
            self.soak.uncertain_entities.add(external_id)

    async def wait_job(self, job_id: str) -> dict[str, Any] | None:
        started = time.monotonic()
        delay = 0.05
        while time.monotonic() - started < JOB_WAIT_SECONDS:
            answer = await self.soak.call("job poll", "GET", f"/batch/jobs/{job_id}")
            if answer is None or not self.expect_status("job poll", answer, 200):
                return None
            job: dict[str, Any] = _json(answer)
            if job["status"] == "completed":
                return job
            if job["status"] == "failed":
                self.stats.fail("job failed", f"job {job_id}: {str(job)[:300]}")
                return None
            await asyncio.sleep(delay)
            delay = min(0.5, delay * 1.5)
        self.stats.fail("job timeout", f"job {job_id} not completed after {JOB_WAIT_SECONDS:.0f} s")
        return None

    async def job_items(self, job_id: str, total: int) -> list[dict[str, Any]] | None:
        outcomes: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            answer = await self.soak.call("job items", "GET", f"/batch/jobs/{job_id}/items", params=params)
            if answer is None or not self.expect_status("job items", answer, 200):
                return None
            page = _json(answer)
            outcomes += page["data"]
            cursor = page.get("nextCursor")
            if not cursor:
                break
        if not self.check(
            "job items complete", len(outcomes) == total, f"job {job_id}: {len(outcomes)} of {total} outcomes"
        ):
            return None
        return outcomes

    async def op_batch_events(self) -> None:
        r = self.rng
        size = r.randint(50, 400)
        items: list[dict[str, Any]] = []
        expects: list[Expect] = []
        fresh: list[int] = []
        for _ in range(size):
            roll = r.random()
            gone = self.deleted_owned()
            if roll < 0.05 and self.recent:
                event_id, external_id, body = r.choice(self.recent)
                items.append({**body, "externalId": external_id})
                if self.deleted(external_id):
                    expects.append(Expect("failed", "entity_deleted"))
                else:
                    expects.append(Expect("duplicate"))
            elif roll < 0.07 and fresh:
                earlier = r.choice(fresh)
                items.append(dict(items[earlier]))
                expects.append(Expect("duplicate"))
            elif roll < 0.08:
                target = self.pick_writable()
                items.append(
                    {
                        **self.event_body(target.external_id),
                        "type": "no_such_type",
                        "externalId": target.external_id,
                    }
                )
                expects.append(Expect("failed", "unknown_event_type"))
            elif roll < 0.09:
                target = self.pick_writable()
                body = self.event_body(target.external_id)
                body["type"] = "transaction"
                body["data"] = {"type": "bet", "amount": "not-a-number", "currency": "EUR"}
                items.append({**body, "externalId": target.external_id})
                expects.append(Expect("failed", "invalid_field_type"))
            elif roll < 0.10 and gone:
                target = r.choice(gone)
                items.append({**self.event_body(target.external_id), "externalId": target.external_id})
                expects.append(Expect("failed", "entity_deleted"))
            elif roll < 0.105:
                ghost = f"{self.soak.run}-ghost-{self.soak.next_number()}"
                items.append({**self.event_body(ghost), "externalId": ghost})
                expects.append(Expect("failed", "entity_not_found"))
            elif roll < 0.11 and self.recent:
                event_id, external_id, body = r.choice(self.recent)
                changed = {**body, "externalId": external_id, "data": {**body["data"], "conflict": 1}}
                items.append(changed)
                code = "entity_deleted" if self.deleted(external_id) else "event_id_conflict"
                expects.append(Expect("failed", code))
            else:
                target = self.pick_writable()
                body = self.event_body(target.external_id, with_id=r.random() >= 0.05)
                item = {**body, "externalId": target.external_id}
                if "eventId" in item:
                    fresh.append(len(items))
                items.append(item)
                expects.append(Expect("succeeded", on_success=self._ack_batch_event(item)))
        await self.submit_batch("events", items, expects)

    def _ack_batch_event(self, item: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        def ack(outcome: dict[str, Any]) -> None:
            event_id = outcome.get("eventId")
            if "eventId" in item:
                self.check("batch event id", event_id == item["eventId"], f"{outcome} for {item['eventId']}")
            if not isinstance(event_id, str):
                self.mismatch("batch event outcome", f"no eventId in {outcome}")
                return
            missing = item["type"] == "transaction" and "currency" not in item["data"]
            self.check(
                "batch warning", bool(outcome.get("warnings")) == missing, f"{outcome} for {item['data']}"
            )
            self.soak.ack_event(event_id, item["externalId"], item["type"], item["timestamp"], item["data"])
            if "eventId" in item:
                body = {k: v for k, v in item.items() if k != "externalId"}
                self.recent.append((event_id, item["externalId"], body))

        return ack

    async def op_batch_entities(self) -> None:
        """Owned entities only: each item is applied in order, so the model is exact."""
        r = self.rng
        items: list[dict[str, Any]] = []
        expects: list[Expect] = []
        pending = self.pending = {}  # created by this batch
        for _ in range(r.randint(10, 100)):
            roll = r.random()
            live = [o for o in self.live_owned() if o.external_id not in pending] + list(pending.values())
            gone = self.deleted_owned()
            if roll < 0.04 and gone:
                target = r.choice(gone)
                items.append({"externalId": target.external_id, "type": "player", "attributes": {"rev": 1}})
                expects.append(Expect("failed", "entity_deleted"))
            elif roll < 0.07 and live:
                target = r.choice(live)
                items.append({"externalId": target.external_id, "type": "game", "attributes": {"name": "x"}})
                expects.append(Expect("failed", "entity_type_conflict"))
            elif roll < 0.10:
                items.append({"externalId": self.next_id("bad"), "type": "no_such_type", "attributes": {}})
                expects.append(Expect("failed", "unknown_entity_type"))
            elif roll < 0.25 or not live:
                external_id = self.next_id("p")
                attributes = self.new_attributes(first=True)
                owned = Owned(external_id, merge({}, attributes), 1)
                pending[external_id] = owned
                items.append({"externalId": external_id, "type": "player", "attributes": attributes})
                expects.append(Expect("succeeded", on_success=self._created(owned, True)))
            else:
                target = r.choice(live)
                changes = self.new_attributes(first=False)
                target_attrs = merge(target.attributes, changes)
                items.append({"externalId": target.external_id, "type": "player", "attributes": changes})
                # The model moves on now (items apply in order); the outcome confirms it.
                target.attributes = target_attrs
                target.version += 1
                expects.append(Expect("succeeded", on_success=self._created(target, False)))
        await self.submit_batch("entities", items, expects)
        self.owned.extend(pending.values())
        self.soak.owned.update(pending)
        self.pending = {}

    def _created(self, owned: Owned, created: bool) -> Callable[[dict[str, Any]], None]:
        def check(outcome: dict[str, Any]) -> None:
            self.check(
                "batch entity created flag",
                outcome.get("created") is created,
                f"{outcome} for {owned.external_id}",
            )

        return check

    async def op_batch_states(self) -> None:
        r = self.rng
        items: list[dict[str, Any]] = []
        expects: list[Expect] = []
        for _ in range(r.randint(10, 200)):
            roll = r.random()
            gone = self.deleted_owned()
            if roll < 0.04 and gone:
                target_id = r.choice(gone).external_id
                items.append(
                    {
                        "externalId": target_id,
                        "key": "balance",
                        "value": "1.00",
                        "timestamp": rfc3339(now_micros()),
                    }
                )
                expects.append(Expect("failed", "entity_deleted"))
                continue
            target = self.pick_writable()
            if roll < 0.07:
                items.append({"externalId": target.external_id, "key": "no_such_key", "value": 1})
                expects.append(Expect("failed", "unknown_state_key"))
                continue
            key = r.choice(STATE_KEYS)
            current = target.states.get(key)
            if isinstance(target, Hot):
                ts = self.soak.hot_ts(r.randint(0, 3_000_000))
            elif current is not None and r.random() < 0.25:
                ts = current.ts - r.randint(1, 3_600_000_000)
            else:
                ts = self.soak.unique_ts()
            value = self.state_value(key)
            timestamp = rfc3339(ts)
            items.append(
                {"externalId": target.external_id, "key": key, "value": value, "timestamp": timestamp}
            )
            if isinstance(target, Owned):
                # Owned: decide now, in item order, what each item must do.
                should_apply = current is None or ts >= current.ts
                if should_apply:
                    target.states[key] = StateValue(ts, timestamp, value)
                expects.append(Expect("succeeded", on_success=self._state_applied(target, key, should_apply)))
            else:
                expects.append(
                    Expect("succeeded", on_success=self._hot_state(target, key, ts, timestamp, value))
                )
        await self.submit_batch("states", items, expects)

    def _state_applied(self, target: Owned, key: str, applied: bool) -> Callable[[dict[str, Any]], None]:
        def check(outcome: dict[str, Any]) -> None:
            self.check(
                "batch state applied",
                outcome.get("applied") is applied,
                f"{outcome}: expected applied={applied}",
            )

        return check

    def _hot_state(
        self, target: Hot, key: str, ts: int, timestamp: str, value: Any
    ) -> Callable[[dict[str, Any]], None]:
        def record(outcome: dict[str, Any]) -> None:
            self.record_state(
                target, key, ts, timestamp, value, bool(outcome.get("applied")), None, "batch state"
            )

        return record

    # -- reads --

    async def op_get_entity(self) -> None:
        roll = self.rng.random()
        live = self.live_owned()
        if roll < 0.6 and live:
            target = self.rng.choice(live)
            answer = await self.soak.call("get entity", "GET", f"/entities/{target.external_id}")
            if self.expect_status("get own entity", answer, 200):
                assert answer is not None
                self.check_entity(target, _json(answer), "get entity")
            return
        external_id = self.rng.choice(list(self.soak.owned) if roll < 0.8 else list(self.soak.hot))
        gone_before = external_id in self.soak.deleted_at
        answer = await self.soak.call("get entity", "GET", f"/entities/{external_id}")
        if gone_before:
            self.expect_status("get deleted entity", answer, 410)
        else:
            self.expect_status("get entity", answer, 200, 410)

    async def op_list_entities(self) -> None:
        gone_before = set(self.soak.deleted_at)
        params: dict[str, Any] = {"limit": self.rng.choice((50, 100, 200))}
        if self.rng.random() < 0.3:
            params["type"] = "player"
        if self.rng.random() < 0.3:
            params["updatedSince"] = rfc3339(now_micros() - 60_000_000)
        for _ in range(self.rng.randint(1, 4)):
            answer = await self.soak.call("list entities", "GET", "/entities", params=params)
            if not self.expect_status("list entities", answer, 200):
                return
            assert answer is not None
            page = _json(answer)
            for entity in page["data"]:
                self.check(
                    "deleted entity absent from listing",
                    entity["externalId"] not in gone_before,
                    f"{entity['externalId']} was deleted but is listed",
                )
                for name in self.soak.entity_pii & entity["attributes"].keys():
                    value = entity["attributes"][name]
                    self.check(
                        "PII encrypted in listing",
                        isinstance(value, dict) and set(value) == {"$encrypted"},
                        f"{entity['externalId']}.{name} listed as {type(value).__name__}",
                    )
            if not page.get("nextCursor"):
                return
            params["cursor"] = page["nextCursor"]

    async def op_list_events(self) -> None:
        live = self.live_owned()
        if live and self.rng.random() < 0.6:
            await self.read_all_events(self.rng.choice(live))
            return
        target = self.rng.choice(list(self.soak.hot))
        order = self.rng.choice(("asc", "desc"))
        params: dict[str, Any] = {"limit": self.rng.choice((20, 100, 200)), "order": order}
        seen: set[str] = set()
        last: str | None = None
        for _ in range(self.rng.randint(1, 3)):
            answer = await self.soak.call("list events", "GET", f"/entities/{target}/events", params=params)
            if not self.expect_status("list hot events", answer, 200):
                return
            assert answer is not None
            page = _json(answer)
            for event in page["data"]:
                self.check(
                    "no event twice across pages", event["eventId"] not in seen, f"{event['eventId']} twice"
                )
                seen.add(event["eventId"])
                stamp = event["timestamp"]
                if last is not None:
                    self.check(
                        "event order",
                        stamp >= last if order == "asc" else stamp <= last,
                        f"{last} then {stamp} ({order})",
                    )
                last = stamp
            if not page.get("nextCursor"):
                return
            params["cursor"] = page["nextCursor"]

    async def read_all_events(self, target: Owned) -> None:
        """Every page of an owned entity's events: exactly the acknowledged ones (read your writes)."""
        expected = self.soak.by_entity.get(target.external_id, [])
        found = await read_events(
            self.soak, target.external_id, kind="list events", what=f"client {self.cid}"
        )
        if found is None:
            return
        missing = [e for e in expected if e not in found]
        extra = [e for e in found if e not in self.soak.events]
        self.check(
            "own events listed exactly",
            not missing and not extra,
            f"{target.external_id}: {len(missing)} acknowledged events missing {missing[:3]}, "
            f"{len(extra)} unknown listed {extra[:3]}",
        )

    async def op_export(self) -> None:
        """An owned entity's subject-access export: the entity, exactly its events and states."""
        live = self.live_owned()
        if not live:
            await self.op_get_entity()
            return
        target = self.rng.choice(live)
        answer = await self.soak.call("export", "GET", f"/entities/{target.external_id}/export")
        if not self.expect_status("export", answer, 200):
            return
        assert answer is not None
        lines = [orjson.loads(line) for line in answer.content.splitlines() if line.strip()]
        if not self.check(
            "export shape", len(lines) >= 2 and lines[0].get("kind") == "entity", str(lines[:1])
        ):
            return
        self.check_entity(target, lines[0], "export")
        events = [line["eventId"] for line in lines if line.get("kind") == "event"]
        expected = self.soak.by_entity.get(target.external_id, [])
        self.check(
            "export events",
            sorted(events) == sorted(expected),
            f"{target.external_id}: {len(events)} events exported, {len(expected)} acknowledged",
        )
        states = {
            line["key"]: (line["value"], line["timestamp"]) for line in lines if line.get("kind") == "state"
        }
        want = {k: (s.value, s.timestamp) for k, s in target.states.items()}
        self.check("export states", states == want, f"{target.external_id}: {states} != {want}")
        end = lines[-1]
        self.check(
            "export end",
            end.get("kind") == "end"
            and end.get("events") == len(events)
            and end.get("states") == len(states),
            f"{target.external_id}: last line {end}",
        )

    async def op_analytics(self) -> None:
        path, params = self.rng.choice(
            (
                ("/analytics/events", {"groupBy": "type"}),
                ("/analytics/events", {"groupBy": "type,day"}),
                ("/analytics/transactions", {"groupBy": "currency"}),
                ("/analytics/transactions", {"groupBy": "currency,type"}),
                ("/analytics/entities", {"groupBy": "type"}),
                ("/analytics/entities", {"groupBy": "country"}),
            )
        )
        answer = await self.soak.call("analytics", "GET", path, params=params)
        self.expect_status(f"analytics {path}", answer, 200)


async def read_events(soak: Soak, external_id: str, *, kind: str, what: str) -> dict[str, bytes] | None:
    """All of one entity's events through the API (asc, cursor pages): eventId -> digest of data.

    Checks on the way: no eventId twice, ascending timestamps, each event's full data (PII
    decrypted) equal to what was acknowledged.
    """
    found: dict[str, bytes] = {}
    params: dict[str, Any] = {"limit": 1000, "order": "asc"}
    last = ""
    while True:
        answer = await soak.call(kind, "GET", f"/entities/{external_id}/events", params=params)
        if answer is None:
            return None
        if answer.status_code != 200:
            soak.stats.fail("mismatch", f"{what}: list events of {external_id} answered {answer.status_code}")
            return None
        page = _json(answer)
        for event in page["data"]:
            event_id = event["eventId"]
            soak.stats.checks["listed event"] += 1
            if event_id in found:
                soak.stats.fail("mismatch", f"{what}: {event_id} listed twice for {external_id}")
            if event["timestamp"] < last:
                soak.stats.fail("mismatch", f"{what}: {external_id} events out of order at {event_id}")
            last = event["timestamp"]
            found[event_id] = full = digest(event["data"])
            acked = soak.events.get(event_id)
            if acked is not None and (
                acked.full != full or acked.type != event["type"] or acked.timestamp != event["timestamp"]
            ):
                soak.stats.fail(
                    "mismatch", f"{what}: {event_id} of {external_id} reads back altered: {event}"
                )
        cursor = page.get("nextCursor")
        if not cursor:
            return found
        params["cursor"] = cursor


# -- memory ------------------------------------------------------------------------------------------


def group_rss_kb(pgid: int) -> int:
    """Sum of VmRSS over the live processes of a process group (server and its workers)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total


async def sample_memory(pgid: int, series: list[tuple[float, int]], started: float, soak: Soak) -> None:
    next_progress = PROGRESS_SECONDS
    last_requests = 0
    while True:
        elapsed = time.monotonic() - started
        series.append((elapsed, group_rss_kb(pgid)))
        if elapsed >= next_progress:
            rate = (soak.stats.requests - last_requests) / PROGRESS_SECONDS
            last_requests = soak.stats.requests
            log(
                f"{elapsed:5.0f} s: {soak.stats.requests} requests ({rate:.0f}/s lately), "
                f"{len(soak.events)} events acknowledged, RSS {series[-1][1] / 1024:.0f} MB, "
                f"429s {sum(soak.stats.throttled.values())}, failures {sum(soak.stats.failures.values())}"
            )
            next_progress += PROGRESS_SECONDS
        await asyncio.sleep(SAMPLE_SECONDS)


@dataclass
class MemoryVerdict:
    warmup: float
    window: float
    first_mb: float
    last_mb: float

    @property
    def growth(self) -> float:
        return (self.last_mb - self.first_mb) / self.first_mb if self.first_mb else float("nan")

    @property
    def flat(self) -> bool:
        return self.growth < GROWTH_LIMIT


def memory_verdict(series: list[tuple[float, int]], duration: float) -> MemoryVerdict | None:
    """Median RSS of [warm-up, warm-up + window) against the last window of the run.

    10-minute runs: 1-minute warm-up, 2-minute windows; shorter runs scale both down (a
    sixth and a fifth of the duration) so a smoke run still prints a verdict.
    """
    warmup = min(60.0, duration / 6)
    window = min(120.0, duration / 5)
    first = [kb for t, kb in series if warmup <= t < warmup + window]
    last = [kb for t, kb in series if duration - window <= t <= duration + SAMPLE_SECONDS / 2]
    if not first or not last:
        return None
    return MemoryVerdict(warmup, window, statistics.median(first) / 1024, statistics.median(last) / 1024)


# -- final verification ------------------------------------------------------------------------------


@dataclass
class Verification:
    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)
        log(f"check: {line}")


async def verify(soak: Soak, database_url: str, operator_id: str) -> Verification:
    v = Verification()
    fail = soak.stats.fail
    conn = await asyncpg.connect(sw.asyncpg_dsn(database_url), timeout=10)
    try:
        ws = await conn.fetchval(
            "SELECT id FROM workspaces WHERE operator_id = $1 AND mode = 'live'", operator_id
        )
        jobs = dict(
            await conn.fetch("SELECT status, count(*) FROM jobs WHERE workspace_id = $1 GROUP BY status", ws)
        )
        if set(jobs) - {"completed"}:
            fail("jobs", f"jobs not completed after the run: {jobs}")
        v.add(f"jobs by status: {jobs}")

        deleted = {e for e, o in soak.owned.items() if o.deleted}
        tainted = {e for e, o in [*soak.owned.items(), *soak.hot.items()] if o.tainted}
        seen: set[str] = set()
        unexpected: list[str] = []
        altered: list[str] = []
        uncertain_stored = rows = 0
        async with conn.transaction():
            query = (
                "SELECT event_id, external_id, type, data::text, pii::text, timestamp FROM events "
                "WHERE workspace_id = $1"
            )
            async for row in conn.cursor(query, ws, prefetch=5000):
                rows += 1
                event_id = row["event_id"]
                acked = soak.events.get(event_id)
                if acked is None:
                    if event_id in soak.uncertain_events or row["external_id"] in tainted:
                        uncertain_stored += 1
                    else:
                        unexpected.append(event_id)
                    continue
                seen.add(event_id)
                pii = tuple(sorted(orjson.loads(row["pii"]))) if row["pii"] else ()
                if (
                    row["external_id"] != acked.external_id
                    or row["type"] != acked.type
                    or row["timestamp"] != acked.timestamp
                    or digest(orjson.loads(row["data"])) != acked.plain
                    or pii != acked.pii
                ):
                    altered.append(event_id)
        missing_live = [e for e, a in soak.events.items() if e not in seen and a.external_id not in deleted]
        missing_deleted = sum(1 for e, a in soak.events.items() if e not in seen and a.external_id in deleted)
        for what, found in (
            ("missing", missing_live),
            ("not acknowledged but stored", unexpected),
            ("altered", altered),
        ):
            if found:
                fail("events", f"{len(found)} events {what}, e.g. {found[:5]}")
        live_acked = sum(1 for a in soak.events.values() if a.external_id not in deleted)
        v.add(
            f"events: {len(soak.events)} acknowledged ({live_acked} of live entities), {rows} rows stored; "
            f"missing {len(missing_live)}, altered {len(altered)}, stored without acknowledgement "
            f"{len(unexpected)}; {len(soak.events) - live_acked} of deleted entities ({missing_deleted} "
            f"no longer stored); {uncertain_stored} rows of requests without an answer"
        )

        entity_rows = {
            r["external_id"]: r
            for r in await conn.fetch(
                "SELECT external_id, type, attributes::text, pii::text, version, deleted_at FROM entities "
                "WHERE workspace_id = $1",
                ws,
            )
        }
        problems: list[str] = []
        leaks = 0
        expected_entities = _expected_entities(soak)
        for external_id, expected_attrs, version in expected_entities:
            row = entity_rows.get(external_id)
            if row is None or row["deleted_at"] is not None:
                problems.append(f"{external_id}: {'absent' if row is None else 'deleted'}")
                continue
            attributes = orjson.loads(row["attributes"])
            pii_text = row["pii"]
            plain = {k: v for k, v in expected_attrs.items() if k not in soak.entity_pii}
            pii_names = sorted(k for k in expected_attrs if k in soak.entity_pii)
            if (
                row["version"] != version
                or attributes != plain
                or sorted(orjson.loads(pii_text)) != pii_names
            ):
                problems.append(
                    f"{external_id}: version {row['version']} (expected {version}), {attributes} vs {plain}"
                )
            for name in pii_names:
                value = expected_attrs[name]
                if (
                    isinstance(value, str)
                    and len(value) >= 6
                    and (value in pii_text or value in row["attributes"])
                ):
                    leaks += 1
        for external_id in deleted:
            row = entity_rows.get(external_id)
            if row is None or row["deleted_at"] is None:
                problems.append(
                    f"{external_id}: deleted (acknowledged) but {'absent' if row is None else 'live'}"
                )
        known = set(soak.owned) | set(soak.hot) | soak.uncertain_entities
        strangers = [e for e in entity_rows if e not in known]
        if problems:
            fail("entities", f"{len(problems)} entities differ, e.g. {problems[:3]}")
        if strangers:
            fail(
                "entities",
                f"{len(strangers)} entities stored that no acknowledged write created: {strangers[:5]}",
            )
        if leaks:
            fail("pii", f"{leaks} PII values found in plain text in the entities table")
        live_total = sum(1 for r in entity_rows.values() if r["deleted_at"] is None)
        v.add(
            f"entities (SQL): {len(entity_rows)} rows, {live_total} live, {len(deleted)} deleted; "
            f"{len(problems)} differ from the acknowledged writes, {len(strangers)} unknown, "
            f"{leaks} PII values in plain text; {len(tainted)} tainted by lost answers"
        )

        state_rows = await conn.fetch(
            "SELECT external_id, key, value::text, timestamp FROM states WHERE workspace_id = $1", ws
        )
        stored_states = {(r["external_id"], r["key"]): r for r in state_rows}
        expected_states = 0
        wrong: list[str] = []
        for external_id, target in [*soak.owned.items(), *soak.hot.items()]:
            if target.tainted or (isinstance(target, Owned) and target.deleted):
                continue
            for key, want in target.states.items():
                expected_states += 1
                row = stored_states.get((external_id, key))
                if (
                    row is None
                    or orjson.loads(row["value"]) != want.value
                    or row["timestamp"] != want.timestamp
                ):
                    wrong.append(f"{external_id}/{key}: {dict(row) if row else None}, expected {want}")
        strays = [
            k
            for k in stored_states
            if k[0] not in deleted and k[0] not in tainted and k[1] not in _states_of(soak, k[0])
        ]
        if wrong:
            fail("states", f"{len(wrong)} states are not the newest acknowledged value, e.g. {wrong[:3]}")
        if strays:
            fail("states", f"{len(strays)} states stored that no acknowledged write set: {strays[:5]}")
        v.add(
            f"states (SQL): {len(state_rows)} rows; {expected_states} checked against the newest "
            "acknowledged "
            f"timestamp: {len(wrong)} wrong, {len(strays)} unexpected"
        )
    finally:
        await conn.close()

    await verify_api(soak, v, expected_entities, deleted, tainted)
    return v


def _expected_entities(soak: Soak) -> list[tuple[str, dict[str, Any], int]]:
    out = [(e, o.attributes, o.version) for e, o in soak.owned.items() if not o.deleted and not o.tainted]
    for external_id, hot in soak.hot.items():
        if hot.tainted or not hot.versions:
            continue
        top = max(hot.versions)
        if top != hot.upserts:
            soak.stats.fail(
                "entities",
                f"{external_id}: {hot.upserts} acknowledged upserts but the newest answered version {top}",
            )
        out.append((external_id, hot.versions[top], top))
    return out


def _states_of(soak: Soak, external_id: str) -> dict[str, StateValue]:
    target = soak.owned.get(external_id) or soak.hot.get(external_id)
    return target.states if target is not None else {}


async def verify_api(
    soak: Soak,
    v: Verification,
    expected_entities: list[tuple[str, dict[str, Any], int]],
    deleted: set[str],
    tainted: set[str],
) -> None:
    """Through the API: live entities (PII decrypted) with all their events; deleted ones 410."""
    fail = soak.stats.fail
    gate = asyncio.Semaphore(8)
    expected = {e: (attrs, version) for e, attrs, version in expected_entities}
    counts = Counter[str]()

    async def live(external_id: str) -> None:
        async with gate:
            answer = await soak.call("verify", "GET", f"/entities/{external_id}")
            if answer is None or answer.status_code != 200:
                fail("api", f"GET {external_id} answered {answer.status_code if answer else None}")
                return
            got = _json(answer)
            attrs, version = expected[external_id]
            if got["attributes"] != attrs or got["version"] != version:
                fail(
                    "api",
                    f"GET {external_id}: version {got['version']} {got['attributes']}, "
                    f"expected {version} {attrs}",
                )
            found = await read_events(soak, external_id, kind="verify", what="final check")
            if found is None:
                return
            want = set(soak.by_entity.get(external_id, ()))
            missing, extra = want - found.keys(), found.keys() - want - soak.uncertain_events
            if missing or extra:
                fail(
                    "api",
                    f"{external_id}: {len(missing)} acknowledged events not listed, "
                    f"{len(extra)} unknown listed",
                )
            counts["events listed"] += len(found)
            counts["entities read"] += 1

    async def gone(external_id: str) -> None:
        async with gate:
            for path in (f"/entities/{external_id}", f"/entities/{external_id}/events"):
                answer = await soak.call("verify", "GET", path)
                if answer is None or answer.status_code != 410:
                    fail(
                        "api",
                        f"GET {path} of a deleted entity answered {answer.status_code if answer else None}",
                    )
            counts["deleted checked"] += 1

    await asyncio.gather(*(live(e) for e in expected), *(gone(e) for e in deleted))
    v.add(
        f"API: {counts['entities read']} live entities read (PII decrypted) with {counts['events listed']} "
        f"events, each as acknowledged; {counts['deleted checked']} deleted entities answer 410"
    )

    # Listing: no deleted entity, every live one.
    listed: set[str] = set()
    params: dict[str, Any] = {"limit": 1000}
    while True:
        answer = await soak.call("verify", "GET", "/entities", params=params)
        if answer is None or answer.status_code != 200:
            fail("api", "GET /entities failed during the final check")
            break
        page = _json(answer)
        listed.update(e["externalId"] for e in page["data"])
        if not page.get("nextCursor"):
            break
        params["cursor"] = page["nextCursor"]
    if listed & deleted:
        fail("api", f"{len(listed & deleted)} deleted entities are listed: {sorted(listed & deleted)[:5]}")
    should_list = set(expected)
    if should_list - listed:
        fail(
            "api",
            f"{len(should_list - listed)} live entities are not listed: {sorted(should_list - listed)[:5]}",
        )

    # Analytics over every acknowledged event of a live entity.
    live_events = [
        a for a in soak.events.values() if a.external_id not in deleted and a.external_id not in tainted
    ]
    by_type = Counter(a.type for a in live_events)
    sums: dict[str | None, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for a in live_events:
        if a.money is not None:
            sums[a.money[0]][0] += 1
            sums[a.money[0]][1] += Decimal(a.money[1])
    window = {
        "from": rfc3339(now_micros() - 3 * 86_400 * 1_000_000),
        "to": rfc3339(now_micros() + 3_600_000_000),
    }
    analytics_ok = True
    if not tainted:
        answer = await soak.call("verify", "GET", "/analytics/events", params={**window, "groupBy": "type"})
        got_types = (
            {r["type"]: r["count"] for r in _json(answer)["data"]}
            if answer and answer.status_code == 200
            else None
        )
        if got_types != dict(by_type):
            analytics_ok = False
            fail("analytics", f"event counts {got_types}, expected {dict(by_type)}")
        answer = await soak.call(
            "verify", "GET", "/analytics/transactions", params={**window, "groupBy": "currency"}
        )
        got_sums = (
            {r.get("currency"): (r["count"], Decimal(r["sum"])) for r in _json(answer)["data"]}
            if answer and answer.status_code == 200
            else None
        )
        want_sums = {c: (n, s) for c, (n, s) in sums.items()}
        if got_sums != want_sums:
            analytics_ok = False
            fail("analytics", f"transaction sums {got_sums}, expected {want_sums}")
    answer = await soak.call("verify", "GET", "/analytics/entities", params={"groupBy": "type"})
    got_entities = (
        {r["type"]: r["count"] for r in _json(answer)["data"]}
        if answer and answer.status_code == 200
        else None
    )
    live_count = len(set(soak.owned) | set(soak.hot)) - len(deleted)
    if not tainted and got_entities != {"player": live_count}:
        analytics_ok = False
        fail("analytics", f"entity counts {got_entities}, expected player: {live_count}")
    v.add(
        f"listing: {len(listed)} entities listed, none deleted; analytics: {sum(by_type.values())} "
        "live events by "
        f"type, {sum(n for n, _ in sums.values())} transactions summed over {len(sums)} currencies, "
        f"{live_count} live players: {'equal to the acknowledged data' if analytics_ok else 'MISMATCH'}"
    )


# -- the run -----------------------------------------------------------------------------------------


async def setup(soak: Soak) -> None:
    answer = await soak.call("setup", "PUT", "/settings", body={"templateId": TEMPLATE})
    if answer is None or answer.status_code != 200:
        raise RuntimeError(f"PUT /settings failed: {answer.text if answer else None}")
    answer = await soak.call("setup", "GET", f"/templates/{TEMPLATE}")
    if answer is None or answer.status_code != 200:
        raise RuntimeError("GET /templates failed")
    template = _json(answer)
    soak.entity_pii = frozenset(f for f, s in template["entityTypes"]["player"]["fields"].items() if s["pii"])
    soak.event_pii = {
        name: frozenset(f for f, s in spec["fields"].items() if s["pii"])
        for name, spec in template["eventTypes"].items()
    }
    for n in range(HOT_ENTITIES):
        external_id = f"{soak.run}-hot-{n:03d}"
        attributes = {
            "email": f"hot{n}@example.com",
            "first_name": "Hot",
            "country": "MT",
            "currency": "EUR",
            "rev": 0,
        }
        answer = await soak.call(
            "setup",
            "POST",
            "/entities",
            body={"externalId": external_id, "type": "player", "attributes": attributes},
        )
        if answer is None or answer.status_code != 201:
            raise RuntimeError(f"creating {external_id} failed: {answer.text if answer else None}")
        soak.hot[external_id] = Hot(external_id, versions={1: _json(answer)["attributes"]}, upserts=1)


async def soak_run(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
    load_before = os.getloadavg()[0]
    env = {**os.environ, "ONEHAZEL_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    env.pop("ONEHAZEL_DATABASE_URL", None)
    name = f"onehazel_bench_{uuid.uuid4().hex[:10]}"
    database_url = sw.with_database(args.database_url, name)
    await sw.admin(args.database_url, f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="onehazel-soak-") as tmp:
            workdir = Path(tmp)
            sw.onehazel_cli(["migrate", "--database-url", database_url], env)
            operator = json.loads(
                sw.onehazel_cli(
                    ["operators", "create", "soak", "--json", "--database-url", database_url], env
                )
            )
            limits = [
                "--writes",
                str(args.write_rate),
                "--reads",
                str(args.read_rate),
                "--batches",
                str(args.batch_rate),
            ]
            sw.onehazel_cli(
                ["operators", "limits", operator["operatorId"], *limits, "--database-url", database_url], env
            )
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
            serve += ["--workers", str(args.workers), "--log-level", args.log_level]
            log_path = workdir / "serve.log"
            async with sw.running(serve, env=env, log=log_path, port=port) as pgid:
                log(
                    f"database {name}; onehazel serve pid {pgid} on port {port}, --workers {args.workers}; "
                    f"rate limits writes {args.write_rate}/s, reads {args.read_rate}/s, "
                    f"batches {args.batch_rate}/s"
                )
                limits_http = httpx.Limits(
                    max_connections=args.clients * 2 + 16, max_keepalive_connections=args.clients * 2 + 16
                )
                async with httpx.AsyncClient(
                    base_url=f"http://{HOST}:{port}{BASE}",
                    headers={"Authorization": f"Bearer {operator['liveKey']}"},
                    timeout=REQUEST_TIMEOUT,
                    limits=limits_http,
                ) as http:
                    soak = Soak(http, args, run=f"s{args.seed}")
                    await setup(soak)
                    clients = [Client(soak, cid, args.seed) for cid in range(args.clients)]
                    series: list[tuple[float, int]] = []
                    cpu_before = (sw.group_cpu_seconds(pgid), time.process_time())
                    started = time.monotonic()
                    soak.deadline = started + args.duration
                    log(f"{args.clients} clients for {args.duration:g} s ...")
                    sampler = asyncio.create_task(sample_memory(pgid, series, started, soak))
                    try:
                        await asyncio.gather(*(c.run() for c in clients))
                    finally:
                        ran = time.monotonic() - started
                        series.append((ran, group_rss_kb(pgid)))
                        server_cpu = (sw.group_cpu_seconds(pgid) or 0.0) - (cpu_before[0] or 0.0)
                        soak.cpu = (server_cpu, time.process_time() - cpu_before[1])
                        sampler.cancel()
                    log(f"clients stopped after {ran:.1f} s; verifying")
                    checked = await verify(soak, database_url, operator["operatorId"])
                    tail = sw._tail(log_path, 15) if soak.stats.failures else ""
    finally:
        await sw.admin(args.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    verdict = memory_verdict(series, args.duration)
    report(args, soak, clients, ran, series, verdict, checked, load_before)
    if tail:
        print(f"\nserver log tail:\n{tail}")
    failed = bool(soak.stats.failures) or verdict is None or not verdict.flat
    print(f"\nRESULT: {'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


def report(
    args: argparse.Namespace,
    soak: Soak,
    clients: list[Client],
    ran: float,
    series: list[tuple[float, int]],
    verdict: MemoryVerdict | None,
    checked: Verification,
    load_before: float,
) -> None:
    stats = soak.stats
    print()
    print(
        f"soak: {ran:.0f} s, {args.clients} clients, --workers {args.workers}, seed {args.seed}, PostgreSQL; "
        f"machine {os.cpu_count()} cores, load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    ops = Counter[str]()
    for c in clients:
        ops.update(c.ops)
    print(
        f"CPU seconds during the traffic: server {soak.cpu[0]:.0f} ({soak.cpu[0] / ran * 100:.0f}% of a "
        f"core), these clients {soak.cpu[1]:.0f} ({soak.cpu[1] / ran * 100:.0f}%); PostgreSQL not counted"
    )
    print("operations: " + ", ".join(f"{op} {n}" for op, n in ops.most_common()))
    print()
    header = f"{'kind':<22}{'requests':>9}{'req/s':>8}{'items/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'429s':>6}"
    header += "  statuses"
    print(header)
    print("-" * (len(header) + 20))
    for kind in sorted(stats.statuses, key=lambda k: -sum(stats.statuses[k].values())):
        lat = stats.latencies[kind]
        answered = sum(stats.statuses[kind].values())
        items = f"{stats.items[kind] / ran:,.0f}" if stats.items[kind] else ""
        codes = " ".join(f"{code}:{n}" for code, n in sorted(stats.statuses[kind].items()))
        print(
            f"{kind:<22}{answered:>9}{answered / ran:>8.1f}{items:>9}{percentile(lat, 50):>8.1f}"
            f"{percentile(lat, 99):>8.1f}{stats.throttled[kind]:>6}  {codes}"
        )
    total = sum(sum(c.values()) for c in stats.statuses.values())
    five = sum(n for c in stats.statuses.values() for code, n in c.items() if code >= 500)
    print(f"{'all':<22}{total:>9}{total / ran:>8.1f}")
    print()
    print(
        f"acknowledged: {len(soak.events)} events, {len(soak.owned) + len(soak.hot)} entities "
        f"({sum(1 for o in soak.owned.values() if o.deleted)} deleted); "
        f"429 answers {sum(stats.throttled.values())} (waited Retry-After and resent), "
        f"409 conflict retries {sum(stats.retried_409.values())}, 5xx {five}, "
        f"connection errors {stats.failures['connection']}"
    )
    print(f"checks on the way: {sum(stats.checks.values())} ({len(stats.checks)} kinds)")
    for line in checked.lines:
        print(f"final check: {line}")
    print()
    mbs = [kb / 1024 for _, kb in series]
    print(f"server RSS (MB, every {SAMPLE_SECONDS:g} s, sum over the serve process group):")
    for i in range(0, len(mbs), 20):
        print("  " + " ".join(f"{mb:.0f}" for mb in mbs[i : i + 20]))
    if verdict is None:
        print("memory: not enough samples for a verdict (run longer)")
    else:
        print(
            f"memory: median {verdict.first_mb:.1f} MB over [{verdict.warmup:.0f} s, "
            f"{verdict.warmup + verdict.window:.0f} s) vs {verdict.last_mb:.1f} MB over the last "
            f"{verdict.window:.0f} s: growth {verdict.growth * 100:+.1f}% -> "
            f"{'flat' if verdict.flat else 'NOT flat'} (limit < {GROWTH_LIMIT * 100:.0f}%)"
        )
    if stats.failures:
        print(f"\nFAILURES: {dict(stats.failures)}")
        for example in stats.examples:
            print(f"  {example}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=600, help="seconds of traffic (default 600)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (32)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (1)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the clients' random choices (1)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("ONEHAZEL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL server (and a database to connect to) where the soak database is created",
    )
    parser.add_argument(
        "--write-rate", type=int, default=20_000, help="operator's single-write rate limit /s"
    )
    parser.add_argument("--read-rate", type=int, default=20_000, help="operator's read rate limit /s")
    parser.add_argument(
        "--batch-rate",
        type=int,
        default=5,
        help="operator's batch-submit rate limit /s (5: not far above what the mix sends, so 429s happen)",
    )
    parser.add_argument("--log-level", default="warning", help="onehazel serve --log-level (default warning)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.clients < 1 or args.workers < 1:
        parser.error("--duration, --clients and --workers must be positive")
    return args


def main() -> int:
    args = parse_args()
    run: Callable[[Coroutine[Any, Any, int]], int]
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        return run(soak_run(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted: server stopped, soak database dropped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
