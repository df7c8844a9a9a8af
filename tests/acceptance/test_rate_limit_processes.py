"""Rate limits across real processes: the ``operators limits`` command, and two servers, one budget.

The command runs as a subprocess on both databases. The slow test starts two
``onehazel serve`` processes on one fresh PostgreSQL database (buckets in its
``rate_buckets`` table, or in Redis when ONEHAZEL_REDIS_URL is set), gives the
operator 25 writes a second (bursts of 50) with the command, and sends both
processes far more writes than that at once. Together they must admit what ONE
bucket admits over the run (at most 50 + 25 x seconds), never what two would;
every refused request is a 429 with Retry-After that stored nothing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from onehazel.services.auth import CreatedOperator
from onehazel.services.container import Services
from tests.acceptance.processes import BASE, Launcher, clean_env, fresh_postgres, postgres_env, query
from tests.conftest import keyed_env
from tests.integration.test_rate_limit_store import REDIS_URL, _redis_store

DEFAULTS = {
    "writes": {"rate": 1000, "burst": 2000, "default": True},
    "batches": {"rate": 20, "burst": 40, "default": True},
    "reads": {"rate": 500, "burst": 1000, "default": True},
}


def limits_command(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onehazel", "operators", "limits", *args, "--database-url", database_url],
        cwd=cwd,
        env=clean_env(**keyed_env()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def limits_json(*args: str, database_url: str, cwd: Path) -> dict[str, Any]:
    result = limits_command(*args, "--json", database_url=database_url, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# --- onehazel operators limits --------------------------------------------------------------------


async def test_limits_command_shows_the_defaults(
    database_url: str, operator: CreatedOperator, tmp_path: Path
) -> None:
    shown = limits_json(operator.operator_id, database_url=database_url, cwd=tmp_path)
    assert shown == {"operatorId": operator.operator_id, **DEFAULTS}
    result = limits_command(operator.operator_id, database_url=database_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert operator.operator_id in lines[0]
    writes = next(line for line in lines if line.split()[0] == "writes")
    assert "1000/s" in writes
    assert "bursts of 2000" in writes
    assert "default" in writes


async def test_limits_command_sets_keeps_and_resets_rates(
    database_url: str, operator: CreatedOperator, services: Services, tmp_path: Path
) -> None:
    op = operator.operator_id
    changed = limits_json(op, "--writes", "5", database_url=database_url, cwd=tmp_path)
    assert changed["writes"] == {"rate": 5, "burst": 10, "default": False}
    assert changed["reads"] == DEFAULTS["reads"]

    changed = limits_json(op, "--reads", "7", "--batches", "2", database_url=database_url, cwd=tmp_path)
    assert changed["writes"] == {"rate": 5, "burst": 10, "default": False}  # kept
    assert changed["reads"] == {"rate": 7, "burst": 14, "default": False}
    assert changed["batches"] == {"rate": 2, "burst": 4, "default": False}
    assert limits_json(op, database_url=database_url, cwd=tmp_path) == changed  # stored

    stored = await services.rate_limits.limits(op)  # what a server reads
    assert stored.rates == {"writes": 5, "reads": 7, "batches": 2}

    after = limits_json(op, "--reset", "--batches", "3", database_url=database_url, cwd=tmp_path)
    assert after == {**DEFAULTS, "operatorId": op, "batches": {"rate": 3, "burst": 6, "default": False}}


async def test_limits_command_names_an_unknown_operator_in_one_line(
    database_url: str, tmp_path: Path
) -> None:
    line = one_error_line(limits_command("op_nope", database_url=database_url, cwd=tmp_path))
    assert "op_nope" in line


@pytest.mark.parametrize("bad", [["--writes", "0"], ["--batches", "many"], ["--reads", "1000001"]])
def test_limits_command_refuses_a_bad_rate_as_a_usage_error(bad: list[str], tmp_path: Path) -> None:
    result = limits_command("op_any", *bad, database_url=f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    one_error_line(result)
    assert result.returncode == 2
    assert not (tmp_path / "x.db").exists()  # refused before touching any database


# --- two servers, one budget ----------------------------------------------------------------------


@pytest.fixture(params=["postgres", "redis"])
def buckets_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Where the two servers share their buckets: the database, or Redis."""
    if request.param == "postgres":
        return {}

    async def probe() -> None:
        await (await _redis_store()).close()

    asyncio.run(probe())
    return {"ONEHAZEL_REDIS_URL": REDIS_URL}


