"""The ASGI entry point uvicorn imports (also in each of ``--workers N`` processes).

Configuration comes from the environment (``onehazel serve`` exports its flags
there before starting uvicorn), so every worker process builds the same app,
each with an in-process batch worker unless ONEHAZEL_INPROCESS_WORKER=0
a periodic retention sweep unless ONEHAZEL_RETENTION_INTERVAL_SECONDS=0 and the
analytics rollup compaction unless ONEHAZEL_ANALYTICS_COMPACT_SECONDS=0.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI

from onehazel.api.app import create_app
from onehazel.api.observability import configure_logging
from onehazel.bootstrap import open_services, tune_runtime
from onehazel.config import Config
from onehazel.jobs.worker import start_in_background
from onehazel.services.analytics import start_compaction_in_background
from onehazel.services.container import Services
from onehazel.services.retention import start_retention_in_background


def app_from_env() -> FastAPI:
    config = Config.load()
    configure_logging(config.env.get("ONEHAZEL_LOG_LEVEL", "INFO").upper())

    async def services() -> Services:
        opened = await open_services(config)
        tune_runtime()
        return opened

    retention = config.retention_options()
    compact_seconds = config.analytics_compact_seconds()

    def background(services: Services) -> Any:
        """The batch worker (unless ONEHAZEL_INPROCESS_WORKER=0), the retention sweep (unless
        ONEHAZEL_RETENTION_INTERVAL_SECONDS=0) and the analytics compaction (unless
        ONEHAZEL_ANALYTICS_COMPACT_SECONDS=0); returns one ``stop()`` for all."""
        stops = []
        if config.inprocess_worker:
            stops.append(start_in_background(services, config.worker_options()))
        if retention["interval_seconds"] > 0:
            stops.append(start_retention_in_background(services, retention))
        if compact_seconds > 0:
            stops.append(start_compaction_in_background(services, compact_seconds))

        async def stop_all() -> None:
            await asyncio.gather(*(stop() for stop in stops))

        return stop_all

    return create_app(services, start_worker=background)
