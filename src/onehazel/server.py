"""The ASGI entry point uvicorn imports (also in each of ``--workers N`` processes).

Configuration comes from the environment (``onehazel serve`` exports its flags
there before starting uvicorn), so every worker process builds the same app.
"""

from __future__ import annotations

from fastapi import FastAPI

from onehazel.api.app import create_app
from onehazel.api.observability import configure_logging
from onehazel.bootstrap import open_services
from onehazel.config import Config
from onehazel.services.container import Services


def app_from_env() -> FastAPI:
    config = Config.load()
    configure_logging()

    async def services() -> Services:
        return await open_services(config)

    return create_app(services)
