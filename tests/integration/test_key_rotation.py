"""Master-key rotation on both databases (CONTRACT.md, "PII encryption": keys rotate without downtime).

Data is written under master key A; the server is then configured with [A, B]
(B newest) and ``MasterKeys.rotate`` re-wraps everything under B. Afterwards
every entity and event reads back with its PII, replays are still recognised
(same eventId and payload: duplicate; different payload: conflict; same
Idempotency-Key: same job), also with only [B] configured, and a queued batch
sealed under A is applied after A is gone. With only [A] configured after the
rotation, the start-up check names B instead of serving garbage.

Every test gets a database of its own: a rotation re-wraps the whole database,
which must never include other tests' data (they run with the shared test key).
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from onehazel.api.app import create_app
from onehazel.bootstrap import open_services
from onehazel.config import Config
from onehazel.crypto.fields import wrap_secret
from onehazel.crypto.fingerprints import PURPOSE
from onehazel.domain.workspace import Workspace
from onehazel.jobs.worker import Worker
from onehazel.services.container import Services
from onehazel.services.master_keys import MasterKeys, MissingMasterKey, Tally
from onehazel.storage.secrets import SecretRepository
from onehazel.storage.tables import entity_keys, events, jobs, workspace_secrets
from tests.acceptance.processes import fresh_postgres
from tests.conftest import Api, _migrate
from tests.helpers import error_of

KEY_A = "A:" + base64.b64encode(b"A" * 32).decode()
KEY_B = "B:" + base64.b64encode(b"B" * 32).decode()


def ring_env(*keys: str) -> dict[str, str]:
    return {"ONEHAZEL_MASTER_KEY": ",".join(keys)}


@contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    """A new, migrated database (a SQLite file in ``directory``, or a PostgreSQL database)."""
    if backend == "sqlite":
        url = f"sqlite:///{directory / 'rotation.db'}"
        asyncio.run(_migrate(url))
        yield url
        return
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def fresh_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A new, migrated database for this test alone."""
    with fresh_database(backend, tmp_path) as url:
        yield url


@asynccontextmanager
async def opened(url: str, *keys: str) -> AsyncIterator[Services]:
    """The services of a process configured with these master keys (the last is current)."""
    services = await open_services(Config.load(url, env=ring_env(*keys)))
    try:
        yield services
    finally:
        await services.close()


async def _ready(services: Services) -> Services:
    return services


@asynccontextmanager
async def client(services: Services, key: str) -> AsyncIterator[Api]:
    app = create_app(lambda: _ready(services))
    app.state.services = services
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield Api(http, key)


async def drain(services: Services) -> None:
    worker = Worker(services)
    while await worker.run_once():
        pass


def player(external_id: str, n: int) -> dict[str, Any]:
    return {
        "externalId": external_id,
        "type": "player",
        "attributes": {
            "email": f"{external_id}-{n}@example.com",
            "first_name": f"Name{n}",
            "country": "MT",
        },
    }


def session(external_id: str, event_id: str, ip: str) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "externalId": external_id,
        "type": "session",
        "data": {"action": "login", "ip_address": ip},
    }


@dataclass
class World:
    """What was written under key A, to check after the rotation."""

    live_key: str
    players: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # eventId -> body
    batch_body: bytes = b""
    batch_job: str = ""
    queued_job: str = ""
    queued_player: str = "queued-1"


