"""SQLite's two-call events chunk (storage/sqlite_chunk.py) against the generic path.

Each scenario runs twice over the real SQLite database, in two workspaces with the same
players: once by a worker that takes the two-call path where it can, once by one that never
does (``sqlite_chunks=False``, the path PostgreSQL takes). Everything a user can see must be
the same: each job's status, counters, errors and warnings, every item outcome, the stored
events and the analytics rollup (which must also equal a rebuild from the stored events).
A spy on ``finish_chunk`` (the real function, called through) says which chunks went the
two-call way, so each scenario also shows it exercises the path it is about.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa

import onehazel.jobs.worker as worker_module
import onehazel.storage.sqlite_chunk as sqlite_chunk
from onehazel.domain.workspace import Workspace
from onehazel.jobs.worker import Worker
from onehazel.services.container import Services
from onehazel.storage.tables import events, job_chunks, jobs
from tests.integration.test_event_bulk_write import counted

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])  # the path exists on SQLite only

PLAYERS = 12


async def tenant(services: Services) -> Workspace:
    created = await services.auth.create_operator(f"chunks-{uuid.uuid4().hex[:8]}")
    ws = await services.auth.authenticate(f"Bearer {created.live_key}")
    await services.settings.update(ws, {"templateId": "tpl_igaming"})
    for i in range(PLAYERS):
        await services.entities.upsert(ws, {"externalId": f"p-{i}", "type": "player"})
    return ws


def deposit(i: int, *, player: int | None = None, amount: str | None = None) -> dict[str, Any]:
    return {
        "eventId": f"evt-{i}",
        "externalId": f"p-{i % PLAYERS if player is None else player}",
        "type": "transaction",
        "timestamp": f"2026-11-{1 + i % 27:02d}T10:{i % 60:02d}:00Z",
        "data": {"type": "deposit", "amount": amount or f"{i}.25", "currency": "EUR"},
    }


def new_batch(n: int = 300) -> list[dict[str, Any]]:
    """Valid deposits, one accepted with a warning (no currency), two that fail validation."""
    items = [deposit(i) for i in range(n)]
    del items[7]["data"]["currency"]
    items[11]["type"] = "no_such_type"
    items[12]["data"]["amount"] = "not a number"
    return items


class Spy:
    """Counts the chunks ``finish_chunk`` committed, calling the real function."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.committed = 0
        real = sqlite_chunk.finish_chunk

        async def finishing(*args: Any, **kwargs: Any) -> Any:
            result = await real(*args, **kwargs)
            self.committed += result[2]
            return result

        monkeypatch.setattr(worker_module, "finish_chunk", finishing)


async def accept(services: Services, ws: Workspace, items: list[dict[str, Any]]) -> str:
    body = json.dumps({"events": items}).encode()
    job, _ = await services.batch.accept(ws, kind="events", body=body, total=len(items), idempotency_key=None)
    return str(job["jobId"])


async def drain(services: Services, *, fast: bool, chunk: int | None = None) -> None:
    worker = Worker(services, sqlite_chunks=fast, events_chunk=chunk)
    while await worker.run_once():
        pass