@pytest.fixture
def cluster_url() -> Iterator[str]:
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def launcher(tmp_path: Path, cluster_url: str) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.close()


async def hammer(base_urls: list[str], key: str, requests: int, *, concurrency: int) -> list[httpx.Response]:
    """``requests`` entity writes, alternating between the servers, ``concurrency`` at a time."""
    headers = {"Authorization": f"Bearer {key}"}
    clients = [httpx.AsyncClient(base_url=url + BASE, headers=headers, timeout=60) for url in base_urls]
    queue = list(range(requests))
    responses: list[httpx.Response] = []

    async def worker() -> None:
        while queue:
            n = queue.pop()
            body = {"externalId": f"p-{n}", "type": "player"}
            responses.append(await clients[n % len(clients)].post("/entities", json=body))

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        for client in clients:
            await client.aclose()
    return responses


@pytest.mark.slow
def test_two_server_processes_enforce_one_budget(
    launcher: Launcher, cluster_url: str, buckets_env: dict[str, str]
) -> None:
    env = postgres_env(
        cluster_url, ONEHAZEL_INPROCESS_WORKER="0", ONEHAZEL_RETENTION_INTERVAL_SECONDS="0", **buckets_env
    )
    operator = launcher.create_operator("limited", env=env)
    shown = json.loads(
        launcher.cli("operators", "limits", operator["operatorId"], "--writes", "25", "--json", env=env)
    )
    assert shown["writes"] == {"rate": 25, "burst": 50, "default": False}
    servers = [launcher.serve("api-1", env=env), launcher.serve("api-2", env=env)]
    setup = servers[0].client(operator["liveKey"])
    launcher.clients.append(setup)
    assert setup.put("/settings", json={"templateId": "tpl_igaming"}).status_code == 200
    time.sleep(0.1)  # that write's token is back: the bucket starts the run full (or less, never more)

    started = time.monotonic()
    responses = asyncio.run(hammer([s.base_url for s in servers], operator["liveKey"], 600, concurrency=16))
    elapsed = time.monotonic() - started

    statuses = Counter(r.status_code for r in responses)
    admitted = statuses[201]
    one_budget = 50 + 25 * elapsed
    figures = (
        f"admitted {admitted} of {len(responses)} in {elapsed:.2f} s; one bucket allows {one_budget:.1f}"
    )
    assert set(statuses) <= {201, 429}, statuses
    assert admitted <= one_budget, figures
    assert admitted >= 50 - 2 * 5, figures  # at most one unspent lease (10% of the burst) per process lapses
    for response in responses:
        assert response.headers["ratelimit-policy"] == '"writes";q=50;w=2'
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limited"
            assert int(response.headers["retry-after"]) >= 1

    live = (
        "SELECT count(*) FROM entities e JOIN workspaces w ON w.id = e.workspace_id WHERE w.operator_id = :op"
    )
    assert query(cluster_url, live, op=operator["operatorId"]) == [(admitted,)]  # 429s stored nothing

    refused = next(r for r in responses if r.status_code == 429)
    time.sleep(int(refused.headers["retry-after"]))
    retried = servers[1].client(operator["liveKey"])
    launcher.clients.append(retried)
    assert retried.post("/entities", json={"externalId": "after-wait", "type": "player"}).status_code == 201
