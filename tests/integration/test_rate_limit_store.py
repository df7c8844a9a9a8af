"""The token-bucket stores, one contract suite over all of them, and the leasing limiter.

Stores: in-process (the embedded default), the ``rate_buckets`` table on SQLite and
on PostgreSQL, and Redis. Redis tests skip with the reason when no server answers
at ONEHAZEL_TEST_REDIS_URL (default redis://127.0.0.1:6379/0), except under CI
(CI=true), where they fail instead. Time is passed explicitly, so refills are
tested without sleeping.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from onehazel.bootstrap import buckets_for, open_services
from onehazel.config import Config
from onehazel.services.ratelimit import Limiter
from onehazel.storage.buckets import BucketStore, Grant, MemoryBuckets, RedisBuckets, SqlBuckets
from tests.conftest import keyed_env

REDIS_URL = os.environ.get("ONEHAZEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_REDIS = os.environ.get("CI", "").lower() == "true"
# The stores several processes can share (the in-process one is asked on every request).
SHARED = pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
T0 = 1_800_000_000.0  # a whole second, so sums of halves are exact in every store


async def _redis_store() -> RedisBuckets:
    store = RedisBuckets(REDIS_URL, prefix=f"onehazel-test:{uuid.uuid4().hex}:", timeout=2)
    try:
        await store.take("probe", rate=1, burst=1, want=0, now=T0)
    except Exception as exc:
        await store.close()
        reason = f"Redis not reachable at {REDIS_URL} ({type(exc).__name__}: {exc})"
        if REQUIRE_REDIS:
            pytest.fail(f"{reason}; CI requires Redis", pytrace=False)
        pytest.skip(f"{reason}; set ONEHAZEL_TEST_REDIS_URL to run the Redis tests")
    return store


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(kind: str, request: pytest.FixtureRequest) -> str | None:
    """The session's migrated database for the table stores (a sync fixture: they set up with asyncio.run)."""
    if kind in ("sqlite", "postgres"):
        return str(request.getfixturevalue(f"{kind}_url"))
    return None


@pytest.fixture
async def store(kind: str, store_url: str | None) -> AsyncIterator[BucketStore]:
    if kind == "memory":
        yield MemoryBuckets()
    elif kind == "redis":
        redis = await _redis_store()
        yield redis
        await redis.close()
    else:
        assert store_url is not None
        services = await open_services(Config.load(store_url, env=keyed_env()))
        yield SqlBuckets(services.core.store)
        await services.close()


def key() -> str:
    return f"ws_{uuid.uuid4().hex}:writes"


async def take(
    store: BucketStore, bucket: str, want: int, *, at: float, rate: float = 4, burst: float = 10
) -> Grant:
    return await store.take(bucket, rate=rate, burst=burst, want=want, now=at)


# --- the store contract -------------------------------------------------------------------------


async def test_a_new_bucket_is_full(store: BucketStore) -> None:
    assert await take(store, key(), 3, at=T0) == Grant(3, 7.0)


async def test_takes_at_most_the_whole_tokens_there_are(store: BucketStore) -> None:
    bucket = key()
    assert (await take(store, bucket, 8, at=T0)).taken == 8
    assert await take(store, bucket, 8, at=T0) == Grant(2, 0.0)
    assert await take(store, bucket, 1, at=T0) == Grant(0, 0.0)


async def test_refills_at_the_rate_keeping_fractions(store: BucketStore) -> None:
    bucket = key()
    await take(store, bucket, 10, at=T0)
    assert await take(store, bucket, 5, at=T0 + 0.5) == Grant(2, 0.0)  # 4 a second
    assert await take(store, bucket, 5, at=T0 + 0.625) == Grant(0, 0.5)
    assert await take(store, bucket, 5, at=T0 + 0.75) == Grant(1, 0.0)


async def test_refills_never_beyond_the_burst(store: BucketStore) -> None:
    bucket = key()
    await take(store, bucket, 10, at=T0)
    assert await take(store, bucket, 100, at=T0 + 3600) == Grant(10, 0.0)


async def test_a_lower_burst_applies_at_once(store: BucketStore) -> None:
    bucket = key()
    assert await take(store, bucket, 1, at=T0, burst=100) == Grant(1, 99.0)
    assert await take(store, bucket, 100, at=T0, burst=10) == Grant(10, 0.0)


