"""kill -9 at any moment loses nothing and doubles nothing (real ``onehazel serve``).

The contract: a 202 means the whole batch is durably stored, and a crash or
restart mid-job resumes the job without losing or duplicating any item. Each
test runs the real server in a subprocess, on the embedded SQLite default and
on PostgreSQL, SIGKILLs it (mid-job, or right after the 202s), restarts it and
then checks, with SQL and through the API, that the events table holds
exactly the eventIds that were sent (each once) and that every job reports
every item exactly once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.processes import (
    ApiClient,
    Launcher,
    Server,
    clean_env,
    fresh_postgres,
    postgres_env,
    query,
    wait_completed,
)

pytestmark = pytest.mark.slow

# Short leases so a killed server's job is resumed fast; 200-event chunks (the default is a whole
# 5000-event batch per transaction) so a job can be caught and killed part-way.
LEASE = {"ONEHAZEL_JOB_LEASE_SECONDS": "2", "ONEHAZEL_BATCH_EVENTS_CHUNK": "200"}
PLAYERS = 40
BATCH = 5000
# Items that name an entity that does not exist: each must fail exactly once,
# including ones on each side of a chunk boundary (chunks are 200 events here).
GHOST_INDEXES = (0, 199, 200, 999, 1000, 4999)


@dataclass
class Deployment:
    """One database and the way to (re)start ``onehazel serve`` on it."""

    backend: str
    launcher: Launcher
    url: str
    env: dict[str, str]
    cwd: Path
    key: str = ""
    operator_id: str = ""
    starts: int = 0

    def start(self) -> tuple[Server, ApiClient]:
        self.starts += 1
        server = self.launcher.serve(f"serve-{self.backend}-{self.starts}", env=self.env, cwd=self.cwd)
        if not self.key:  # the embedded default printed its first operator's keys once
            self.key = _printed(server, r"live key: (oh_live_\S+)")
            self.operator_id = _printed(server, r"operator (op_\w+)")
        client = server.client(self.key)
        self.launcher.clients.append(client)
        return server, client

    @property
    def workspace_id(self) -> str:
        rows = query(
            self.url,
            "SELECT id FROM workspaces WHERE operator_id = :op AND mode = 'live'",
            op=self.operator_id,
        )
        assert len(rows) == 1, rows
        return str(rows[0][0])


def _printed(server: Server, pattern: str) -> str:
    match = re.search(pattern, server.stdout())
    assert match, f"serve did not print {pattern!r}\n{server.output()}"
    return match.group(1)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.close()


@pytest.fixture(params=["sqlite", "postgres"])
def deployment(request: pytest.FixtureRequest, launcher: Launcher, tmp_path: Path) -> Iterator[Deployment]:
    if request.param == "sqlite":
        cwd = tmp_path / "app"
        cwd.mkdir()
        url = f"sqlite:///{cwd / 'onehazel-data' / 'onehazel.db'}"
        yield Deployment("sqlite", launcher, url, clean_env(**LEASE), cwd)
        return
    with fresh_postgres() as url:
        env = postgres_env(url, **LEASE)
        created = launcher.create_operator("crash", env=env)
        yield Deployment(
            "postgres",
            launcher,
            url,
            env,
            tmp_path,
            key=created["liveKey"],
            operator_id=created["operatorId"],
        )
        launcher.close()  # every server is gone before the database is dropped


@dataclass
class Sent:
    """A submitted batch and what each of its items must end as."""

    job_id: str
    kind: str
    items: list[dict[str, Any]]
    failing: set[int] = field(default_factory=set)


def players() -> list[dict[str, Any]]:
    return [
        {
            "externalId": f"player-{n}",
            "type": "player",
            "attributes": {"email": f"p{n}@example.com", "country": "MT", "vip": n % 2 == 0},
        }
        for n in range(PLAYERS)
    ]


def events_batch(tag: str) -> tuple[list[dict[str, Any]], set[int]]:
    items = []
    for i in range(BATCH):
        owner = "ghost" if i in GHOST_INDEXES else f"player-{i % PLAYERS}"
        items.append(
            {
                "externalId": owner,
                "type": "transaction",
                "eventId": f"{tag}-{i}",
                "timestamp": "2026-03-01T12:00:00Z",
                "data": {"type": "deposit", "amount": f"{i}.25", "currency": "EUR"},
            }
        )
    return items, set(GHOST_INDEXES)


def submit_all(client: ApiClient, batches: int) -> list[Sent]:
    response = client.put("/settings", json={"templateId": "tpl_igaming"})
    assert response.status_code == 200, response.text
    entities = players()
    sent = [Sent(client.submit("entities", entities), "entities", entities)]
    for b in range(batches):
        items, failing = events_batch(f"evt-{b}")
        sent.append(Sent(client.submit("events", items), "events", items, failing))
    return sent


def kill_mid_job(server: Server, client: ApiClient, sent: list[Sent], *, past: int = 0) -> tuple[str, int]:
    """SIGKILL the server while a job is part-way, once all jobs together processed more than ``past``.

    Returns the job and its progress as last seen.
    """
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = [client.job(batch.job_id) for batch in sent]
        assert any(job["status"] != "completed" for job in jobs), "every job finished before a kill"
        done = sum(job["processed"] for job in jobs)
        for job in jobs:
            if 0 < job["processed"] < job["total"] and done > past:
                server.kill()
                return job["jobId"], job["processed"]
    raise AssertionError(f"no job was ever seen part-way\n{server.output()}")


def progress(client: ApiClient, sent: list[Sent]) -> int:
    return sum(client.job(batch.job_id)["processed"] for batch in sent)


def check_exactly_once(deployment: Deployment, client: ApiClient, sent: list[Sent]) -> None:
    jobs = wait_completed(client, [s.job_id for s in sent], launcher=deployment.launcher)
    ws = deployment.workspace_id
    for batch in sent:
        job = jobs[batch.job_id]
        ok = len(batch.items) - len(batch.failing)
        assert (job["status"], job["processed"]) == ("completed", len(batch.items)), job
        assert (job["succeeded"], job["failed"], job["duplicates"]) == (ok, len(batch.failing), 0), job
        assert {e["index"] for e in job["errors"]} == batch.failing
        assert {e["code"] for e in job["errors"]} <= {"entity_not_found"}

        outcomes = client.all_items(batch.job_id)
        assert [o["index"] for o in outcomes] == list(range(len(batch.items)))
        for outcome, item in zip(outcomes, batch.items, strict=True):
            expected = "failed" if outcome["index"] in batch.failing else "succeeded"
            assert (outcome["status"], outcome["externalId"]) == (expected, item["externalId"]), outcome
            if batch.kind == "events" and expected == "succeeded":
                assert outcome["eventId"] == item["eventId"]
            if batch.kind == "entities":
                assert outcome["created"] is True, outcome  # applied once: never an update of itself

    expected_ids = sorted(
        item["eventId"]
        for batch in sent
        if batch.kind == "events"
        for index, item in enumerate(batch.items)
        if index not in batch.failing
    )
    stored = query(deployment.url, "SELECT event_id FROM events WHERE workspace_id = :ws", ws=ws)
    assert sorted(r[0] for r in stored) == expected_ids
    versions = query(deployment.url, "SELECT version FROM entities WHERE workspace_id = :ws", ws=ws)
    assert [r[0] for r in versions] == [1] * PLAYERS


def test_kill_9_mid_job_then_restart_loses_and_doubles_nothing(deployment: Deployment) -> None:
    server, client = deployment.start()
    sent = submit_all(client, batches=3)
    # The first crash hits an events job before the last, so the restarted server has work left.
    killed_job, seen = kill_mid_job(server, client, sent[:-1])

    server, client = deployment.start()
    assert client.job(killed_job)["processed"] >= seen, "committed progress was lost"
    # Crash once more, once the restarted server has made progress of its own.
    kill_mid_job(server, client, sent, past=progress(client, sent))

    _, client = deployment.start()
    check_exactly_once(deployment, client, sent)


def test_kill_9_right_after_the_202s_keeps_every_accepted_batch(deployment: Deployment) -> None:
    server, client = deployment.start()
    sent = submit_all(client, batches=2)
    server.kill()

    _, client = deployment.start()
    check_exactly_once(deployment, client, sent)