async def seen(services: Services, ws: Workspace, job_ids: list[str]) -> dict[str, Any]:
    """What a user sees of the workspace: jobs, item outcomes, stored events, the order an
    entity's events are listed in (timestamp, then server order: ``seq``), rollups."""
    seen_jobs = []
    for job_id in job_ids:
        job = await services.batch.get(ws, job_id)
        page = await services.batch.items(ws, job_id, status=None, limit=1000, cursor=None)
        assert page["nextCursor"] is None
        shown = {k: v for k, v in job.items() if k not in ("jobId", "createdAt", "startedAt", "completedAt")}
        seen_jobs.append((shown, page["data"]))
    async with services.core.store.begin() as uow:
        stored = await uow.conn.execute(
            sa.select(
                events.c.event_id, events.c.external_id, events.c.type, events.c.data, events.c.timestamp
            )
            .where(events.c.workspace_id == ws.id)
            .order_by(events.c.event_id)
        )
        rows = [tuple(row) for row in stored]
        listed = await uow.conn.execute(
            sa.select(events.c.external_id, events.c.event_id)
            .where(events.c.workspace_id == ws.id)
            .order_by(events.c.external_id, events.c.ts, events.c.seq, events.c.event_id)
        )
        listings: dict[str, list[str]] = {}
        for external_id, event_id in listed:
            listings.setdefault(external_id, []).append(event_id)
        chunk_rows = await uow.conn.execute(
            sa.select(sa.func.count()).where(job_chunks.c.workspace_id == ws.id)
        )
        payloads = await uow.conn.execute(
            sa.select(sa.func.count()).where(jobs.c.workspace_id == ws.id, jobs.c.payload.is_not(None))
        )
        assert payloads.scalar_one() == 0  # every finished job dropped its payload
    rollup = await counted(services, ws.id)
    assert rollup == await counted(services, ws.id, rebuilt=True)
    return {
        "jobs": seen_jobs,
        "events": rows,
        "listings": listings,
        "outcome rows": chunk_rows.scalar_one(),
        "rollup": rollup,
    }


Scenario = Callable[[Services, Workspace, bool], Awaitable[list[str]]]


async def both_ways(
    services: Services, monkeypatch: pytest.MonkeyPatch, scenario: Scenario
) -> tuple[dict[str, Any], int]:
    """Run ``scenario`` (which accepts jobs and drains them with ``drain(fast=...)`` through
    the worker it is given) both ways; returns what the user sees, and how many chunks went
    the two-call way. Fails unless both ways show the same."""
    spy = Spy(monkeypatch)
    results = []
    for fast in (True, False):
        ws = await tenant(services)
        before = spy.committed
        job_ids = await scenario(services, ws, fast)
        results.append((await seen(services, ws, job_ids), spy.committed - before))
    (fast_seen, fast_chunks), (generic_seen, generic_chunks) = results
    assert generic_chunks == 0
    assert fast_seen == generic_seen
    return fast_seen, fast_chunks


def one_then_another(first: list[dict[str, Any]], then: list[dict[str, Any]]) -> Scenario:
    """A scenario: the batch ``first`` is applied, then the batch ``then``."""

    async def scenario(services: Services, ws: Workspace, fast: bool) -> list[str]:
        job_ids = []
        for items in (first, then):
            job_ids.append(await accept(services, ws, items))
            await drain(services, fast=fast)
        return job_ids

    return scenario