async def populate(services: Services) -> World:
    """Entities and events with PII, a finished batch with an Idempotency-Key, a queued batch."""
    created = await services.auth.create_operator(f"rot-{uuid.uuid4().hex[:6]}")
    world = World(live_key=created.live_key)
    async with client(services, created.live_key) as api:
        assert (await api.put("/settings", json={"templateId": "tpl_igaming"})).status_code == 200
        for i in range(5):
            body = player(f"p-{i}", 0)
            response = await api.post("/entities", json=body)
            assert response.status_code == 201, response.text
            world.players[body["externalId"]] = body["attributes"]
            event = session(f"p-{i}", f"evt-{i}", f"10.0.0.{i}")
            response = await api.post(f"/entities/p-{i}/events", json=event)
            assert response.status_code == 201, response.text
            world.events[event["eventId"]] = event
        batch = [session(f"p-{i}", f"bevt-{i}", f"10.1.0.{i}") for i in range(3)]
        world.batch_body = json.dumps({"events": batch}).encode()
        response = await api.post(
            "/batch/events",
            content=world.batch_body,
            headers={"Content-Type": "application/json", "Idempotency-Key": "batch-1"},
        )
        assert response.status_code == 202, response.text
        world.batch_job = response.json()["jobId"]
        await drain(services)
        for event in batch:
            world.events[event["eventId"]] = event
        queued = player(world.queued_player, 0)
        response = await api.post("/batch/entities", json={"entities": [queued]})
        assert response.status_code == 202, response.text
        world.queued_job = response.json()["jobId"]
    return world


async def stored_key_ids(services: Services) -> dict[str, set[str]]:
    """The master key ids found in the raw rows, per kind."""
    async with services.core.store.begin() as uow:
        data_keys = (await uow.conn.execute(sa.select(entity_keys.c.data_key))).scalars().all()
        secrets = (await uow.conn.execute(sa.select(workspace_secrets.c.wrapped))).scalars().all()
        payloads = (
            (await uow.conn.execute(sa.select(jobs.c.payload).where(jobs.c.payload.is_not(None))))
            .scalars()
            .all()
        )
    return {
        "entityKeys": {k.split(".")[1] for k in data_keys},
        "workspaceSecrets": {s.split(".")[1] for s in secrets},
        "jobPayloads": {bytes(p).split(b":")[1].decode() for p in payloads},
    }


async def assert_all_readable(api: Api, world: World) -> None:
    for external_id, attributes in world.players.items():
        response = await api.get(f"/entities/{external_id}")
        assert response.status_code == 200, response.text
        assert response.json()["attributes"] == attributes
        listed = await api.get(f"/entities/{external_id}/events", params={"limit": 100})
        assert listed.status_code == 200, listed.text
        got = {e["eventId"]: e["data"]["ip_address"] for e in listed.json()["data"]}
        want = {
            eid: e["data"]["ip_address"] for eid, e in world.events.items() if e["externalId"] == external_id
        }
        assert got == want


async def assert_replays_detected(api: Api, world: World) -> None:
    for event in list(world.events.values())[:2] + list(world.events.values())[-2:]:
        path = f"/entities/{event['externalId']}/events"
        same = await api.post(path, json=event)
        assert same.status_code == 200, same.text
        assert same.json()["duplicate"] is True
        assert same.json()["data"]["ip_address"] == event["data"]["ip_address"]
        changed = {**event, "data": {**event["data"], "ip_address": "192.0.2.99"}}
        error_of(await api.post(path, json=changed), 409, "event_id_conflict")
    again = await api.post(
        "/batch/events",
        content=world.batch_body,
        headers={"Content-Type": "application/json", "Idempotency-Key": "batch-1"},
    )
    assert again.status_code == 202, again.text
    assert again.json()["jobId"] == world.batch_job
    other = await api.post(
        "/batch/events",
        content=world.batch_body.replace(b"10.1.0.", b"10.2.0."),
        headers={"Content-Type": "application/json", "Idempotency-Key": "batch-1"},
    )
    error_of(other, 409, "idempotency_conflict")


