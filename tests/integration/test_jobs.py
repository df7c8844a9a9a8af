"""Batch jobs against real SQLite and PostgreSQL: claiming order, leases, crashes, retention, payloads.

These tests drive ``Worker`` explicitly over the ``services`` container.
Each starts by draining whatever another test left runnable, so the jobs a
test creates are the only runnable ones and "nothing is runnable" means
exactly what it says. Crashes are simulated by raising inside the chunk's
transaction (after its items were applied), never by mocking the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

import onehazel.jobs.apply as apply_module
import onehazel.jobs.worker as worker_module
from onehazel.crypto.blobs import open_blob
from onehazel.domain.errors import InvalidJson, JobNotFound
from onehazel.domain.workspace import Workspace
from onehazel.jobs.worker import Worker
from onehazel.services.container import Services
from onehazel.storage.jobs import JobRecord
from onehazel.storage.tables import entities, event_rollups, events, job_chunks, jobs

HOUR = 3600 * 1_000_000
DAY = 24 * HOUR


@pytest.fixture(autouse=True)
def thousand_event_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests reason about chunks of 1000 events (production uses whole 5000-event batches)."""
    monkeypatch.setitem(worker_module.CHUNK_SIZE, "events", 1000)


# --- helpers ------------------------------------------------------------------------------------


async def drain(services: Services, worker: Worker | None = None) -> None:
    worker = worker or Worker(services)
    while await worker.run_once():
        pass


@pytest.fixture(autouse=True)
async def _clean_queue(services: Services) -> AsyncIterator[None]:
    await drain(services)
    yield
    await drain(services)


async def tenant(services: Services, *, mode: str = "live") -> Workspace:
    created = await services.auth.create_operator(f"jobs-{uuid.uuid4().hex[:8]}")
    key = created.live_key if mode == "live" else created.test_key
    ws = await services.auth.authenticate(f"Bearer {key}")
    await services.settings.update(ws, {"templateId": "tpl_igaming"})
    return ws


async def accept(services: Services, ws: Workspace, kind: str, items: list[Any]) -> str:
    body = json.dumps({kind: items}).encode()
    job, created = await services.batch.accept(
        ws, kind=kind, body=body, total=len(items), idempotency_key=None
    )
    assert created
    assert job["status"] == "queued"
    return str(job["jobId"])


async def outcomes_of(services: Services, ws: Workspace, job_id: str) -> list[dict[str, Any]]:
    collected: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await services.batch.items(ws, job_id, status=None, limit=1000, cursor=cursor)
        collected += page["data"]
        cursor = page["nextCursor"]
        if cursor is None:
            return collected


async def job_row(services: Services, ws: Workspace, job_id: str) -> Any:
    async with services.core.store.begin() as uow:
        query = sa.select(jobs).where(jobs.c.workspace_id == ws.id, jobs.c.id == job_id)
        return (await uow.conn.execute(query)).one()


async def count(services: Services, table: sa.Table, ws: Workspace, *where: Any) -> int:
    async with services.core.store.begin() as uow:
        query = sa.select(sa.func.count()).select_from(table).where(table.c.workspace_id == ws.id, *where)
        return int((await uow.conn.execute(query)).scalar_one())


async def update_job(services: Services, ws: Workspace, job_id: str, **values: Any) -> None:
    async with services.core.store.begin() as uow:
        await uow.conn.execute(
            sa.update(jobs).where(jobs.c.workspace_id == ws.id, jobs.c.id == job_id).values(**values)
        )


async def stored_amounts(services: Services, ws: Workspace) -> list[str]:
    async with services.core.store.begin() as uow:
        rows = await uow.conn.execute(sa.select(events.c.data).where(events.c.workspace_id == ws.id))
        return sorted(row[0]["amount"] for row in rows)


def players(n: int) -> list[dict[str, Any]]:
    return [{"externalId": f"p-{i}", "type": "player", "attributes": {"country": "MT"}} for i in range(n)]