async def test_a_new_batch_and_its_resend(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    items = new_batch()
    shown, fast_chunks = await both_ways(services, monkeypatch, one_then_another(items, items))
    assert fast_chunks == 2  # the new batch, then its re-send
    (first, first_items), (again, again_items) = shown["jobs"]
    assert (first["succeeded"], first["failed"], first["duplicates"]) == (298, 2, 0)
    assert (again["succeeded"], again["failed"], again["duplicates"]) == (0, 2, 298)
    assert [w["index"] for w in first["warnings"]] == [7] == [w["index"] for w in again["warnings"]]
    assert [o["status"] for o in again_items][10:14] == ["duplicate", "failed", "failed", "duplicate"]
    assert len(shown["events"]) == 298


async def test_jobs_queued_together_are_read_ahead(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each job's chunk reads the next job ahead and claims it, in its own two calls."""
    batches = [[deposit(i) for i in range(n * 100, n * 100 + 100)] for n in range(4)]
    read_ahead: list[str] = []
    real_reading = worker_module.Ahead.reading.__func__  # type: ignore[attr-defined]

    def reading(cls: Any, worker: Worker, ws: Workspace, job_id: str, *args: Any) -> Any:
        read_ahead.append(job_id)
        return real_reading(cls, worker, ws, job_id, *args)

    monkeypatch.setattr(worker_module.Ahead, "reading", classmethod(reading))
    claimed: list[str] = []
    real_claim = sqlite_chunk._claim

    def claim(*args: Any) -> Any:
        job = real_claim(*args)
        claimed.append(job.id if job is not None else "none")
        return job

    monkeypatch.setattr(sqlite_chunk, "_claim", claim)

    async def scenario(services: Services, ws: Workspace, fast: bool) -> list[str]:
        job_ids = [await accept(services, ws, items) for items in batches]
        await drain(services, fast=fast)  # each job's last chunk reads the next one ahead
        return job_ids

    fast_read_ahead = 3  # the two-call way runs first: the jobs it read ahead and claimed
    shown, fast_chunks = await both_ways(services, monkeypatch, scenario)
    assert fast_chunks == 4
    assert len(read_ahead) == fast_read_ahead + 3  # the generic way reads the next job ahead too
    assert claimed[:fast_read_ahead] == read_ahead[:fast_read_ahead]
    assert [job["succeeded"] for job, _ in shown["jobs"]] == [100] * 4
    assert len(shown["events"]) == 400


async def test_a_resend_with_a_changed_event(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    items = [deposit(i) for i in range(50)]
    changed = [dict(item) for item in items]
    changed[30] = deposit(30, amount="999.99")  # same eventId, another event
    shown, fast_chunks = await both_ways(services, monkeypatch, one_then_another(items, changed))
    assert fast_chunks == 2
    again, again_items = shown["jobs"][1]
    assert (again["duplicates"], again["failed"]) == (49, 1)
    assert again_items[30]["error"]["code"] == "event_id_conflict"


async def test_chunks_the_generic_path_takes(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deleted entity, an unknown one, PII, no timestamp, a re-send with new events in it, a
    repeated eventId: each goes (whole) the generic way, in the same transaction."""
    stored = [deposit(i) for i in range(20)]
    deleted = [deposit(i, player=3) for i in range(100, 110)]
    unknown = [deposit(200), {**deposit(201), "externalId": "nobody"}]
    pii = [
        deposit(300),
        {
            "eventId": "evt-login",
            "externalId": "p-1",
            "type": "session",
            "timestamp": "2026-11-02T08:00:00Z",
            "data": {"action": "login", "ip_address": "203.0.113.9"},
        },
    ]
    untimed = [deposit(400), {k: v for k, v in deposit(401).items() if k != "timestamp"}]
    mixed = [*stored[:5], deposit(500), deposit(501)]
    repeated = [deposit(600), deposit(601), deposit(600)]

    async def scenario(services: Services, ws: Workspace, fast: bool) -> list[str]:
        job_ids = [await accept(services, ws, stored)]
        await drain(services, fast=fast)
        await services.entities.delete(ws, "p-3")
        for items in (deleted, unknown, pii, untimed, mixed, repeated):
            job_ids.append(await accept(services, ws, items))
        await drain(services, fast=fast)
        return job_ids

    shown, fast_chunks = await both_ways(services, monkeypatch, scenario)
    assert fast_chunks == 1  # only the first batch
    failed = [
        [o["error"]["code"] for o in outcomes if o["status"] == "failed"] for _, outcomes in shown["jobs"]
    ]
    assert failed[1:3] == [["entity_deleted"] * 10, ["entity_not_found"]]
    assert [job["succeeded"] for job, _ in shown["jobs"]] == [20, 0, 1, 2, 2, 2, 2]
    assert [o["status"] for o in shown["jobs"][6][1]] == ["succeeded", "succeeded", "duplicate"]


async def test_an_event_stored_already_deep_in_a_new_chunk_is_judged_not_doubled(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An eventId stored already (by single writes) deep in a new chunk, so that the re-send
    probe (the chunk's first few eventIds) misses it, as with one a single write in another
    process stores between the look-ahead and the write: the two-call path writes the rest,
    does not commit, and the chunk's outcomes and analytics are settled by the generic path
    in the same transaction."""
    items = [deposit(i) for i in range(40)]

    async def scenario(services: Services, ws: Workspace, fast: bool) -> list[str]:
        await services.events.record(ws, deposit(25))  # the same event, already stored
        await services.events.record(ws, deposit(33, amount="1.00"))  # the same eventId, another event
        job_id = await accept(services, ws, items)
        await drain(services, fast=fast)
        return [job_id]

    spy_finished: list[tuple[int | None, bool]] = []
    real = sqlite_chunk.finish_chunk

    async def finishing(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        spy_finished.append((result[0], result[2]))
        return result

    monkeypatch.setattr(worker_module, "finish_chunk", finishing)
    results = []
    for fast in (True, False):
        ws = await tenant(services)
        results.append(await seen(services, ws, await scenario(services, ws, fast)))
    assert results[0] == results[1]
    assert spy_finished == [(38, False)]  # 38 rows went in, then the generic path settled it
    job, outcomes = results[0]["jobs"][0]
    assert (job["succeeded"], job["duplicates"], job["failed"]) == (38, 1, 1)
    assert (outcomes[25]["status"], outcomes[33]["error"]["code"]) == ("duplicate", "event_id_conflict")
    assert len(results[0]["events"]) == 40


async def test_a_crash_before_the_commit_leaves_nothing(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the rows went in, before COMMIT: nothing of the chunk is stored,
    and the next worker applies it exactly once."""
    ws = await tenant(services)
    job_id = await accept(services, ws, [deposit(i) for i in range(100)])
    real = sqlite_chunk._finish

    class DiesAtCommit:
        """The driver's connection, but the process dies as the COMMIT is sent."""

        def __init__(self, conn: Any) -> None:
            self.conn = conn

        def execute(self, sql: str, *args: Any) -> Any:
            if sql == "COMMIT":
                raise RuntimeError("simulated crash")
            return self.conn.execute(sql, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.conn, name)

    def dying(conn: Any, writes: sqlite_chunk.ChunkWrites) -> Any:
        return real(DiesAtCommit(conn), writes)  # rows, outcomes, progress, claim: all written

    monkeypatch.setattr(sqlite_chunk, "_finish", dying)
    with pytest.raises(RuntimeError, match="simulated crash"):
        await Worker(services).run_once()
    monkeypatch.setattr(sqlite_chunk, "_finish", real)
    async with services.core.store.begin() as uow:
        stored = await uow.conn.execute(sa.select(sa.func.count()).where(events.c.workspace_id == ws.id))
        assert stored.scalar_one() == 0
        await uow.conn.execute(
            sa.update(jobs).where(jobs.c.workspace_id == ws.id, jobs.c.id == job_id).values(lease_until=0)
        )
    await drain(services, fast=True)
    shown = await seen(services, ws, [job_id])
    job, outcomes = shown["jobs"][0]
    assert (job["status"], job["succeeded"]) == ("completed", 100)
    assert [o["status"] for o in outcomes] == ["succeeded"] * 100
    assert len(shown["events"]) == 100


async def test_a_chunk_after_one_the_generic_path_took_is_listed_after_it(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One entity's events at one timestamp are listed in server order (``seq``), which must be
    the items' order. The job's first chunk goes the generic way (it names an unknown entity)
    and is stamped as it is written; the second, checked and staged while the first was
    written, is stamped as it is written too, so it is listed after the first."""
    items = [{**deposit(i, player=0), "timestamp": "2026-11-02T10:00:00Z"} for i in range(400)]
    items[5] = {**items[5], "externalId": "nobody"}

    async def scenario(services: Services, ws: Workspace, fast: bool) -> list[str]:
        job_id = await accept(services, ws, items)
        await drain(services, fast=fast, chunk=200)
        return [job_id]

    shown, fast_chunks = await both_ways(services, monkeypatch, scenario)
    assert fast_chunks == 1  # the second chunk
    assert shown["listings"]["p-0"] == [item["eventId"] for i, item in enumerate(items) if i != 5]


async def test_an_empty_job(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(services: Services, ws: Workspace, fast: bool) -> list[str]:
        job_id = await accept(services, ws, [])
        await drain(services, fast=fast)
        return [job_id]

    shown, _ = await both_ways(services, monkeypatch, scenario)
    job, outcomes = shown["jobs"][0]
    assert (job["status"], job["total"], outcomes, shown["outcome rows"]) == ("completed", 0, [], 0)
