"""Scale out on one PostgreSQL: two API processes, two ``onehazel worker`` processes.

The API processes run without an in-process worker (ONEHAZEL_INPROCESS_WORKER=0)
and the batches of three workspaces are sent to both of them, interleaved. What
a user must see: every job completes, every event is stored exactly once, each
workspace's jobs are applied in the order they were accepted (an events batch
never runs before the entities batch sent ahead of it, which would fail its
items with entity_not_found), and a worker stopped with SIGTERM mid-job exits
cleanly and promptly, handing its job to the other worker.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.processes import (
    ApiClient,
    Launcher,
    Process,
    Server,
    fresh_postgres,
    postgres_env,
    query,
    wait_completed,
)

pytestmark = pytest.mark.slow

PER_ENTITY_BATCH = 50
EVENTS = 5000


@pytest.fixture
def cluster_url() -> Iterator[str]:
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def launcher(tmp_path: Path, cluster_url: str) -> Iterator[Launcher]:
    """Processes on ``cluster_url``; all are killed before that database is dropped."""
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.close()


@dataclass
class Workspace:
    name: str
    id: str
    clients: list[ApiClient]  # one per API process
    jobs: list[tuple[str, str]] = field(default_factory=list)  # (kind, jobId) in acceptance order
    event_ids: list[str] = field(default_factory=list)


def entities(first: int) -> list[dict[str, Any]]:
    return [
        {"externalId": f"player-{n}", "type": "player", "attributes": {"email": f"p{n}@example.com"}}
        for n in range(first, first + PER_ENTITY_BATCH)
    ]


def events(tag: str, players: int) -> list[dict[str, Any]]:
    """Events spread over players 0..players-1; the newest entity batch's players come first."""
    return [
        {
            "externalId": f"player-{players - 1 - i % players}",
            "type": "transaction",
            "eventId": f"{tag}-{i}",
            "data": {"type": "bet", "amount": f"{i}.10", "currency": "EUR"},
        }
        for i in range(EVENTS)
    ]


def states(first: int) -> list[dict[str, Any]]:
    return [
        {"externalId": f"player-{n}", "key": "kyc_status", "value": "verified"}
        for n in range(first, first + PER_ENTITY_BATCH)
    ]


def plan() -> list[tuple[str, list[dict[str, Any]]]]:
    """One workspace's batches in order; each depends on the entities batch before it."""
    return [
        ("entities", entities(0)),
        ("events", events("first", PER_ENTITY_BATCH)),
        ("entities", entities(PER_ENTITY_BATCH)),
        ("events", events("second", 2 * PER_ENTITY_BATCH)),
        ("states", states(PER_ENTITY_BATCH)),
    ]


def workspace_ids(url: str, operator_id: str) -> dict[str, str]:
    rows = query(url, "SELECT mode, id FROM workspaces WHERE operator_id = :op", op=operator_id)
    return {str(mode): str(ws) for mode, ws in rows}


def leased_by(url: str, worker: Process) -> list[tuple[str, int]]:
    """The jobs a worker process holds a lease on, with their progress."""
    rows = query(
        url,
        "SELECT id, processed FROM jobs WHERE status = 'processing' AND lease_owner LIKE :owner",
        owner=f"%:{worker.pid}:%",
    )
    return [(str(job), int(done)) for job, done in rows]


