"""Schemathesis over the app's own OpenAPI spec: no 5xx, every response as the spec says.

The app runs in-process (schemathesis' ASGI transport, lifespan started once)
over each database (SQLite and PostgreSQL), authenticated as a real operator's
live key with tpl_igaming configured (and rates high enough not to fuzz 429s).
The run is bounded (``MAX_EXAMPLES`` per operation, derandomized so CI sees the
same cases every time) and counts the HTTP requests the app served per database;
the counts are written to the terminal at the end of each run.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from onehazel.api.app import BASE, create_app
from onehazel.bootstrap import open_services
from onehazel.config import Config
from onehazel.services.container import Services
from onehazel.services.ratelimit import MAX_RATE
from tests.conftest import BACKENDS, keyed_env

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 200
CHECKS = [
    response_headers_conformance,
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Target:
    app: Any
    client: asgi.ASGIClient
    key: str
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)


class _Counting:
    """ASGI wrapper counting the HTTP requests the app receives, and their response statuses."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.target: Target | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        target = self.target
        if scope["type"] != "http" or target is None:
            await self.app(scope, receive, send)
            return
        target.requests += 1

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                target.statuses[message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


async def _create_operator(url: str) -> str:
    svc = await open_services(Config.load(url, env=keyed_env()))
    try:
        operator = await svc.auth.create_operator("fuzz-operator")
        # Fuzzing faster than the default rates would mostly exercise 429s (limits have their own tests).
        rates: dict[str, int | None] = {"writes": MAX_RATE, "batches": MAX_RATE, "reads": MAX_RATE}
        await svc.rate_limits.configure(operator.operator_id, rates, reset=False)
        return operator.live_key
    finally:
        await svc.close()


@pytest.fixture(scope="module", params=BACKENDS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    url = str(request.getfixturevalue("postgres_url" if request.param == "postgres" else "sqlite_url"))
    key = asyncio.run(_create_operator(url))

    async def services() -> Services:
        return await open_services(Config.load(url, env=keyed_env()))

    app = _Counting(create_app(services))
    with asgi.get_client(app) as client:
        response = client.put(
            f"{BASE}/settings", json={"templateId": "tpl_igaming"}, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200, response.text
        # The schema the cases come from is exactly the one this app serves.
        assert client.get("/openapi.json").json() == schema.raw_schema
        result = Target(app=app, client=client, key=key)
        app.target = result
        try:
            yield result
        finally:
            app.target = None
            asgi.shutdown_lifespans()
    # The test cannot pass by sending nothing: every operation got at least one request.
    assert result.requests >= len(list(schema.get_all_operations()))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            statuses = ", ".join(f"{code}: {n}" for code, n in sorted(result.statuses.items()))
            reporter.write_line(
                f"schemathesis ({request.param}): {result.requests} requests sent to the app ({statuses})"
            )


async def _no_services() -> Services:
    raise AssertionError("only the spec of this app is used")


# The spec is the one the app serves at /openapi.json; building it needs no services.
# (A lazily loaded schema, schemathesis.pytest.from_fixture, does not work with pytest 9.)
schema = schemathesis.openapi.from_dict(create_app(_no_services).openapi())


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True)
def test_api_conforms_to_its_spec(case: Any, target: Target) -> None:
    case.call_and_validate(
        base_url=target.client.base_url,
        session=target.client,
        headers={"Authorization": f"Bearer {target.key}"},
        checks=CHECKS,
    )