async def test_rotation_moves_everything_to_the_new_key_and_the_old_key_can_go(fresh_url: str) -> None:
    async with opened(fresh_url, KEY_A) as services:
        world = await populate(services)
        assert await stored_key_ids(services) == {
            "entityKeys": {"A"},
            "workspaceSecrets": {"A"},
            "jobPayloads": {"A"},
        }

    async with opened(fresh_url, KEY_A, KEY_B) as services:
        keys = MasterKeys(services.core.store, services.core.keys)
        before = await keys.usage()
        assert before.still_in_use() == {"A": 5 + 1 + 1}
        assert before.unused == []  # A still protects data; B, the current key, never counts as unused
        report = await keys.rotate(batch_size=2)  # several pages of each kind
        wire = report.to_wire()
        assert wire["rewrapped"] == {"entityKeys": 5, "workspaceSecrets": 1, "jobPayloads": 1}
        assert wire["changedConcurrently"] == {"entityKeys": 0, "workspaceSecrets": 0, "jobPayloads": 0}
        assert wire["unreadable"] == {"entityKeys": 0, "workspaceSecrets": 0, "jobPayloads": 0}
        assert wire["unusedKeys"] == ["A"]
        assert wire["stillInUse"] == {}
        assert await stored_key_ids(services) == {
            "entityKeys": {"B"},
            "workspaceSecrets": {"B"},
            "jobPayloads": {"B"},
        }
        async with client(services, world.live_key) as api:
            await assert_all_readable(api, world)
            await assert_replays_detected(api, world)
        # A second run finds nothing left to do.
        again = (await keys.rotate()).to_wire()
        assert again["rewrapped"] == {"entityKeys": 0, "workspaceSecrets": 0, "jobPayloads": 0}
        assert again["scanned"]["entityKeys"] == 5

    async with opened(fresh_url, KEY_B) as services:
        await MasterKeys(services.core.store, services.core.keys).check()  # starts without A
        async with client(services, world.live_key) as api:
            await assert_all_readable(api, world)
            await assert_replays_detected(api, world)
            # The batch sealed under A while queued is applied with A gone.
            await drain(services)
            job = await api.get(f"/batch/jobs/{world.queued_job}")
            assert job.json()["status"] == "completed"
            assert job.json()["succeeded"] == 1
            queued = await api.get(f"/entities/{world.queued_player}")
            assert queued.status_code == 200, queued.text
            assert queued.json()["attributes"]["email"] == f"{world.queued_player}-0@example.com"
            # Batch replays of events stored before the rotation: duplicate / conflict per item.
            items = [
                world.events["bevt-0"],
                {**world.events["evt-1"], "data": {"action": "login", "ip_address": "192.0.2.1"}},
            ]
            submitted = await api.post("/batch/events", json={"events": items})
            assert submitted.status_code == 202, submitted.text
            await drain(services)
            outcomes = await api.get(f"/batch/jobs/{submitted.json()['jobId']}/items")
            statuses = [(o["status"], o.get("error", {}).get("code")) for o in outcomes.json()["data"]]
            assert statuses == [("duplicate", None), ("failed", "event_id_conflict")]


async def test_only_the_old_key_after_rotation_is_a_clear_start_up_error(fresh_url: str) -> None:
    async with opened(fresh_url, KEY_A) as services:
        world = await populate(services)
    async with opened(fresh_url, KEY_A, KEY_B) as services:
        await MasterKeys(services.core.store, services.core.keys).rotate()

    async with opened(fresh_url, KEY_A) as services:
        keys = MasterKeys(services.core.store, services.core.keys)
        with pytest.raises(MissingMasterKey, match=r"master key B\b.*not configured"):
            await keys.check()
        assert (await keys.usage()).missing == ["B"]
        # Even past the start-up check a read is a clear error, never garbage.
        async with client(services, world.live_key) as api:
            error_of(await api.get("/entities/p-0"), 409, "pii_unreadable")


