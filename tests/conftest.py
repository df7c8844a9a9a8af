"""Shared fixtures: real SQLite and real PostgreSQL, never a mock of the database.

``backend`` runs a test once per database. Each pytest run gets its own fresh
SQLite file and its own fresh PostgreSQL database (created on the server named
by ONEHAZEL_TEST_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test,
and dropped afterwards). Tests stay independent by using a new operator each:
workspace isolation is exactly what the server guarantees.

PostgreSQL tests skip with a clear reason when no server is reachable, except
when CI=true or ONEHAZEL_REQUIRE_POSTGRES=1, where they fail instead.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa

from onehazel.api.app import BASE, create_app
from onehazel.bootstrap import open_services
from onehazel.config import Config
from onehazel.services.auth import CreatedOperator
from onehazel.services.container import Services
from onehazel.storage.engine import create_engine
from onehazel.storage.migrate import migrate

PG_SERVER_URL = os.environ.get("ONEHAZEL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("CI", "").lower() == "true" or os.environ.get("ONEHAZEL_REQUIRE_POSTGRES") == "1"
TEST_MASTER_KEY = "test1:" + base64.b64encode(bytes(range(32))).decode()
BACKENDS = ["sqlite", "postgres"]


def _with_database(url: str, name: str) -> str:
    return str(sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False))


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(PG_SERVER_URL), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _migrate(url: str) -> None:
    engine = create_engine(url, null_pool=True)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run."""
    name = f"onehazel_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL not reachable at {PG_SERVER_URL} ({type(exc).__name__}: {exc})"
        if REQUIRE_PG:
            pytest.fail(f"{reason}; CI requires PostgreSQL", pytrace=False)
        pytest.skip(f"{reason}; set ONEHAZEL_TEST_DATABASE_URL to run PostgreSQL tests")
    url = _with_database(PG_SERVER_URL, name)
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'onehazel.db'}"
    asyncio.run(_migrate(url))
    return url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    fixture = "postgres_url" if backend == "postgres" else "sqlite_url"
    return str(request.getfixturevalue(fixture))


def keyed_env(**extra: str) -> dict[str, str]:
    return {"ONEHAZEL_MASTER_KEY": TEST_MASTER_KEY, **extra}


@pytest.fixture
async def services(database_url: str) -> AsyncIterator[Services]:
    svc = await open_services(Config.load(database_url, env=keyed_env()))
    yield svc
    await svc.close()


_OUTSIDE_BASE = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", BASE, "http")


class Api:
    """An HTTP client bound to one API key; paths are relative to the base path."""

    def __init__(self, client: httpx.AsyncClient, key: str | None) -> None:
        self.client = client
        self.key = key

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        merged = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        merged.update(headers or {})
        return merged

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        kwargs["headers"] = self._headers(kwargs.get("headers"))
        url = path if path.startswith(_OUTSIDE_BASE) else BASE + path
        return await self.client.request(method, url, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)

    def as_key(self, key: str | None) -> Api:
        return Api(self.client, key)


@pytest.fixture
async def http(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the ASGI app over ``services`` (no network)."""
    app = create_app(lambda: _ready(services))
    app.state.services = services
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def _ready(services: Services) -> Services:
    return services


@pytest.fixture
async def operator(services: Services) -> CreatedOperator:
    return await services.auth.create_operator(f"op-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def api(http: httpx.AsyncClient, operator: CreatedOperator) -> Api:
    """The operator's live key, with tpl_igaming configured."""
    client = Api(http, operator.live_key)
    response = await client.put("/settings", json={"templateId": "tpl_igaming"})
    assert response.status_code == 200, response.text
    return client


@pytest.fixture
async def bare_api(http: httpx.AsyncClient, operator: CreatedOperator) -> Api:
    """The operator's live key, no template chosen yet."""
    return Api(http, operator.live_key)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path
