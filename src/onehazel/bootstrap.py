"""Builds the running system from a Config: engine, keys, services. Tests call it too."""

from __future__ import annotations

import gc
import sys

from onehazel.config import Config
from onehazel.services.container import Services
from onehazel.services.core import Core
from onehazel.storage.buckets import BucketStore, MemoryBuckets, RedisBuckets, SqlBuckets
from onehazel.storage.engine import create_engine
from onehazel.storage.migrate import migrate
from onehazel.storage.unit_of_work import Store


async def open_services(config: Config, *, run_migrations: bool = False, null_pool: bool = False) -> Services:
    """Open the database and key ring. Migrations run first when asked to."""
    keys = config.key_ring()
    config.prepare_sqlite_dir()
    engine = create_engine(config.database_url, pool_size=config.pool_size, null_pool=null_pool)
    try:
        if run_migrations:
            await migrate(engine)
    except BaseException:
        await engine.dispose()
        raise
    store = Store(engine)
    return Services.over(Core(store=store, keys=keys, buckets=buckets_for(config, store)))


def buckets_for(config: Config, store: Store) -> BucketStore:
    """Where rate-limit buckets live: Redis when configured, else the database on
    PostgreSQL (shared by every API process), else this process (SQLite)."""
    if config.redis_url:
        return RedisBuckets(config.redis_url)
    if not config.is_sqlite:
        return SqlBuckets(store)
    return MemoryBuckets()


SWITCH_INTERVAL_SECONDS = 0.0005
GC_YOUNG_THRESHOLD = 50_000


def tune_runtime() -> None:
    """Interpreter settings for a long-running server or worker, once it has started."""
    # Everything made at start-up (the app, its routes and models, the libraries) lives
    # as long as the process: move it out of the cyclic collector's sight, so a full
    # collection under load walks only what requests made, not the whole heap (a pause
    # that lands in the latency tail).
    gc.collect()
    gc.freeze()
    # A young collection every 700 net allocations (the default) runs hundreds of times
    # per 5000-event batch and promotes its short-lived dicts to older generations, whose
    # collections then walk them again. The data here is almost never cyclic (reference
    # counting frees it), so collect less often: same safety net, a fraction of the cost.
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    # SQLite runs in a thread of this process and lets go of the GIL while a statement runs;
    # when it is done it waits for the GIL, which the event loop (checking the next batch
    # chunk, serving requests) gives up only every switch interval: 5 ms by default, a
    # stall after every SQLite statement. 0.5 ms: the batch bench on SQLite went from
    # 17,300 to 19,500-22,600 events/s in interleaved runs. Other threads here are idle.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