def wait_for_progress_under(url: str, worker: Process, launcher: Launcher) -> str:
    """Wait until ``worker`` is part-way through a job; returns the job id."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for job_id, done in leased_by(url, worker):
            if done > 0:
                return job_id
        time.sleep(0.05)
    raise AssertionError(f"{worker.name} never made progress on a job\n{launcher.output()}")


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def open_workspaces(launcher: Launcher, url: str, env: dict[str, str], apis: list[Server]) -> list[Workspace]:
    """Three workspaces (one operator's live and test, another's live), each with a client per API."""
    first = launcher.create_operator("scale-one", env=env)
    second = launcher.create_operator("scale-two", env=env)
    spaces = []
    for operator, mode in ((first, "live"), (first, "test"), (second, "live")):
        clients = [api.client(operator[f"{mode}Key"]) for api in apis]
        launcher.clients += clients
        assert clients[0].put("/settings", json={"templateId": "tpl_igaming"}).status_code == 200
        ws_id = workspace_ids(url, operator["operatorId"])[mode]
        spaces.append(Workspace(f"{operator['operatorId']}/{mode}", ws_id, clients))
    return spaces


def submit_interleaved(spaces: list[Workspace]) -> None:
    """Step by step every workspace sends its next batch, alternating between the API processes."""
    sent = 0
    for kind, items in plan():
        for space in spaces:
            space.jobs.append((kind, space.clients[sent % 2].submit(kind, items)))
            space.event_ids += [item["eventId"] for item in items if kind == "events"]
            sent += 1


def check_workspace(space: Workspace, url: str, launcher: Launcher) -> None:
    # Every job is read through API b, whichever process accepted it: the API processes share nothing.
    ids = [job_id for _, job_id in space.jobs]
    jobs = wait_completed(space.clients[1], ids, launcher=launcher)
    ordered = [jobs[job_id] for job_id in ids]
    for (kind, _), job, (_, items) in zip(space.jobs, ordered, plan(), strict=True):
        assert job["kind"] == kind
        assert (job["status"], job["processed"]) == ("completed", len(items)), job
        assert (job["succeeded"], job["failed"], job["duplicates"]) == (len(items), 0, 0), job
        assert job["errors"] == [], f"{space.name}: applied out of order? {job['errors'][:3]}"
    for before, after in itertools.pairwise(ordered):
        assert parse(after["startedAt"]) >= parse(before["completedAt"]), (space.name, before, after)

    outcomes = space.clients[0].all_items(space.jobs[3][1])
    assert [o["index"] for o in outcomes] == list(range(EVENTS))
    assert {o["status"] for o in outcomes} == {"succeeded"}

    stored = query(url, "SELECT event_id FROM events WHERE workspace_id = :ws", ws=space.id)
    assert sorted(r[0] for r in stored) == sorted(space.event_ids)
    players = query(url, "SELECT count(*) FROM entities WHERE workspace_id = :ws", ws=space.id)
    assert players[0][0] == 2 * PER_ENTITY_BATCH
    kyc = query(url, "SELECT count(*) FROM states WHERE workspace_id = :ws", ws=space.id)
    assert kyc[0][0] == PER_ENTITY_BATCH


def test_two_apis_two_workers_apply_each_workspace_once_and_in_order(
    launcher: Launcher, cluster_url: str
) -> None:
    env = postgres_env(
        cluster_url,
        ONEHAZEL_JOB_LEASE_SECONDS="2",
        ONEHAZEL_INPROCESS_WORKER="0",
        ONEHAZEL_BATCH_EVENTS_CHUNK="200",  # so a worker can be caught part-way through a job
    )
    apis = [launcher.serve("api-a", env=env), launcher.serve("api-b", env=env)]
    spaces = open_workspaces(launcher, cluster_url, env, apis)

    leaving = launcher.worker("worker-leaving", env=env)
    submit_interleaved(spaces)
    staying = launcher.worker("worker-staying", env=env)

    wait_for_progress_under(cluster_url, leaving, launcher)
    code = leaving.terminate(timeout=15)
    assert code == 0, f"SIGTERM: exit {code}\n{leaving.output()}"
    assert "Traceback" not in leaving.output()
    assert leased_by(cluster_url, leaving) == [], "the stopped worker kept its lease"

    for space in spaces:
        check_workspace(space, cluster_url, launcher)
    # The worker that finished everything also stops cleanly, now idle.
    assert staying.terminate(timeout=15) == 0, staying.output()
    assert "Traceback" not in staying.output()
