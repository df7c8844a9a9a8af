"""Per-workspace rate limits: a token bucket per workspace and traffic class.

Three classes, each with its own budget: ``writes`` (single-item POST/PUT/DELETE),
``batches`` (batch submits) and ``reads`` (GETs). An operator's rates (tokens a
second; the burst is ``BURST_FACTOR`` times that) apply to its live and its test
workspace alike, each with buckets of its own; they default to ``DEFAULT_RATES``
and are changed with ``onehazel operators limits``. Running servers pick a change
up within ``CACHE_SECONDS`` (2 s).

Several API processes enforce one budget without a store round trip per request:
each process leases tokens in blocks from the shared bucket (``storage/buckets.py``)
and spends them locally. A block is at most ``LEASE_SHARE`` (10%) of the burst,
sized to what the process spent from its previous lease, and lives at most
``LEASE_SECONDS`` (1 s); unspent tokens then lapse. Since every token is taken from
the shared bucket before it is spent, N processes together never admit more than
the budget (burst + rate x time, up to clock skew x rate between machines); they
may admit less, by at most one lapsed block per process per second. With the
in-process store (one process) the count is exact.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from onehazel.domain.errors import NotFound
from onehazel.domain.workspace import Workspace
from onehazel.services.core import Core
from onehazel.storage.buckets import BucketStore

CLASSES = ("writes", "batches", "reads")
DEFAULT_RATES = {"writes": 1000, "batches": 20, "reads": 500}
BURST_FACTOR = 2
MAX_RATE = 1_000_000
LEASE_SHARE = 0.1
LEASE_SECONDS = 1.0


@dataclass(frozen=True)
class Limits:
    """An operator's rates per class (requests a second) and which of them are its own."""

    rates: dict[str, int]
    custom: frozenset[str]

    def burst(self, traffic: str) -> int:
        return self.rates[traffic] * BURST_FACTOR

    def to_wire(self) -> dict[str, dict[str, int | bool]]:
        return {
            name: {"rate": self.rates[name], "burst": self.burst(name), "default": name not in self.custom}
            for name in CLASSES
        }


@dataclass(frozen=True)
class Decision:
    """One request's verdict, with what the RateLimit headers report."""

    traffic: str
    limit: int
    """The burst: the most requests a full bucket admits at once (``q``)."""
    window: int
    """Seconds a full bucket takes to refill from empty (``w``)."""
    remaining: int
    reset: int
    """Whole seconds (rounded up) until the bucket is full again (``t``)."""
    retry_after: int
    """0 when admitted; else whole seconds (>= 1) until a token is due."""

    @property
    def allowed(self) -> bool:
        return self.retry_after == 0


class _Lease:
    """This process's share of one shared bucket."""

    __slots__ = ("tokens", "taken", "expires", "left", "at", "blocked_until", "pending")

    def __init__(self) -> None:
        self.tokens = 0  # leased and not yet spent
        self.taken = 0  # size of the current lease
        self.expires = 0.0
        self.left = 0.0  # the shared bucket's level after the lease
        self.at = 0.0
        self.blocked_until = 0.0  # the shared bucket had no whole token: answer 429 until then
        self.pending: asyncio.Event | None = None


