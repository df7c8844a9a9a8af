"""The ASGI entry point uvicorn imports (also in each of ``--workers N`` processes).

Configuration comes from the environment (``onehazel serve`` exports its flags
there before starting uvicorn), so every worker process builds the same app,
each with an in-process batch worker unless ONEHAZEL_INPROCESS_WORKER=0.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from onehazel.api.app import create_app
from onehazel.api.observability import configure_logging
from onehazel.bootstrap import open_services
from onehazel.config import Config
from onehazel.jobs.worker import start_in_background
from onehazel.services.container import Services


def app_from_env() -> FastAPI:
    config = Config.load()
    configure_logging(config.env.get("ONEHAZEL_LOG_LEVEL", "INFO").upper())

    async def services() -> Services:
        return await open_services(config)

    def worker(services: Services) -> Any:
        return start_in_background(services, config.worker_options())

    return create_app(services, start_worker=worker if config.inprocess_worker else None)
