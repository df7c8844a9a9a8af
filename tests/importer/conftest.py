"""A real ``onehazel serve`` (embedded SQLite in a temporary folder) and the real import command.

One server runs for the whole ``tests/importer`` package; each test gets a fresh operator
(a workspace of its own, ``tpl_igaming`` chosen), so the counts it checks are its own.
``Workspace.run_import`` runs ``python -m onehazel import ...`` in a subprocess, exactly as a user
would, with the key and URL in the environment.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.processes import ApiClient, Launcher, Server, clean_env, query, wait_completed

IMPORT_SECONDS = 120
_names = itertools.count()


@dataclass
class Deployment:
    launcher: Launcher
    server: Server

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.launcher.workdir / 'onehazel-data' / 'onehazel.db'}"


@pytest.fixture(scope="package")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    launcher = Launcher(tmp_path_factory.mktemp("import-server"))
    try:
        server = launcher.serve("serve", env=clean_env())
        yield Deployment(launcher, server)
    finally:
        launcher.close()


@dataclass
class Workspace:
    deployment: Deployment
    key: str
    operator_id: str
    api: ApiClient

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(ONEHAZEL_API_URL=self.deployment.server.base_url, ONEHAZEL_API_KEY=self.key, **extra)

    def run_import(
        self, *args: str | Path, cwd: Path, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_import(*args, cwd=cwd, env=env or self.env())

    def start_import(
        self, *args: str | Path, cwd: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "onehazel", "import", *map(str, args)],
            cwd=cwd,
            env=env or self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def sql(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` with ``:ws`` bound to this workspace's id."""
        return query(self.deployment.database_url, sql, ws=self.workspace_id)

    @property
    def workspace_id(self) -> str:
        rows = query(
            self.deployment.database_url,
            "SELECT id FROM workspaces WHERE operator_id = :op AND mode = 'live'",
            op=self.operator_id,
        )
        return str(rows[0][0])

    def event_ids(self) -> list[str]:
        return sorted(r[0] for r in self.sql("SELECT event_id FROM events WHERE workspace_id = :ws"))


@pytest.fixture
def workspace(deployment: Deployment) -> Iterator[Workspace]:
    created = deployment.launcher.create_operator(f"importer-{next(_names)}", env=clean_env())
    api = deployment.server.client(created["liveKey"])
    try:
        response = api.put("/settings", json={"templateId": "tpl_igaming"})
        assert response.status_code == 200, response.text
        yield Workspace(deployment, created["liveKey"], created["operatorId"], api)
    finally:
        api.close()


def run_import(*args: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m onehazel import ARGS``, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "onehazel", "import", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=IMPORT_SECONDS,
        check=False,
    )


# For commands that must fail before they reach any server: nothing listens on port 9.
NO_SERVER_ENV = clean_env(ONEHAZEL_API_URL="http://127.0.0.1:9", ONEHAZEL_API_KEY="oh_live_" + "x" * 43)


def ok_summary(result: subprocess.CompletedProcess[str], *, code: int = 0) -> dict[str, Any]:
    """The ``--json`` summary of a finished import, asserting its exit code."""
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    summary: dict[str, Any] = json.loads(result.stdout)
    assert summary["exitCode"] == code
    return summary


def write_lines(path: Path, lines: list[Any]) -> Path:
    """One JSON document per line (strings are written as they are: for malformed lines)."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


PLAYERS = 20


def players_csv(path: Path, count: int = PLAYERS) -> Path:
    rows = ["externalId,type,email,country,vip:boolean,segment"]
    rows += [f"player-{n},player,p{n}@example.com,MT,{'true' if n % 2 else 'false'}," for n in range(count)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def transaction(n: int, **overrides: Any) -> dict[str, Any]:
    event = {
        "externalId": f"player-{n % PLAYERS}",
        "type": "transaction",
        "timestamp": "2026-03-01T12:00:00Z",
        "data": {"type": "deposit", "amount": f"{n}.50", "currency": "EUR"},
    }
    event.update(overrides)
    return event


def seed_players(ws: Workspace) -> None:
    """The players through the batch API directly (faster than one more import process)."""
    players = [{"externalId": f"player-{n}", "type": "player", "attributes": {}} for n in range(PLAYERS)]
    job = wait_completed(ws.api, [ws.api.submit("entities", players)])
    assert [j["succeeded"] for j in job.values()] == [PLAYERS]