class Limiter:
    """Admits or refuses requests against token buckets, leasing from ``buckets`` in blocks."""

    def __init__(self, buckets: BucketStore, *, clock: Callable[[], float] = time.time) -> None:
        self.buckets = buckets
        self.clock = clock
        self._leases: dict[str, _Lease] = {}

    async def acquire(self, key: str, *, rate: float, burst: float) -> tuple[bool, float, float]:
        """Spend one token of bucket ``key``: (admitted, tokens left (estimate), seconds until one)."""
        if not self.buckets.shared:  # one process: the store is a dict, ask it every time
            now = self.clock()
            grant = await self.buckets.take(key, rate=rate, burst=burst, want=1, now=now)
            return grant.taken == 1, grant.tokens, max(0.0, (1 - grant.tokens) / rate)
        lease = self._lease_of(key)
        while True:
            now = self.clock()
            if lease.tokens >= 1 and now < lease.expires:
                lease.tokens -= 1
                return True, self._estimate(lease, now, rate, burst), 0.0
            if now < lease.blocked_until:
                return False, self._estimate(lease, now, rate, burst), lease.blocked_until - now
            if lease.pending is not None:  # another request is leasing: share its block
                await lease.pending.wait()
                continue
            lease.pending = asyncio.Event()
            try:
                await self._renew(lease, key, now, rate, burst)
            finally:
                lease.pending.set()
                lease.pending = None

    async def _renew(self, lease: _Lease, key: str, now: float, rate: float, burst: float) -> None:
        """Lease a new block: twice the last one if it was spent in time, else what was spent of it."""
        block = max(1, math.ceil(burst * LEASE_SHARE))
        if now < lease.expires:
            want = min(block, 2 * max(1, lease.taken))
        else:
            want = min(block, max(1, lease.taken - lease.tokens))
        grant = await self.buckets.take(key, rate=rate, burst=burst, want=want, now=now)
        lease.tokens = lease.taken = grant.taken
        lease.left, lease.at = grant.tokens, now
        lease.expires = now + LEASE_SECONDS
        lease.blocked_until = now + (1 - grant.tokens) / rate if grant.taken == 0 else 0.0

    @staticmethod
    def _estimate(lease: _Lease, now: float, rate: float, burst: float) -> float:
        """Tokens this process could still spend: its lease, plus the shared level as last seen."""
        own = lease.tokens if now < lease.expires else 0
        return min(burst, own + lease.left + max(0.0, now - lease.at) * rate)

    def _lease_of(self, key: str) -> _Lease:
        lease = self._leases.get(key)
        if lease is None:
            if len(self._leases) >= 100_000:
                self._leases = {k: v for k, v in self._leases.items() if v.pending is not None}
            lease = self._leases[key] = _Lease()
        return lease


class RateLimitService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.limiter = Limiter(core.buckets)

    async def check(self, ws: Workspace, traffic: str) -> Decision:
        """Spend one request of ``traffic`` from the workspace's budget; the verdict either way."""
        limits = await self.limits(ws.operator_id)
        rate = limits.rates[traffic]
        burst = rate * BURST_FACTOR
        admitted, left, wait = await self.limiter.acquire(f"{ws.id}:{traffic}", rate=rate, burst=burst)
        remaining = min(int(left), burst - 1) if admitted else 0  # this request spent one
        # From what is reported, not the estimate: a shared store's estimate may read full
        # (its lease not yet counted), which gave "r=1999;t=0".
        reset = math.ceil((burst - remaining) / rate - 1e-9)
        return Decision(
            traffic=traffic,
            limit=burst,
            window=BURST_FACTOR,
            remaining=remaining,
            reset=max(reset, 0),
            retry_after=0 if admitted else max(1, math.ceil(wait)),
        )

    async def limits(self, operator_id: str) -> Limits:
        """The operator's limits, cached for a couple of seconds per process."""

        async def load() -> Limits:
            async with self.core.store.begin() as uow:
                own = await uow.rate_limits.get(operator_id)
            return Limits({**DEFAULT_RATES, **own}, frozenset(own))

        limits: Limits = await self.core.settings_cache.get_or_load("limits:" + operator_id, load)
        return limits

    async def configure(
        self, operator_id: str, rates: dict[str, int | None], *, reset: bool = False
    ) -> Limits:
        """Set the operator's rates (None: back to the default); ``reset`` clears them all first."""
        changes: dict[str, int | None] = dict.fromkeys(CLASSES) if reset else {}
        for name, rate in rates.items():
            if name not in CLASSES:
                raise ValueError(f"unknown traffic class {name!r} (known: {', '.join(CLASSES)})")
            if rate is not None and not 1 <= rate <= MAX_RATE:
                raise ValueError(f"a {name} rate must be 1 to {MAX_RATE} requests a second")
            changes[name] = rate
        async with self.core.store.begin() as uow:
            if await uow.workspaces.workspace_of(operator_id, "live") is None:
                raise NotFound(f"no operator {operator_id!r} (onehazel keys list shows them)")
            if changes:
                await uow.rate_limits.put(operator_id, changes, now=self.core.clock())
        self.core.settings_cache.drop("limits:" + operator_id)
        return await self.limits(operator_id)