def deposits(n: int, external_id: str = "p-0") -> list[dict[str, Any]]:
    """Events without eventId: applying one twice would store two rows."""
    return [
        {
            "externalId": external_id,
            "type": "transaction",
            "data": {"type": "deposit", "amount": f"{i}.01", "currency": "EUR"},
        }
        for i in range(n)
    ]


# --- ordering and claiming ----------------------------------------------------------------------


async def test_jobs_apply_in_acceptance_order_with_concurrent_workers(services: Services) -> None:
    """Entities then events for them, in three workspaces, drained by three workers at once."""
    tenants = [await tenant(services) for _ in range(3)]
    accepted: list[tuple[Workspace, str, str]] = []
    for ws in tenants:
        accepted.append((ws, "entities", await accept(services, ws, "entities", players(260))))
        items = [
            {"externalId": f"p-{i % 260}", "type": "session", "data": {"action": "login"}}
            for i in range(1100)
        ]
        accepted.append((ws, "events", await accept(services, ws, "events", items)))
    workers = [Worker(services) for _ in range(3)]
    await asyncio.gather(*(drain(services, w) for w in workers))
    await drain(services)
    for ws, _kind, job_id in accepted:
        job = await services.batch.get(ws, job_id)
        assert job["status"] == "completed", job
        assert job["processed"] == job["total"] == job["succeeded"]
        assert (job["failed"], job["duplicates"], job["errors"]) == (0, 0, [])
    for ws in tenants:
        assert await count(services, entities, ws) == 260
        assert await count(services, events, ws) == 1100
    for (_, _, first_id), (ws, _, second_id) in zip(accepted[::2], accepted[1::2], strict=True):
        first = await job_row(services, ws, first_id)
        second = await job_row(services, ws, second_id)
        assert first.completed_at <= second.started_at


class _BehindClock:
    """The sequence clock of another server process, whose clock runs an hour behind."""

    def next(self) -> int:
        return time.time_ns() // 1000 - HOUR