async def test_rotation_under_concurrent_writes_loses_nothing(fresh_url: str) -> None:
    initial = [f"p-{i:02d}" for i in range(30)]
    async with opened(fresh_url, KEY_A) as services:
        created = await services.auth.create_operator("concurrent")
        ws = await services.auth.authenticate(f"Bearer {created.live_key}")
        await services.settings.update(ws, {"templateId": "tpl_igaming"})
        for external_id in initial:
            await services.entities.upsert(ws, player(external_id, 0))
            await services.events.record(ws, session(external_id, f"{external_id}-e0", "10.0.0.0"))

    expected_email = {e: f"{e}-0@example.com" for e in initial}
    expected_events = {e: {f"{e}-e0": "10.0.0.0"} for e in initial}
    writes = 0
    stop = asyncio.Event()
    writing = asyncio.Event()

    async def updater(services: Services, ws: Workspace) -> None:
        """Updates entities created under A (new PII sealed with their data keys) and adds events."""
        nonlocal writes
        n = 0
        while not stop.is_set():
            n += 1
            external_id = initial[n % len(initial)]
            await services.entities.upsert(ws, player(external_id, n))
            expected_email[external_id] = f"{external_id}-{n}@example.com"
            event_id, ip = f"{external_id}-u{n}", f"10.0.{n % 250}.{n % 7}"
            await services.events.record(ws, session(external_id, event_id, ip))
            expected_events[external_id][event_id] = ip
            writes += 1
            writing.set()

    async def creator(services: Services, ws: Workspace) -> None:
        """Creates new entities (under B) with PII, some sorting before and some after the cursor."""
        nonlocal writes
        n = 0
        while not stop.is_set():
            n += 1
            external_id = f"{'a' if n % 2 else 'z'}-new-{n}"
            await services.entities.upsert(ws, player(external_id, n))
            expected_email[external_id] = f"{external_id}-{n}@example.com"
            await services.events.record(ws, session(external_id, f"{external_id}-e", "10.9.9.9"))
            expected_events[external_id] = {f"{external_id}-e": "10.9.9.9"}
            writes += 1

    async with opened(fresh_url, KEY_A, KEY_B) as services:
        ws = await services.auth.authenticate(f"Bearer {created.live_key}")
        tasks = [asyncio.ensure_future(updater(services, ws)), asyncio.ensure_future(creator(services, ws))]
        try:
            await writing.wait()
            writes_at_pages: list[int] = []

            def progress(item: str, scanned: int, rewrapped: int, finished: bool) -> None:
                if item == "entityKeys":
                    writes_at_pages.append(writes)

            keys = MasterKeys(services.core.store, services.core.keys)
            report = await keys.rotate(batch_size=3, progress=progress)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        # The writers really wrote while the rotation was paging through the keys.
        assert writes_at_pages[-1] > writes_at_pages[0]
        wire = report.to_wire()
        assert wire["rewrapped"]["entityKeys"] == len(initial)
        assert wire["unreadable"]["entityKeys"] == 0
        assert wire["stillInUse"] == {}
        assert wire["unusedKeys"] == ["A"]

    async with opened(fresh_url, KEY_B) as services:
        ws = await services.auth.authenticate(f"Bearer {created.live_key}")
        assert (await MasterKeys(services.core.store, services.core.keys).check()).still_in_use() == {}
        for external_id, email in expected_email.items():
            entity = await services.entities.get(ws, external_id)
            assert entity["attributes"]["email"] == email
            listed = await services.events.list(
                ws,
                external_id,
                type_=None,
                from_ts=None,
                to_ts=None,
                descending=False,
                limit=1000,
                cursor=None,
            )
            got = {e["eventId"]: e["data"]["ip_address"] for e in listed["data"]}
            assert got == expected_events[external_id]
        async with services.core.store.begin() as uow:
            stored = (
                await uow.conn.execute(
                    sa.select(sa.func.count()).select_from(events).where(events.c.workspace_id == ws.id)
                )
            ).scalar_one()
        assert stored == sum(len(e) for e in expected_events.values())