async def test_a_clock_behind_adds_nothing_and_does_not_rewind_the_bucket(store: BucketStore) -> None:
    """Another process whose clock lags must not refill, nor make the next refill count twice."""
    bucket = key()
    await take(store, bucket, 10, at=T0)
    assert await take(store, bucket, 5, at=T0 - 30) == Grant(0, 0.0)
    assert await take(store, bucket, 5, at=T0 + 0.5) == Grant(2, 0.0)


async def test_buckets_are_independent(store: BucketStore) -> None:
    spent, fresh = key(), key()
    await take(store, spent, 10, at=T0)
    assert (await take(store, fresh, 10, at=T0)).taken == 10
    assert (await take(store, spent, 1, at=T0)).taken == 0


async def test_concurrent_takes_never_hand_out_a_token_twice(store: BucketStore) -> None:
    bucket = key()
    grants = await asyncio.gather(*(take(store, bucket, 3, at=T0, burst=40) for _ in range(30)))
    assert sum(g.taken for g in grants) == 40
    assert all(g.taken in (0, 1, 3) for g in grants)  # whole leases, one partial at the end


# --- the limiter over a shared store: several processes, one budget -------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Counting:
    """A real store that also counts how often it was asked."""

    def __init__(self, inner: BucketStore) -> None:
        self.inner = inner
        self.shared = inner.shared
        self.calls = 0

    async def take(self, bucket: str, *, rate: float, burst: float, want: int, now: float) -> Grant:
        self.calls += 1
        return await self.inner.take(bucket, rate=rate, burst=burst, want=want, now=now)

    async def close(self) -> None:
        await self.inner.close()


async def admitted(processes: list[Limiter], bucket: str, requests: int, *, rate: float, burst: float) -> int:
    """Requests spread round-robin over the processes, in waves of concurrent ones."""
    count = 0
    for start in range(0, requests, 10):
        wave = [processes[i % len(processes)] for i in range(start, min(start + 10, requests))]
        results = await asyncio.gather(*(p.acquire(bucket, rate=rate, burst=burst) for p in wave))
        count += sum(1 for ok, _, _ in results if ok)
    return count


@SHARED
async def test_two_processes_on_one_shared_store_enforce_one_budget(store: BucketStore) -> None:
    clock = Clock()
    counting = Counting(store)
    processes = [Limiter(counting, clock=clock), Limiter(counting, clock=clock)]
    bucket = key()

    assert await admitted(processes, bucket, 200, rate=25, burst=50) == 50
    clock.now += 1.0  # one second: 25 more in all, and every older lease has lapsed
    assert await admitted(processes, bucket, 200, rate=25, burst=50) == 25
    # Leases came in blocks, and refused requests were answered without asking the store.
    assert counting.calls < 60


@SHARED
async def test_a_refused_process_waits_for_the_next_token_without_asking_again(store: BucketStore) -> None:
    clock = Clock()
    counting = Counting(store)
    limiter = Limiter(counting, clock=clock)
    bucket = key()
    assert await admitted([limiter], bucket, 4, rate=2, burst=4) == 4
    calls = counting.calls
    outcomes = [await limiter.acquire(bucket, rate=2, burst=4) for _ in range(50)]
    assert not any(ok for ok, _, _ in outcomes)
    assert outcomes[0][2] == pytest.approx(0.5)  # seconds until a token
    assert counting.calls == calls + 1
    clock.now += 0.5
    assert (await limiter.acquire(bucket, rate=2, burst=4))[0]


async def test_at_one_instant_the_limiter_admits_exactly_the_burst(store: BucketStore) -> None:
    clock = Clock()
    limiter = Limiter(store, clock=clock)
    bucket = key()
    results: list[Any] = [await limiter.acquire(bucket, rate=5, burst=10) for _ in range(12)]
    assert [ok for ok, _, _ in results] == [True] * 10 + [False] * 2
    assert [int(left) for _, left, _ in results[:10]] == list(range(9, -1, -1))


async def test_the_configuration_picks_the_store() -> None:
    """SQLite: this process; PostgreSQL: the database; ONEHAZEL_REDIS_URL: Redis, whatever the database."""
    sqlite = Config.load("sqlite:///x.db", env=keyed_env())
    postgres = Config.load("postgresql://u@h/db", env=keyed_env())
    store: Any = object()
    assert isinstance(buckets_for(sqlite, store), MemoryBuckets)
    assert isinstance(buckets_for(postgres, store), SqlBuckets)
    for url in ("sqlite:///x.db", "postgresql://u@h/db"):
        chosen = buckets_for(Config.load(url, env=keyed_env(ONEHAZEL_REDIS_URL=REDIS_URL)), store)
        assert isinstance(chosen, RedisBuckets)
        await chosen.close()