async def test_acceptance_order_holds_when_another_process_clock_is_behind(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = await tenant(services)
    first = await accept(services, ws, "entities", players(3))
    monkeypatch.setattr(services.core, "seq", _BehindClock())  # the next acceptance, elsewhere
    second = await accept(services, ws, "events", deposits(2, "p-2"))
    monkeypatch.undo()

    assert (await job_row(services, ws, second)).seq > (await job_row(services, ws, first)).seq
    await drain(services)
    job = await services.batch.get(ws, second)
    assert (job["succeeded"], job["errors"]) == (2, [])  # its entity existed: the entities ran first


async def test_a_later_acceptance_of_a_workspace_waits_for_an_earlier_one_to_commit(
    services: Services,
) -> None:
    """Else the later one could commit first, be claimed, and run before (or beside) it."""
    ws = await tenant(services)
    template = await job_row(services, ws, await accept(services, ws, "states", []))
    await drain(services)

    def queued(seq: int) -> JobRecord:
        fields = {name: getattr(template, name) for name in JobRecord.__dataclass_fields__}
        return JobRecord(**{**fields, "id": f"job_{uuid.uuid4().hex}", "status": "queued", "seq": seq})

    later = queued(1)

    async def accept_later() -> None:
        async with services.core.store.begin() as uow:
            await uow.jobs.insert(later, b"payload")

    async with services.core.store.begin() as uow:
        earlier = queued(time.time_ns() // 1000)
        await uow.jobs.insert(earlier, b"payload")
        waiting = asyncio.ensure_future(accept_later())
        await asyncio.sleep(0.3)
        assert not waiting.done()
    await asyncio.wait_for(waiting, timeout=30)

    assert (await job_row(services, ws, later.id)).seq > (await job_row(services, ws, earlier.id)).seq
    await drain(services)


async def test_workspaces_waiting_on_one_worker_take_turns(services: Services) -> None:
    """One workspace queues three batches, another one batch after them: the second workspace
    waits for one job, not three (each workspace's own jobs still run in order)."""
    busy, other = await tenant(services), await tenant(services)
    busy_jobs = [await accept(services, busy, "entities", players(2)) for _ in range(3)]
    other_job = await accept(services, other, "entities", players(2))

    await drain(services)

    started = {job_id: (await job_row(services, busy, job_id)).started_at for job_id in busy_jobs}
    started[other_job] = (await job_row(services, other, other_job)).started_at
    order = sorted(started, key=started.__getitem__)
    assert order == [busy_jobs[0], other_job, busy_jobs[1], busy_jobs[2]]


async def test_no_job_is_checked_ahead_that_another_workspace_goes_before(services: Services) -> None:
    busy, other = await tenant(services), await tenant(services)
    for ws in (busy, other):
        await services.entities.upsert(ws, {"externalId": "p-0", "type": "player"})
    await accept(services, busy, "events", deposits(2))
    await accept(services, busy, "events", deposits(2))
    other_job = await accept(services, other, "events", deposits(2))
    worker = Worker(services)

    assert await worker.run_once()  # the busy workspace's first job

    assert worker._ahead is None  # its second job was not read and checked for nothing
    assert worker._held is not None
    assert worker._held.id == other_job  # claimed with the first job's end
    await drain(services, worker)


async def test_later_job_waits_for_an_earlier_job_under_a_live_lease(services: Services) -> None:
    busy, free = await tenant(services), await tenant(services)
    first = await accept(services, busy, "entities", players(10))
    second = await accept(services, busy, "events", deposits(10, "p-9"))
    other = await accept(services, free, "entities", players(1))

    # another worker, somewhere, holds the first job with a live lease
    now = services.core.clock()
    async with services.core.store.begin() as uow:
        held = await uow.jobs.claim_next(owner="elsewhere:1:live", now=now, lease_until=now + HOUR)
    assert held is not None
    assert held.id == first
    assert held.status == "processing"

    worker = Worker(services)
    assert await worker.run_once()  # the other workspace is not held up
    assert (await services.batch.get(free, other))["status"] == "completed"
    assert not await worker.run_once()
    now = services.core.clock()
    async with services.core.store.begin() as uow:
        assert await uow.jobs.claim_next(owner="probe", now=now, lease_until=now + HOUR) is None
    waiting = await services.batch.get(busy, second)
    assert (waiting["status"], waiting["processed"], waiting["startedAt"]) == ("queued", 0, None)
    assert await count(services, entities, busy) == 0

    # the other worker died: once its lease lapses, the job is resumed, then the next one runs
    await update_job(services, busy, first, lease_until=services.core.clock() - 1)
    await drain(services, worker)
    done = await services.batch.get(busy, first)
    assert (done["status"], done["succeeded"]) == ("completed", 10)
    later = await services.batch.get(busy, second)
    assert (later["status"], later["succeeded"], later["failed"]) == ("completed", 10, 0)


async def test_an_idempotency_key_stored_meanwhile_gives_the_first_job(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests with one Idempotency-Key both find no job for it; the second one's insert
    then fails on the key's unique constraint (on SQLite in the driver's own call, raising the
    driver's IntegrityError) and it answers with the first job, 200 not 202."""
    ws = await tenant(services)
    body = json.dumps({"events": deposits(3)}).encode()
    first, created = await services.batch.accept(ws, kind="events", body=body, total=3, idempotency_key="k-1")
    assert created
    real = services.batch._replayed
    looks = 0

    async def not_yet(*args: Any, **kwargs: Any) -> Any:
        nonlocal looks
        looks += 1
        return None if looks == 1 else await real(*args, **kwargs)  # the first look came too early

    monkeypatch.setattr(services.batch, "_replayed", not_yet)
    again, created = await services.batch.accept(ws, kind="events", body=body, total=3, idempotency_key="k-1")
    assert (created, looks, again["jobId"]) == (False, 2, first["jobId"])
    assert await count(services, jobs, ws) == 1


# --- crashes, leases, graceful stop -------------------------------------------------------------


@pytest.mark.parametrize("lapse", ["expired_by_sql", "short_lease"])
async def test_interrupted_job_resumes_exactly_once(
    services: Services, monkeypatch: pytest.MonkeyPatch, lapse: str
) -> None:
    ws = await tenant(services)
    await services.entities.upsert(ws, {"externalId": "p-0", "type": "player"})
    items = deposits(2100)  # chunks of 1000: 0-999, 1000-1999, 2000-2099
    job_id = await accept(services, ws, "events", items)

    real_apply = worker_module.apply_chunk
    calls = 0

    async def crash_in_second_chunk(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        outcomes = await real_apply(*args, **kwargs)  # the chunk's rows are written ...
        if calls == 2:
            raise RuntimeError("simulated crash")  # ... and the process dies before commit
        return outcomes

    monkeypatch.setattr(worker_module, "apply_chunk", crash_in_second_chunk)
    crashed = Worker(services, lease_seconds=0.01 if lapse == "short_lease" else 3600)
    with pytest.raises(RuntimeError, match="simulated crash"):
        await crashed.run_once()
    monkeypatch.undo()

    row = await job_row(services, ws, job_id)
    assert (row.status, row.processed, row.succeeded) == ("processing", 1000, 1000)
    assert row.lease_owner == crashed.owner
    assert row.payload is not None
    assert await count(services, events, ws) == 1000
    assert await count(services, job_chunks, ws) == 1

    rescuer = Worker(services)
    if lapse == "expired_by_sql":
        assert not await rescuer.run_once()  # the lease is still live: nobody takes the job
        await update_job(services, ws, job_id, lease_until=services.core.clock() - 1)
    else:
        while services.core.clock() <= row.lease_until:
            await asyncio.sleep(0.005)
    assert await rescuer.run_once()

    job = await services.batch.get(ws, job_id)
    assert job["status"] == "completed"
    assert (job["total"], job["processed"], job["succeeded"], job["failed"], job["duplicates"]) == (
        2100,
        2100,
        2100,
        0,
        0,
    )
    assert await count(services, events, ws) == 2100
    assert await stored_amounts(services, ws) == sorted(i["data"]["amount"] for i in items)
    outcomes = await outcomes_of(services, ws, job_id)
    assert [o["index"] for o in outcomes] == list(range(2100))
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert len({o["eventId"] for o in outcomes}) == 2100
    assert (await job_row(services, ws, job_id)).lease_owner is None


async def test_crash_rolls_back_the_chunk_for_entities(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = await tenant(services)
    job_id = await accept(services, ws, "entities", players(600))  # chunks of 250
    real_apply = worker_module.apply_chunk
    calls = 0

    async def crash_in_second_chunk(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        outcomes = await real_apply(*args, **kwargs)
        if calls == 2:
            raise RuntimeError("simulated crash")
        return outcomes

    monkeypatch.setattr(worker_module, "apply_chunk", crash_in_second_chunk)
    with pytest.raises(RuntimeError, match="simulated crash"):
        await Worker(services).run_once()
    monkeypatch.undo()
    assert await count(services, entities, ws) == 250
    await update_job(services, ws, job_id, lease_until=services.core.clock() - 1)
    await drain(services)

    job = await services.batch.get(ws, job_id)
    assert (job["status"], job["processed"], job["succeeded"], job["failed"]) == ("completed", 600, 600, 0)
    outcomes = await outcomes_of(services, ws, job_id)
    assert [o["index"] for o in outcomes] == list(range(600))
    assert all(o["created"] is True for o in outcomes)  # applied once: every upsert created its entity
    async with services.core.store.begin() as uow:
        versions = await uow.conn.execute(
            sa.select(entities.c.version).where(entities.c.workspace_id == ws.id)
        )
        assert sorted(v for (v,) in versions) == [1] * 600


async def test_graceful_stop_releases_the_lease(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = await tenant(services)
    job_id = await accept(services, ws, "entities", players(600))
    stop = asyncio.Event()
    real_apply = worker_module.apply_chunk

    async def stop_after_the_chunk(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        outcomes = await real_apply(*args, **kwargs)
        stop.set()  # e.g. SIGTERM arrives while the first chunk is being applied
        return outcomes

    monkeypatch.setattr(worker_module, "apply_chunk", stop_after_the_chunk)
    stopping = Worker(services, lease_seconds=3600)
    await asyncio.wait_for(stopping.run(stop), timeout=60)
    monkeypatch.undo()

    row = await job_row(services, ws, job_id)
    assert (row.status, row.processed) == ("processing", 250)
    assert (row.lease_owner, row.lease_until) == (None, None)
    assert await count(services, entities, ws) == 250

    successor = Worker(services)
    assert await successor.run_once()  # at once, without waiting an hour for the lease
    job = await services.batch.get(ws, job_id)
    assert (job["status"], job["processed"], job["succeeded"]) == ("completed", 600, 600)
    outcomes = await outcomes_of(services, ws, job_id)
    assert [o["index"] for o in outcomes] == list(range(600))
    assert all(o["created"] is True for o in outcomes)
    assert await count(services, entities, ws) == 600


# --- retention and payloads ---------------------------------------------------------------------


async def test_sweep_removes_old_finished_jobs_only(services: Services) -> None:
    ws, held = await tenant(services), await tenant(services)
    old_done = await accept(services, ws, "entities", players(1))
    recent_done = await accept(services, ws, "entities", players(2))
    old_failed = await accept(services, ws, "states", [])
    await update_job(services, ws, old_failed, payload=b"not a sealed blob")
    await drain(services)
    assert (await services.batch.get(ws, old_failed))["status"] == "failed"
    assert (await services.batch.get(ws, old_done))["status"] == "completed"

    old_processing = await accept(services, held, "entities", players(3))
    now = services.core.clock()
    async with services.core.store.begin() as uow:
        claimed = await uow.jobs.claim_next(owner="elsewhere:2:live", now=now, lease_until=now + HOUR)
    assert claimed is not None
    assert claimed.id == old_processing
    old_queued = await accept(services, ws, "events", deposits(1))

    two_days_ago = services.core.clock() - 2 * DAY
    for job_id in (old_done, old_failed):
        await update_job(services, ws, job_id, created_at=two_days_ago, completed_at=two_days_ago)
    # accepted long ago, finished just now (it waited in the queue): kept from its completion
    for job_id in (recent_done, old_queued):
        await update_job(services, ws, job_id, created_at=two_days_ago)
    await update_job(services, held, old_processing, created_at=two_days_ago)
    assert await count(services, job_chunks, ws, job_chunks.c.job_id == old_done) == 1

    removed = await Worker(services, retention_days=1).sweep()
    assert removed >= 2
    for gone in (old_done, old_failed):
        with pytest.raises(JobNotFound):
            await services.batch.get(ws, gone)
        with pytest.raises(JobNotFound):
            await services.batch.items(ws, gone, status=None, limit=10, cursor=None)
    assert await count(services, job_chunks, ws, job_chunks.c.job_id == old_done) == 0
    assert await count(services, jobs, ws) == 2
    assert (await services.batch.get(ws, recent_done))["succeeded"] == 2
    assert len(await outcomes_of(services, ws, recent_done)) == 2
    assert (await services.batch.get(ws, old_queued))["status"] == "queued"
    assert (await services.batch.get(held, old_processing))["status"] == "processing"
    assert await count(services, entities, ws) == 2  # the jobs' effects stay

    await update_job(services, held, old_processing, lease_until=services.core.clock() - 1)
    await drain(services)
    assert (await services.batch.get(ws, old_queued))["status"] == "completed"
    assert (await services.batch.get(held, old_processing))["status"] == "completed"


async def test_batch_pii_is_sealed_while_queued_and_dropped_when_done(services: Services) -> None:
    ws = await tenant(services)
    canary = f"pii-canary-{uuid.uuid4().hex}@example.com"
    control = f"plain-control-{uuid.uuid4().hex}"
    items = [
        {"externalId": "p-1", "type": "player", "attributes": {"email": canary, "segment": control}},
        {"externalId": "p-2", "type": "player", "attributes": {"email": canary, "vip": "not a boolean"}},
    ]
    job_id = await accept(services, ws, "entities", items)

    def leaks(row: Any) -> list[str]:
        found = []
        for name, value in row._mapping.items():
            text = value if isinstance(value, bytes) else json.dumps(value, default=str).encode()
            if canary.encode() in text or canary.encode().hex().encode() in text:
                found.append(name)
        return found

    queued = await job_row(services, ws, job_id)
    assert queued.payload is not None
    assert leaks(queued) == []
    assert control.encode() not in queued.payload  # the whole batch is sealed, not only PII fields
    opened = open_blob(services.core.keys, ws.id, f"job/{job_id}", bytes(queued.payload))
    assert canary in opened.decode()
    assert control in opened.decode()

    await drain(services)
    done = await job_row(services, ws, job_id)
    assert done.status == "completed"
    assert done.payload is None
    assert leaks(done) == []
    async with services.core.store.begin() as uow:
        chunks = (
            await uow.conn.execute(sa.select(job_chunks).where(job_chunks.c.workspace_id == ws.id))
        ).all()
    assert len(chunks) == 1
    assert [leaks(chunk) for chunk in chunks] == [[]]
    assert (await services.entities.get(ws, "p-1"))["attributes"]["email"] == canary


async def test_money_in_a_job_is_exact(services: Services) -> None:
    ws = await tenant(services)
    await services.entities.upsert(ws, {"externalId": "p-0", "type": "player"})
    amounts = ["12345678901234567890.12", "0.10", "0.20", "99999999999999999999.99"]
    items = [
        {
            "externalId": "p-0",
            "type": "transaction",
            "data": {"type": "deposit", "amount": a, "currency": "EUR"},
        }
        for a in amounts
    ]
    job_id = await accept(services, ws, "events", items)
    await drain(services)
    assert (await services.batch.get(ws, job_id))["succeeded"] == 4
    stored = await stored_amounts(services, ws)
    assert stored == sorted(amounts)
    assert sum(Decimal(a) for a in stored) == Decimal("112345678901234567890.41")


# --- unreadable payloads --------------------------------------------------------------------------

# Read by orjson and the submit's simdjson (up to 1024 levels); on Python 3.11 the exact parser
# reads it only because json_text raises the interpreter's recursion limit to 2000.
DEEP = b"[" * 1000 + b"]" * 1000


@contextlib.contextmanager
def exact_parser_refusing_deep(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The exact parser refusing ``DEEP``, the one way left for a payload orjson reads to fail
    the exact re-read. On Python 3.11: the interpreter's default recursion limit, under which
    json.loads refuses it. From 3.12 on json.loads is bound by a C-level limit instead (past
    orjson's 1024 levels), so no payload orjson reads fails it; the refusal is imitated there."""
    if sys.version_info < (3, 12):
        raised = sys.getrecursionlimit()
        sys.setrecursionlimit(1000)
        try:
            yield
        finally:
            sys.setrecursionlimit(raised)
        return
    exact = worker_module.parse_json

    def refusing(raw: bytes) -> Any:
        if DEEP in raw:
            raise InvalidJson("the request body is nested too deeply")
        return exact(raw)

    monkeypatch.setattr(worker_module, "parse_json", refusing)
    yield


@pytest.mark.parametrize("chunk", [5000, 1])
async def test_a_payload_the_exact_parser_refuses_fails_its_job_as_unreadable(
    services: Services, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker reads events with orjson and re-reads exactly only what the fast path
    declines; when that re-read fails, the job fails as unreadable (it must not stay
    "processing", holding up the workspace's later jobs), keeping any chunk already applied."""
    ws = await tenant(services)
    await services.entities.upsert(ws, {"externalId": "p-0", "type": "player"})
    flat = json.dumps(deposits(1)[0]).encode()
    deep = b'{"externalId": "p-0", "type": "bonus", "data": {"n": ' + DEEP + b"}}"
    body = b'{"events": [' + flat + b", " + deep + b"]}"
    job, _ = await services.batch.accept(ws, kind="events", body=body, total=2, idempotency_key=None)
    later = await accept(services, ws, "events", deposits(2))
    worker = Worker(services, events_chunk=chunk)
    with exact_parser_refusing_deep(monkeypatch):
        while await worker.run_once():
            pass
    failed = await services.batch.get(ws, job["jobId"])
    assert failed["status"] == "failed"
    assert failed["errors"][0]["code"] == "job_unreadable"
    applied = 1 if chunk == 1 else 0  # the flat item's chunk commits before the deep one is read
    assert (failed["processed"], failed["succeeded"]) == (applied, applied)
    assert (await services.batch.get(ws, later))["status"] == "completed"
    assert await count(services, events, ws) == applied + 2


# --- reading ahead --------------------------------------------------------------------------------


async def test_jobs_checked_ahead_are_applied_against_the_data_at_their_turn(services: Services) -> None:
    """The worker checks the next queued job while it writes the current one. What it
    prepared ahead is only validation: an entity deleted in between still fails the
    next job's events, and nothing of them is stored."""
    ws = await tenant(services)
    for external_id in ("p-0", "p-1"):
        await services.entities.upsert(ws, {"externalId": external_id, "type": "player"})
    first = await accept(services, ws, "events", deposits(3, "p-0"))
    second = await accept(services, ws, "events", deposits(4, "p-1"))
    worker = Worker(services)
    assert await worker.run_once()  # the first job; the second is read and checked meanwhile
    assert worker._ahead is not None
    assert worker._ahead.job_id == second
    await services.entities.delete(ws, "p-1")
    assert await worker.run_once()
    assert [o["status"] for o in await outcomes_of(services, ws, first)] == ["succeeded"] * 3
    late = await outcomes_of(services, ws, second)
    assert [o["error"]["code"] for o in late] == ["entity_deleted"] * 4
    assert await count(services, events, ws, events.c.external_id == "p-1") == 0


async def test_a_job_read_ahead_and_taken_by_another_worker_is_applied_once(services: Services) -> None:
    ws = await tenant(services)
    await services.entities.upsert(ws, {"externalId": "p-0", "type": "player"})
    first = await accept(services, ws, "events", deposits(2))
    second = await accept(services, ws, "events", deposits(5))
    early, other = Worker(services), Worker(services)
    assert await early.run_once()  # the first job; the second is read ahead, and claimed at its end
    assert early._ahead is not None
    assert early._ahead.job_id == second
    await update_job(services, ws, second, lease_until=services.core.clock() - 1)  # early stalls past it
    assert await other.run_once()  # ... so another worker takes the second job and applies it
    assert await early.run_once()  # its claim lapsed: the look-ahead is dropped, not applied
    assert not await early.run_once()
    assert early._ahead is None
    assert [o["status"] for o in await outcomes_of(services, ws, first)] == ["succeeded"] * 2
    assert [o["status"] for o in await outcomes_of(services, ws, second)] == ["succeeded"] * 5
    assert await count(services, events, ws) == 7


async def test_the_next_job_is_claimed_in_the_transaction_that_finishes_a_job(services: Services) -> None:
    """A worker takes the next job's lease as it commits the last chunk of a job (no
    transaction of its own for the claim); if it stops before starting that job, it gives
    the lease back so another worker starts it at once instead of after the lease."""
    ws = await tenant(services)
    await services.entities.upsert(ws, {"externalId": "p-0", "type": "player"})
    first = await accept(services, ws, "events", deposits(2))
    second = await accept(services, ws, "events", deposits(3))
    worker = Worker(services, lease_seconds=3600)
    assert await worker.run_once()
    done, held = await job_row(services, ws, first), await job_row(services, ws, second)
    assert done.status == "completed"
    assert (held.status, held.processed, held.lease_owner) == ("processing", 0, worker.owner)
    assert held.started_at >= done.completed_at
    assert await count(services, events, ws) == 2  # claimed, nothing of it applied yet

    stop = asyncio.Event()
    stop.set()
    await worker.run(stop)  # stops at once: the claimed job is given back
    released = await job_row(services, ws, second)
    assert (released.status, released.processed, released.lease_owner) == ("processing", 0, None)
    assert await Worker(services).run_once()
    assert (await services.batch.get(ws, second))["succeeded"] == 3
    assert await count(services, events, ws) == 5


# --- rows built ahead vs item by item ------------------------------------------------------------


def mixed_events(prefix: str) -> list[dict[str, Any]]:
    """Valid events with and without client eventIds and with a warning, plus invalid ones."""
    items: list[dict[str, Any]] = []
    for i in range(40):
        item: dict[str, Any] = {
            "externalId": f"p-{i % 3}",
            "type": "transaction",
            "timestamp": f"2026-03-0{1 + i % 3}T1{i % 10}:00:00Z",
            "data": {"type": "deposit", "amount": f"{i}.{i % 7}0", "currency": "EUR" if i % 2 else "GBP"},
        }
        if i % 4:
            item["eventId"] = f"{prefix}-{i}"
        if i % 9 == 0:
            del item["data"]["currency"]  # accepted, with a warning
        if i % 13 == 0:
            item["type"] = "no_such_type"  # fails on its own
        items.append(item)
    return items


@pytest.mark.parametrize("ahead", [True, False])
async def test_rows_built_ahead_give_what_item_by_item_gives(services: Services, ahead: bool) -> None:
    """The usual chunk's rows, outcomes and analytics deltas are built while checking it; the
    same chunk written item by item (the path for PII, missing timestamps, repeats, unknown
    entities) must store the same rows, count the same analytics and answer the same."""
    ws = await tenant(services)
    for first in (True, False):  # the second send is a replay: every item a duplicate
        await accept(services, ws, "entities", players(3))
        items = mixed_events("e")
        fingerprints = await services.core.fingerprinter(ws)
        template = await services.core.template_of(ws)
        prepared = apply_module.prepare_events(template, items, 0, fingerprints)
        assert prepared.rows is not None  # this chunk qualifies
        if not ahead:
            prepared.rows = None
        await drain(services)
        async with services.core.store.begin() as uow:
            outcomes = await apply_module.apply_chunk(
                services,
                uow,
                ws,
                template,
                kind="events",
                items=items,
                start=0,
                fingerprints=fingerprints,
                prepared=prepared,
            )
        failed = [i for i in range(40) if i % 13 == 0]
        server_ids = [i for i in range(40) if i % 4 == 0 and i not in failed]  # new rows every time
        replays = 40 - len(failed) - len(server_ids)
        statuses = Counter(o["status"] for o in outcomes)
        if first:
            assert statuses == {"succeeded": 40 - len(failed), "failed": len(failed)}
        else:
            assert statuses == {"succeeded": len(server_ids), "duplicate": replays, "failed": len(failed)}
        assert [o["index"] for o in outcomes] == list(range(40))
        assert [i for i, o in enumerate(outcomes) if o["status"] == "failed"] == failed
        assert [bool(o.get("warnings")) for o in outcomes] == [
            i % 9 == 0 and i not in failed for i in range(40)
        ]
        client_ids = [o["eventId"] for i, o in enumerate(outcomes) if i % 4 and i not in failed]
        assert client_ids == [f"e-{i}" for i in range(40) if i % 4 and i not in failed]
    assert await count(services, events, ws) == 40 - len(failed) + len(server_ids)
    async with services.core.store.begin() as uow:
        counted = await uow.conn.execute(
            sa.select(sa.func.sum(event_rollups.c.count), sa.func.count()).where(
                event_rollups.c.workspace_id == ws.id
            )
        )
        total, rows = counted.one()
        amounts = await uow.conn.execute(
            sa.select(event_rollups.c.amount).where(event_rollups.c.workspace_id == ws.id)
        )
        summed = sum(Decimal(str(a[0])) for a in amounts if a[0] is not None)
    stored = await count(services, events, ws)
    assert total == stored
    assert rows > 0
    assert summed == sum(Decimal(a) for a in await stored_amounts(services, ws))