async def test_two_rotations_at_once_rewrap_each_key_exactly_once(fresh_url: str) -> None:
    async with opened(fresh_url, KEY_A) as services:
        world = await populate(services)

    async with opened(fresh_url, KEY_A, KEY_B) as services:
        first = MasterKeys(services.core.store, services.core.keys)
        second = MasterKeys(services.core.store, services.core.keys)
        page_1, _ = await first.read_page("entityKeys", None, 100)
        page_2, _ = await second.read_page("entityKeys", None, 100)
        tally_1, tally_2 = Tally(), Tally()
        swaps_2 = second.rewrap_page("entityKeys", page_2, tally_2)
        await second.write_page("entityKeys", swaps_2, tally_2)
        # The first rotation read the old values before the second wrote: its writes must not land.
        swaps_1 = first.rewrap_page("entityKeys", page_1, tally_1)
        await first.write_page("entityKeys", swaps_1, tally_1)
        assert (tally_2.rewrapped, tally_2.changed) == (5, 0)
        assert (tally_1.rewrapped, tally_1.changed) == (0, 5)
        async with services.core.store.begin() as uow:
            stored = (await uow.conn.execute(sa.select(entity_keys.c.data_key))).scalars().all()
        assert sorted(stored) == sorted(s.new for s in swaps_2)
        await first.rotate()  # the secret and the queued payload

    async with opened(fresh_url, KEY_B) as services, client(services, world.live_key) as api:
        await assert_all_readable(api, world)


async def test_a_job_finishing_during_rotation_keeps_its_payload_dropped(fresh_url: str) -> None:
    async with opened(fresh_url, KEY_A) as services:
        world = await populate(services)

    async with opened(fresh_url, KEY_A, KEY_B) as services:
        keys = MasterKeys(services.core.store, services.core.keys)
        page, _ = await keys.read_page("jobPayloads", None, 100)
        assert [row[1] for row in page] == [world.queued_job]
        await drain(services)  # the job completes and drops its sealed payload (PII) ...
        tally = Tally()
        await keys.write_page("jobPayloads", keys.rewrap_page("jobPayloads", page, tally), tally)
        assert (tally.rewrapped, tally.changed) == (0, 1)  # ... and the rotation does not bring it back
        async with services.core.store.begin() as uow:
            payload = (
                await uow.conn.execute(sa.select(jobs.c.payload).where(jobs.c.id == world.queued_job))
            ).scalar_one()
        assert payload is None


async def test_two_processes_creating_the_fingerprint_secret_at_once_agree(fresh_url: str) -> None:
    async with opened(fresh_url, KEY_A) as one, opened(fresh_url, KEY_A) as two:
        created = await one.auth.create_operator("race")
        ws = await one.auth.authenticate(f"Bearer {created.live_key}")
        first, second = await asyncio.gather(one.core.fingerprinter(ws), two.core.fingerprinter(ws))
        source = {"eventId": "e-1", "data": {"ip_address": "10.0.0.1"}}
        assert first.of(source) == second.of(source)
        assert second.same(source, first.of(source))
        assert not second.same({**source, "eventId": "e-2"}, first.of(source))

        # The loser of the race (it read no secret, then inserts its own) neither fails
        # nor replaces the winner's secret: both processes go on with the stored one.
        async with one.core.store.begin() as uow:
            query = sa.select(workspace_secrets.c.wrapped).where(workspace_secrets.c.workspace_id == ws.id)
            stored = (await uow.conn.execute(query)).scalars().all()
        async with two.core.store.begin() as uow:
            late = wrap_secret(two.core.keys, ws.id, PURPOSE, 1, b"L" * 32)
            await SecretRepository(uow.conn).add_if_missing(ws.id, PURPOSE, 1, late, now=1)
        async with one.core.store.begin() as uow:
            assert (await uow.conn.execute(query)).scalars().all() == stored
        async with opened(fresh_url, KEY_A) as three:
            assert (await three.core.fingerprinter(ws)).of(source) == first.of(source)
