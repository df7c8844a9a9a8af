"""Acceptance: ``onehazel serve`` sweeps by itself, every ONEHAZEL_RETENTION_INTERVAL_SECONDS.

The real program on SQLite (the embedded default) and PostgreSQL, with a
one-second interval: old events disappear from the API and a deleted entity's
key row disappears from the database without anyone running ``retention run``,
while the batch worker beside the sweep keeps applying jobs; SIGTERM still ends
the server cleanly.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.processes import (
    ApiClient,
    Launcher,
    clean_env,
    fresh_postgres,
    postgres_env,
    query,
    wait_completed,
)

pytestmark = pytest.mark.slow

SWEEP_SECONDS = 60.0  # a bound that only catches a sweep that never runs
# uvicorn re-raises SIGTERM once shut down: exiting "by SIGTERM" is as clean as 0
CLEAN_EXIT = (0, -signal.SIGTERM)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.close()


def _keys(stdout: str) -> str:
    found = re.search(r"live key: (oh_live_\S+)", stdout)
    assert found, stdout
    return found.group(1)


def _eventually(check: Any, launcher: Launcher) -> None:
    deadline = time.monotonic() + SWEEP_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"the in-process sweep never did its work\n{launcher.output()}"
        time.sleep(0.2)


def _scenario(client: ApiClient, url: str, launcher: Launcher) -> None:
    assert client.put("/settings", json={"templateId": "tpl_igaming"}).status_code == 200
    retention = {"retention": {"eventsDays": 1, "deletedEntitiesDays": 0}}
    assert client.put("/settings", json=retention).status_code == 200
    for external_id in ("p-old", "p-gone"):
        body = {"externalId": external_id, "type": "player", "attributes": {"email": f"{external_id}@x.io"}}
        assert client.post("/entities", json=body).status_code == 201
    old = {"type": "session", "data": {}, "timestamp": "2020-01-01T00:00:00Z"}
    assert client.post("/entities/p-old/events", json=old).status_code == 201
    assert client.http.delete("/entities/p-gone").status_code == 200

    _eventually(lambda: client.get("/entities/p-old/events").json()["data"] == [], launcher)
    _eventually(
        lambda: query(url, "SELECT count(*) FROM entity_keys WHERE external_id = 'p-gone'") == [(0,)],
        launcher,
    )
    gone = client.get("/entities/p-gone")
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "entity_deleted"
    # the batch worker runs beside the sweep
    job = client.submit("events", [{"externalId": "p-old", "type": "session", "data": {}}])
    assert wait_completed(client, [job], launcher=launcher)[job]["succeeded"] == 1
    assert query(url, "SELECT count(*) FROM entity_keys WHERE external_id = 'p-old'") == [(1,)]


def test_serve_sweeps_on_sqlite(launcher: Launcher) -> None:
    server = launcher.serve("serve", env=clean_env(ONEHAZEL_RETENTION_INTERVAL_SECONDS="1"))
    client = server.client(_keys(server.stdout()))
    launcher.clients.append(client)
    url = f"sqlite:///{launcher.workdir / 'onehazel-data' / 'onehazel.db'}"

    _scenario(client, url, launcher)

    assert server.terminate(timeout=30) in CLEAN_EXIT, server.output()


def test_serve_sweeps_on_postgres(launcher: Launcher) -> None:
    with fresh_postgres() as url:
        env = postgres_env(url, ONEHAZEL_RETENTION_INTERVAL_SECONDS="1")
        created = launcher.create_operator("retention", env=env)
        server = launcher.serve("serve", env=env)
        client = server.client(created["liveKey"])
        launcher.clients.append(client)

        _scenario(client, url, launcher)

        assert server.terminate(timeout=30) in CLEAN_EXIT, server.output()
