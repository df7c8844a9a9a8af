"""Token buckets for the rate limiter: one small contract, three stores.

``take(key, rate=, burst=, want=, now=)`` refills the bucket ``key`` for the time
elapsed since it last changed (``rate`` tokens a second, never above ``burst``; a
bucket never seen is full), takes up to ``want`` whole tokens and returns how many
it took and how many are left, in one atomic step. The API processes lease tokens
from it in blocks (``services/ratelimit.py``), so a shared store is asked once per
block, not once per request.

* ``MemoryBuckets``: a dict, for one process (the embedded SQLite default).
* ``SqlBuckets``: the ``rate_buckets`` table, one ``INSERT .. ON CONFLICT DO UPDATE ..
  RETURNING`` per lease (the row lock makes it atomic). UNLOGGED on PostgreSQL:
  a crash loses only bucket levels, which then start full again.
* ``RedisBuckets``: one Lua script per lease (``ONEHAZEL_REDIS_URL``); keys expire
  once their bucket would be full anyway.

Time is the caller's (seconds since the epoch), so processes on one clock (NTP)
refill alike, and tests pass any instant they like. A store that cannot be
reached is the contract's ``503 unavailable``: nothing was processed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa

from onehazel.domain.errors import Unavailable
from onehazel.storage.engine import is_postgres, upsert
from onehazel.storage.tables import rate_buckets
from onehazel.storage.unit_of_work import Store


@dataclass(frozen=True)
class Grant:
    taken: int
    """Whole tokens taken (0..want)."""
    tokens: float
    """Tokens left in the bucket after taking them."""


class BucketStore(Protocol):
    shared: bool
    """True when several processes see the same buckets."""

    async def take(self, key: str, *, rate: float, burst: float, want: int, now: float) -> Grant: ...

    async def close(self) -> None: ...


def take_tokens(
    tokens: float, refilled_at: float, *, rate: float, burst: float, want: int, now: float
) -> tuple[int, float, float]:
    """The bucket rule, as the SQL and Lua versions apply it: (taken, tokens left, refilled_at)."""
    available = min(burst, tokens + max(0.0, now - refilled_at) * rate)
    taken = min(want, math.floor(available))
    return taken, available - taken, max(refilled_at, now)


class MemoryBuckets:
    """Buckets in this process only."""

    shared = False

    def __init__(self, *, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float, float]] = {}

    async def take(self, key: str, *, rate: float, burst: float, want: int, now: float) -> Grant:
        tokens, refilled_at, _ = self._buckets.get(key) or (burst, now, rate)
        taken, left, refilled_at = take_tokens(
            tokens, refilled_at, rate=rate, burst=burst, want=want, now=now
        )
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._forget_full(now)
        self._buckets[key] = (left, refilled_at, rate)
        return Grant(taken, left)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled by now (a missing bucket is a full one)."""
        for key, (tokens, at, rate) in list(self._buckets.items()):
            if tokens + (now - at) * rate >= 2 * rate:
                del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()

    async def close(self) -> None:
        self._buckets.clear()


class SqlBuckets:
    """Buckets in the ``rate_buckets`` table, shared by every process on the database."""

    shared = True

    def __init__(self, store: Store) -> None:
        self.store = store

    async def take(self, key: str, *, rate: float, burst: float, want: int, now: float) -> Grant:
        async with self.store.autocommit() as uow:
            row = (await uow.conn.execute(_lease(uow.conn, key, rate, burst, want, now))).one()
        return Grant(int(row.taken), float(row.tokens))

    async def close(self) -> None:
        pass  # the engine belongs to the Store


def _lease(conn: Any, key: str, rate: float, burst: float, want: int, now: float) -> Any:
    b = rate_buckets.c
    postgres = is_postgres(conn)
    least, greatest = (sa.func.least, sa.func.greatest) if postgres else (sa.func.min, sa.func.max)
    rate_, burst_, now_ = (sa.literal(float(v), sa.Double) for v in (rate, burst, now))
    available = least(burst_, b.tokens + greatest(sa.literal(0.0, sa.Double), now_ - b.refilled_at) * rate_)
    # available >= 0, so truncating is flooring; PostgreSQL's CAST would round instead.
    whole = sa.func.floor(available) if postgres else sa.cast(available, sa.Integer)
    taken = least(sa.literal(want, sa.Integer), whole)
    first = min(want, math.floor(burst))
    statement = upsert(conn, rate_buckets).values(key=key, tokens=burst - first, refilled_at=now, taken=first)
    statement = statement.on_conflict_do_update(
        index_elements=[b.key],
        set_={"tokens": available - taken, "refilled_at": greatest(b.refilled_at, now_), "taken": taken},
    )
    return statement.returning(b.taken, b.tokens)


# KEYS[1] = bucket; ARGV = rate, burst, want, now. Returns {taken, tokens left as a string}.
_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local want, now = tonumber(ARGV[3]), tonumber(ARGV[4])
local stored = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens, at = tonumber(stored[1]), tonumber(stored[2])
if tokens == nil or at == nil then tokens, at = burst, now end
local available = math.min(burst, tokens + math.max(0, now - at) * rate)
local taken = math.min(want, math.floor(available))
local left = available - taken
local stamp = math.max(at, now)
redis.call('HSET', KEYS[1], 't', string.format('%.17g', left), 'at', string.format('%.17g', stamp))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - left) / rate * 1000) + 1000)
return {taken, string.format('%.17g', left)}
"""


class RedisBuckets:
    """Buckets in Redis (``ONEHAZEL_REDIS_URL``), shared by every process that uses it."""

    shared = True

    def __init__(self, url: str, *, prefix: str = "onehazel:ratelimit:", timeout: float = 2.0) -> None:
        import redis.asyncio as redis

        self.prefix = prefix
        self._client = redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._client.register_script(_TAKE)

    async def take(self, key: str, *, rate: float, burst: float, want: int, now: float) -> Grant:
        from redis.exceptions import RedisError

        try:
            taken, tokens = await self._script(keys=[self.prefix + key], args=[rate, burst, want, repr(now)])
        except (RedisError, OSError) as exc:
            raise Unavailable(
                "the rate-limit store (Redis) is unavailable; nothing was processed, retry later",
                headers={"Retry-After": "1"},
            ) from exc
        return Grant(int(taken), float(tokens))

    async def close(self) -> None:
        await self._client.aclose()
