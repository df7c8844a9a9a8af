"""The per-process cache in front of key lookups and settings: a drop (a key revoked in this
process) is never undone by a lookup that was already running."""

from __future__ import annotations

import asyncio

import pytest

from onehazel.services.core import TtlCache


@pytest.mark.parametrize("forget", ["drop", "clear"])  # revoke_key clears the whole cache
async def test_a_load_running_when_its_key_is_dropped_stores_nothing(forget: str) -> None:
    cache = TtlCache(ttl=60)
    release = asyncio.Event()
    loads: list[str] = []

    async def stale() -> str:
        loads.append("stale")
        await release.wait()  # it read the row before the change committed
        return "active key"

    async def fresh() -> str:
        loads.append("fresh")
        return "revoked"

    first = asyncio.ensure_future(cache.get_or_load("key:1", stale))
    while not loads:  # until the lookup is reading
        await asyncio.sleep(0)
    if forget == "drop":  # the revocation commits meanwhile
        cache.drop("key:1")
    else:
        cache.clear()
    release.set()

    assert await first == "active key"  # its own caller asked before the revocation
    assert cache.get("key:1") is None
    assert await cache.get_or_load("key:1", fresh) == "revoked"
    assert await cache.get_or_load("key:1", fresh) == "revoked"  # now cached
    assert loads == ["stale", "fresh"]


async def test_callers_that_miss_together_share_one_load() -> None:
    cache = TtlCache(ttl=60)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 7

    assert await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(5))) == [7] * 5
    assert calls == 1
