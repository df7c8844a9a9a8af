"""The retention sweep on both databases: expiry, erasure, suppression, chunks, concurrency.

Time is injected: each test replaces the core's clock with a ``Clock`` it moves
by hand, so "31 days later" is one assignment, never a sleep. The sweep is
global (the databases are shared by the whole run), so every assertion looks
at the test's own workspaces: that one workspace's retention leaves another's
data alone is itself one of the properties checked here.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from onehazel.bootstrap import open_services
from onehazel.config import Config
from onehazel.crypto.fields import DecryptionFailed, FieldCipher, unwrap_data_key
from onehazel.domain.values import format_timestamp, now_micros
from onehazel.domain.workspace import Workspace
from onehazel.jobs.worker import Worker
from onehazel.services.container import Services
from onehazel.services.retention import RetentionService, SweepReport, WorkspaceSweep
from onehazel.storage.retention import redact_outcomes
from tests.conftest import PG_SERVER_URL, REQUIRE_PG, Api, _pg_admin, _with_database, keyed_env

DAY = 86_400 * 1_000_000
SECOND = 1_000_000


class Clock:
    """A clock the test moves by hand (microseconds since the epoch)."""

    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, *, days: float = 0, seconds: float = 0) -> int:
        self.now += int(days * DAY + seconds * SECOND)
        return self.now


@pytest.fixture
def clock(services: Services) -> Clock:
    fake = Clock(now_micros())
    services.core.clock = fake
    return fake


def ago(clock: Clock, *, days: float = 0, seconds: float = 0) -> str:
    return format_timestamp(clock.now - int(days * DAY + seconds * SECOND))


def new_id(prefix: str = "p") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def workspace_of(services: Services, api: Api) -> Workspace:
    return await services.auth.authenticate(f"Bearer {api.key}")


async def sql(services: Services, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    async with services.core.store.begin() as uow:
        result = await uow.conn.execute(sa.text(statement), params)
        return [tuple(row) for row in result] if result.returns_rows else []


async def drain(services: Services) -> None:
    worker = Worker(services)
    while await worker.run_once():
        pass


async def put_settings(api: Api, **retention: Any) -> None:
    response = await api.put("/settings", json={"retention": retention})
    assert response.status_code == 200, response.text


async def player(api: Api, external_id: str, **attributes: Any) -> dict[str, Any]:
    body = {"externalId": external_id, "type": "player", "attributes": attributes}
    response = await api.post("/entities", json=body)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def event(api: Api, external_id: str, *, timestamp: str, **extra: Any) -> dict[str, Any]:
    body = {
        "type": "transaction",
        "data": {"type": "deposit", "amount": "10.00", "currency": "EUR"},
        "timestamp": timestamp,
        **extra,
    }
    response = await api.post(f"/entities/{external_id}/events", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def session_event(api: Api, external_id: str, ip: str, *, timestamp: str) -> str:
    body = {"type": "session", "data": {"ip_address": ip}, "timestamp": timestamp}
    response = await api.post(f"/entities/{external_id}/events", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["eventId"])


async def event_ids(api: Api, external_id: str) -> list[str]:
    response = await api.get(f"/entities/{external_id}/events", params={"order": "asc", "limit": 1000})
    assert response.status_code == 200, response.text
    return [e["eventId"] for e in response.json()["data"]]


async def delete(api: Api, external_id: str) -> dict[str, Any]:
    response = await api.delete(f"/entities/{external_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def sweeper(services: Services, **options: Any) -> RetentionService:
    return RetentionService(services.core, **options)


def of(report: SweepReport, ws: Workspace) -> WorkspaceSweep:
    """The report's line for one workspace (all zeros when the sweep did nothing there)."""
    return report.workspaces.get(ws.id, WorkspaceSweep())


async def assert_gone(api: Api, external_id: str) -> None:
    """Every read and write of the entity answers 410 entity_deleted."""
    attempts = [
        await api.get(f"/entities/{external_id}"),
        await api.get(f"/entities/{external_id}/events"),
        await api.get(f"/entities/{external_id}/state"),
        await api.get(f"/entities/{external_id}/state/balance"),
        await api.post("/entities", json={"externalId": external_id, "type": "player", "attributes": {}}),
        await api.post(
            f"/entities/{external_id}/events",
            json={"type": "session", "data": {"ip_address": "203.0.113.9"}},
        ),
        await api.put(f"/entities/{external_id}/state/balance", json={"value": "1.00"}),
    ]
    for response in attempts:
        assert response.status_code == 410, (response.request.url, response.text)
        assert response.json()["error"]["code"] == "entity_deleted"


# --- events past retention ------------------------------------------------------------------------


async def test_events_older_than_events_days_are_removed_and_newer_kept(
    api: Api, services: Services, clock: Clock
) -> None:
    ws = await workspace_of(services, api)
    await put_settings(api, eventsDays=30)
    await player(api, "p-1")
    old = [await event(api, "p-1", timestamp=ago(clock, days=d, seconds=1)) for d in (400, 45, 30)]
    # exactly 30 days old is not *older* than 30 days: kept
    young = [await event(api, "p-1", timestamp=ago(clock, days=d)) for d in (30, 29.99, 1, 0)]

    report = await sweeper(services).sweep()

    assert of(report, ws).events_expired == 3
    assert sorted(await event_ids(api, "p-1")) == sorted(e["eventId"] for e in young)
    assert old[0]["eventId"] not in await event_ids(api, "p-1")
    # the entity and its states are untouched by event retention
    assert (await api.get("/entities/p-1")).status_code == 200

    again = await sweeper(services).sweep()
    assert of(again, ws).events_expired == 0


async def test_events_expire_as_the_clock_moves_on(api: Api, services: Services, clock: Clock) -> None:
    ws = await workspace_of(services, api)
    await put_settings(api, eventsDays=7)
    await player(api, "p-1")
    first = await event(api, "p-1", timestamp=ago(clock, days=5))
    second = await event(api, "p-1", timestamp=ago(clock, days=1))

    assert of(await sweeper(services).sweep(), ws).events_expired == 0
    clock.advance(days=3)
    assert of(await sweeper(services).sweep(), ws).events_expired == 1
    assert await event_ids(api, "p-1") == [second["eventId"]]
    clock.advance(days=10)
    assert of(await sweeper(services).sweep(), ws).events_expired == 1
    assert await event_ids(api, "p-1") == []
    assert first["eventId"] != second["eventId"]


async def test_without_events_days_events_are_kept_forever(
    api: Api, services: Services, clock: Clock
) -> None:
    ws = await workspace_of(services, api)
    await player(api, "p-1")
    ancient = await event(api, "p-1", timestamp="1999-01-01T00:00:00Z")

    report = await sweeper(services).sweep(now=clock.advance(days=3650))

    assert of(report, ws).events_expired == 0
    assert await event_ids(api, "p-1") == [ancient["eventId"]]


async def test_an_expired_event_id_is_accepted_again_as_a_new_event(
    api: Api, services: Services, clock: Clock
) -> None:
    await put_settings(api, eventsDays=1)
    await player(api, "p-1")
    body = {"eventId": "dep-1", "timestamp": ago(clock, days=2)}
    await event(api, "p-1", **body)
    await sweeper(services).sweep()

    again = await api.post(
        "/entities/p-1/events",
        json={
            "type": "transaction",
            "data": {"type": "deposit", "amount": "10.00", "currency": "EUR"},
            **body,
        },
    )

    assert again.status_code == 201, again.text  # not a duplicate: the idempotency record expired too
    assert "duplicate" not in again.json()


# --- erasure after deletedEntitiesDays ------------------------------------------------------------


async def write_subject(api: Api, external_id: str, clock: Clock) -> dict[str, Any]:
    """A player with PII in attributes and events, plain events and two states."""
    await player(api, external_id, email=f"{external_id}@example.com", first_name="Alice", country="MT")
    ip_event = await session_event(api, external_id, "198.51.100.7", timestamp=ago(clock, days=1))
    deposit = await event(api, external_id, timestamp=ago(clock, days=1))
    for key, value in (("balance", "10.00"), ("kyc_status", "verified")):
        response = await api.put(f"/entities/{external_id}/state/{key}", json={"value": value})
        assert response.status_code == 200, response.text
    return {"ip_event": ip_event, "deposit": deposit["eventId"]}


async def stored_rows(services: Services, ws: Workspace, external_id: str) -> dict[str, Any]:
    params = {"ws": ws.id, "ext": external_id}
    where = "workspace_id = :ws AND external_id = :ext"
    entity = await sql(
        services,
        f"SELECT attributes, pii, deleted_at, suppressed_until FROM entities WHERE {where}",
        **params,
    )
    return {
        "entity": entity[0] if entity else None,
        "keys": (await sql(services, f"SELECT count(*) FROM entity_keys WHERE {where}", **params))[0][0],
        "events": (await sql(services, f"SELECT count(*) FROM events WHERE {where}", **params))[0][0],
        "states": (await sql(services, f"SELECT count(*) FROM states WHERE {where}", **params))[0][0],
    }


def as_json(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value


async def test_deleted_entity_is_erased_once_deleted_entities_days_have_passed(
    api: Api, services: Services, clock: Clock
) -> None:
    ws = await workspace_of(services, api)
    await put_settings(api, deletedEntitiesDays=2)
    await write_subject(api, "p-gone", clock)
    await write_subject(api, "p-stays", clock)
    deleted = await delete(api, "p-gone")
    assert deleted["purgeAfter"] == format_timestamp(clock.now + 2 * DAY)

    clock.advance(days=2, seconds=-1)
    early = await sweeper(services).sweep()
    assert of(early, ws).entities_purged == 0
    before = await stored_rows(services, ws, "p-gone")
    assert (before["keys"], before["events"], before["states"]) == (1, 2, 2)

    clock.advance(seconds=1)
    report = await sweeper(services).sweep()

    line = of(report, ws)
    assert (line.entities_purged, line.purged_events, line.purged_states) == (1, 2, 2)
    after = await stored_rows(services, ws, "p-gone")
    assert (after["keys"], after["events"], after["states"]) == (0, 0, 0)
    attributes, pii, deleted_at, suppressed_until = after["entity"]
    assert as_json(attributes) == {}
    assert as_json(pii) == {}
    assert deleted_at is not None
    assert suppressed_until == clock.now + 365 * DAY
    await assert_gone(api, "p-gone")
    # DELETE stays idempotent on the tombstone: the same answer as the first time
    assert await delete(api, "p-gone") == deleted
    # the other entity of the workspace is untouched
    kept = await stored_rows(services, ws, "p-stays")
    assert (kept["keys"], kept["events"], kept["states"]) == (1, 2, 2)
    assert (await api.get("/entities/p-stays")).json()["attributes"]["email"] == "p-stays@example.com"
    assert of(await sweeper(services).sweep(), ws).entities_purged == 0  # nothing twice


async def test_deleted_entities_days_zero_erases_at_the_next_sweep(
    api: Api, services: Services, clock: Clock
) -> None:
    ws = await workspace_of(services, api)
    await put_settings(api, deletedEntitiesDays=0)
    await write_subject(api, "p-1", clock)
    deleted = await delete(api, "p-1")
    assert deleted["purgeAfter"] == deleted["deletedAt"]

    report = await sweeper(services).sweep()

    assert of(report, ws).entities_purged == 1
    rows = await stored_rows(services, ws, "p-1")
    assert (rows["keys"], rows["events"], rows["states"]) == (0, 0, 0)
    await assert_gone(api, "p-1")


async def test_purge_is_recorded_in_the_audit_log_without_pii(
    api: Api, services: Services, clock: Clock
) -> None:
    await put_settings(api, deletedEntitiesDays=0, eventsDays=10)
    await write_subject(api, "p-audited", clock)
    await event(api, "p-audited", timestamp=ago(clock, days=11))
    await delete(api, "p-audited")
    await sweeper(services).sweep()

    response = await api.get("/audit", params={"limit": 100})

    assert response.status_code == 200, response.text
    records = response.json()["data"]
    purges = [r for r in records if r["action"] == "entity.purge"]
    assert [p["target"] for p in purges] == ["p-audited"]
    assert purges[0]["actor"] == "system"
    assert purges[0]["details"]["states"] == 2
    expiries = [r for r in records if r["action"] == "events.expire"]
    assert [e["details"]["events"] for e in expiries] == [1]
    for value in ("p-audited@example.com", "Alice", "198.51.100.7"):
        assert value not in response.text


async def test_writes_racing_the_deletion_are_removed_when_the_tombstone_goes(
    api: Api, services: Services, clock: Clock
) -> None:
    """An event row that lands for an already purged entity (a batch chunk that read the
    entity just before it was deleted) is cleaned up before the externalId is released."""
    ws = await workspace_of(services, api)
    await put_settings(api, deletedEntitiesDays=0)
    await write_subject(api, "p-1", clock)
    await delete(api, "p-1")
    await sweeper(services).sweep()
    await sql(
        services,
        "INSERT INTO events (workspace_id, event_id, external_id, type, data, fingerprint, ts, "
        "received_at, seq) VALUES (:ws, 'straggler', 'p-1', 'transaction', '{}', 'x', 1, 1, 1)",
        ws=ws.id,
    )

    report = await sweeper(services, suppression_days=1).sweep(now=clock.advance(days=400))

    assert (of(report, ws).tombstones_released, of(report, ws).purged_events) == (1, 1)
    assert (await stored_rows(services, ws, "p-1"))["events"] == 0


# --- suppression ------------------------------------------------------------------------------


async def test_a_purged_external_id_stays_refused_until_the_suppression_period_ends(
    api: Api, services: Services, clock: Clock
) -> None:
    ws = await workspace_of(services, api)
    await put_settings(api, deletedEntitiesDays=0)
    await write_subject(api, "p-1", clock)
    await delete(api, "p-1")
    retention = sweeper(services, suppression_days=10)
    await retention.sweep()
    purged_at = clock.now

    clock.advance(days=10, seconds=-1)
    assert of(await retention.sweep(), ws).tombstones_released == 0
    await assert_gone(api, "p-1")

    clock.advance(seconds=1)
    assert of(await retention.sweep(), ws).tombstones_released == 1
    assert clock.now == purged_at + 10 * DAY

    assert (await api.get("/entities/p-1")).json()["error"]["code"] == "entity_not_found"
    assert (await api.delete("/entities/p-1")).status_code == 404
    created = await api.post(
        "/entities", json={"externalId": "p-1", "type": "game", "attributes": {"provider": "acme"}}
    )
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1
    assert created.json()["attributes"] == {"provider": "acme"}
    assert await event_ids(api, "p-1") == []
    assert (await api.get("/entities/p-1/state")).json()["states"] == {}


async def test_suppression_zero_releases_the_external_id_at_the_sweep_after_the_purge(
    api: Api, services: Services, clock: Clock
) -> None:
    ws = await workspace_of(services, api)
    await put_settings(api, deletedEntitiesDays=0)
    await player(api, "p-1", email="a@example.com")
    await delete(api, "p-1")
    retention = sweeper(services, suppression_days=0)

    first = await retention.sweep()
    assert (of(first, ws).entities_purged, of(first, ws).tombstones_released) == (1, 0)
    await assert_gone(api, "p-1")
    second = await retention.sweep()
    assert of(second, ws).tombstones_released == 1
    assert (await player(api, "p-1", email="b@example.com"))["attributes"] == {"email": "b@example.com"}


# --- batch jobs: item outcomes and queued payloads ---------------------------------------------


async def items(api: Api, job_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/batch/jobs/{job_id}/items", params={"limit": 1000})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def submit(api: Api, kind: str, batch: list[dict[str, Any]]) -> str:
    response = await api.post(f"/batch/{kind}", json={kind: batch})
    assert response.status_code == 202, response.text
    return str(response.json()["jobId"])


async def test_purge_anonymises_the_entity_in_job_item_outcomes(
    api: Api, services: Services, clock: Clock
) -> None:
    ws = await workspace_of(services, api)
    await put_settings(api, deletedEntitiesDays=0)
    await player(api, "p-gone")
    await player(api, "p-kept")
    batch = [
        {"externalId": ext, "type": "session", "eventId": f"{ext}-{i}", "data": {"ip_address": "192.0.2.1"}}
        for i in range(3)
        for ext in ("p-gone", "p-kept")
    ] + [{"externalId": "p-gone", "type": "no_such_type", "data": {}}]
    job_id = await submit(api, "events", batch)
    await drain(services)
    job_before = (await api.get(f"/batch/jobs/{job_id}")).json()
    before = await items(api, job_id)
    await delete(api, "p-gone")

    report = await sweeper(services).sweep()

    assert of(report, ws).redacted_job_items == 4
    after = await items(api, job_id)
    assert [i["index"] for i in after] == [i["index"] for i in before]
    assert [i["status"] for i in after] == [i["status"] for i in before]
    for old, new in zip(before, after, strict=True):
        if old["externalId"] == "p-gone":
            assert new["externalId"] is None
            assert "eventId" not in new
            assert new.get("error") == old.get("error")
        else:
            assert new == old
    assert "p-gone" not in str(after)
    job_after = (await api.get(f"/batch/jobs/{job_id}")).json()
    assert {k: job_after[k] for k in ("succeeded", "failed", "errors")} == {
        k: job_before[k] for k in ("succeeded", "failed", "errors")
    }


async def test_a_batch_still_queued_at_the_purge_cannot_bring_the_entity_back(
    api: Api, services: Services, clock: Clock
) -> None:
    await put_settings(api, deletedEntitiesDays=0)
    await player(api, "p-1", email="old@example.com")
    await delete(api, "p-1")
    job_id = await submit(
        api, "entities", [{"externalId": "p-1", "type": "player", "attributes": {"email": "new@example.com"}}]
    )
    await sweeper(services).sweep()  # the job is still queued: its payload is sealed, not erased

    await drain(services)

    (outcome,) = await items(api, job_id)
    assert outcome["status"] == "failed"
    assert outcome["error"]["code"] == "entity_deleted"
    await assert_gone(api, "p-1")
    payload = await sql(services, "SELECT payload FROM jobs WHERE id = :id", id=job_id)
    assert payload == [(None,)]  # a finished job keeps no copy of the batch


def test_redacting_outcomes_keeps_everything_but_the_identifiers() -> None:
    outcomes = [
        {"index": 0, "status": "succeeded", "externalId": "a", "eventId": "e1", "warnings": [{"code": "w"}]},
        {"index": 1, "status": "failed", "externalId": "b", "error": {"code": "x", "message": "m"}},
        {"index": 2, "status": "duplicate", "externalId": "a", "eventId": "e2"},
    ]

    redacted, count = redact_outcomes(outcomes, {"a"})

    assert count == 2
    assert redacted == [
        {"index": 0, "status": "succeeded", "externalId": None, "warnings": [{"code": "w"}]},
        outcomes[1],
        {"index": 2, "status": "duplicate", "externalId": None},
    ]


# --- bounded chunks --------------------------------------------------------------------------------


async def test_a_sweep_works_in_chunks_of_bounded_size(api: Api, services: Services, clock: Clock) -> None:
    ws = await workspace_of(services, api)
    await put_settings(api, eventsDays=5, deletedEntitiesDays=0)
    await player(api, "p-old")
    await player(api, "p-gone")
    old = [
        {"externalId": "p-old", "type": "session", "data": {}, "timestamp": ago(clock, days=9, seconds=i)}
        for i in range(45)
    ]
    gone = [{"externalId": "p-gone", "type": "session", "data": {}} for _ in range(31)]
    await submit(api, "events", old + gone)
    await drain(services)
    await delete(api, "p-gone")

    report = await sweeper(services, chunk=7).sweep()

    line = of(report, ws)
    assert (line.events_expired, line.purged_events, line.entities_purged) == (45, 31, 1)
    # 45 rows in chunks of 7 take 7 deletes, 31 take 5: at least 12 transactions
    assert report.transactions >= 12
    assert report.longest_transaction > 0
    assert await event_ids(api, "p-old") == []
    assert (await stored_rows(services, ws, "p-gone"))["events"] == 0


# --- workspace isolation ---------------------------------------------------------------------------


async def test_one_workspaces_retention_leaves_another_workspace_alone(
    api: Api, services: Services, clock: Clock, operator: Any
) -> None:
    live = await workspace_of(services, api)
    test_api = api.as_key(operator.test_key)
    test = await workspace_of(services, test_api)
    assert (await test_api.put("/settings", json={"templateId": "tpl_igaming"})).status_code == 200
    await put_settings(api, eventsDays=10, deletedEntitiesDays=0)
    # the same externalId in both workspaces, each with an old event
    for client in (api, test_api):
        await player(client, "p-1", email="twin@example.com")
        await event(client, "p-1", timestamp=ago(clock, days=20))
    await delete(api, "p-1")

    report = await sweeper(services).sweep()

    assert (of(report, live).events_expired, of(report, live).entities_purged) == (1, 1)
    assert of(report, test).counts() == WorkspaceSweep().counts()
    assert (await test_api.get("/entities/p-1")).json()["attributes"]["email"] == "twin@example.com"
    assert len(await event_ids(test_api, "p-1")) == 1
    assert (await stored_rows(services, test, "p-1"))["keys"] == 1
    await assert_gone(api, "p-1")


async def test_the_report_names_each_workspace(
    api: Api, services: Services, clock: Clock, operator: Any
) -> None:
    ws = await workspace_of(services, api)
    await put_settings(api, eventsDays=1)
    await player(api, "p-1")
    await event(api, "p-1", timestamp=ago(clock, days=2))

    wire = (await sweeper(services).sweep()).to_wire()

    (line,) = [w for w in wire["workspaces"] if w["workspaceId"] == ws.id]
    assert line["operatorId"] == operator.operator_id
    assert line["mode"] == "live"
    assert line["eventsExpired"] == 1
    assert wire["sweptAt"] == format_timestamp(clock.now)
    assert wire["totals"]["eventsExpired"] >= 1


# --- erasure reaches every copy: dump, purge, decrypt ----------------------------------------------


async def decrypt_with_server_keys(
    services: Services, ws: Workspace, external_id: str, path: str, token: str
) -> Any:
    """What the server can do with a ciphertext found in a copy: its master keys, and
    whatever key material its database still holds, through the server's cipher."""
    async with services.core.store.begin() as uow:
        record = await uow.entities.get(ws.id, external_id)
    if record is None or record.data_key is None:
        raise LookupError("the server holds no key for this entity")
    return services.core.cipher(ws, external_id, record.data_key).decrypt(path, token)


async def no_stored_key_opens(
    services: Services, ws: Workspace, external_id: str, path: str, token: str
) -> int:
    """Try every data key the server still holds for the workspace; returns how many were tried."""
    rows = await sql(
        services, "SELECT external_id, data_key FROM entity_keys WHERE workspace_id = :ws", ws=ws.id
    )
    for owner, wrapped in rows:
        dek = unwrap_data_key(services.core.keys, ws.id, owner, wrapped)
        with pytest.raises(DecryptionFailed):
            FieldCipher(dek, workspace_id=ws.id, external_id=external_id).decrypt(path, token)
    return len(rows)


def copied_tokens(rows: list[tuple[Any, ...]]) -> dict[str, str]:
    """{path: token} from the copy's entity row pii and event rows (event_id, pii)."""
    (entity_pii,) = rows[0]
    tokens = {f"attributes.{name}": token for name, token in as_json(entity_pii).items()}
    for event_id, pii in rows[1:]:
        for name, token in as_json(pii).items():
            tokens[f"events/{event_id}/data.{name}"] = token
    return tokens


def _sqlite_data_copy(url: str, target: Path) -> None:
    """A consistent copy of the SQLite database, without the key table (a data backup)."""
    source = sqlite3.connect(url.split(":///", 1)[1])
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
        copy.execute("DROP TABLE entity_keys")
        copy.commit()
    finally:
        source.close()
        copy.close()


def _sqlite_tokens(path: Path, ws_id: str, external_id: str) -> dict[str, str]:
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'entity_keys'").fetchall() == []
        rows = db.execute(
            "SELECT pii FROM entities WHERE workspace_id = ? AND external_id = ?", (ws_id, external_id)
        ).fetchall()
        rows += db.execute(
            "SELECT event_id, pii FROM events WHERE workspace_id = ? AND external_id = ? AND pii IS NOT NULL",
            (ws_id, external_id),
        ).fetchall()
    finally:
        db.close()
    return copied_tokens(rows)


def _run(args: list[str]) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@contextlib.asynccontextmanager
async def scratch_postgres() -> AsyncIterator[str]:
    """An empty PostgreSQL database to restore a dump into, dropped afterwards."""
    name = f"onehazel_restore_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(PG_SERVER_URL, name)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _pg_dump_and_restore(database_url: str, dump: Path, restore_url: str) -> None:
    """``pg_dump --exclude-table=entity_keys`` (plain SQL), restored into an empty database."""
    for tool in ("pg_dump", "psql"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode != 0:
            if REQUIRE_PG:
                pytest.fail(f"{tool} is not installed; CI requires it", pytrace=False)
            pytest.skip(f"{tool} is not installed")
    args = [
        "pg_dump",
        "--format=plain",
        "--no-owner",
        "--exclude-table=entity_keys",
        f"--dbname={database_url}",
    ]
    dump.write_text(await asyncio.to_thread(_run, args))
    await asyncio.to_thread(
        _run, ["psql", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={restore_url}", "-f", str(dump)]
    )


async def _pg_tokens(restore_url: str, ws_id: str, external_id: str) -> dict[str, str]:
    from onehazel.storage.engine import create_engine

    engine = create_engine(restore_url, null_pool=True)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            assert "events" in tables
            assert "entity_keys" not in tables
            params = {"ws": ws_id, "ext": external_id}
            rows = [
                tuple(r)
                for r in await conn.execute(
                    sa.text("SELECT pii FROM entities WHERE workspace_id = :ws AND external_id = :ext"),
                    params,
                )
            ]
            rows += [
                tuple(r)
                for r in await conn.execute(
                    sa.text(
                        "SELECT event_id, pii FROM events "
                        "WHERE workspace_id = :ws AND external_id = :ext AND pii IS NOT NULL"
                    ),
                    params,
                )
            ]
    finally:
        await engine.dispose()
    return copied_tokens(rows)


async def test_a_copy_taken_before_the_purge_cannot_be_decrypted_after_it(
    api: Api,
    services: Services,
    clock: Clock,
    backend: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    ws = await workspace_of(services, api)
    await put_settings(api, deletedEntitiesDays=0)
    subject = f"subject-{uuid.uuid4().hex[:8]}"
    email, ip = f"{subject}@example.com", "198.51.100.77"
    await player(api, subject, email=email, first_name="Erin")
    ip_event = await session_event(api, subject, ip, timestamp=ago(clock, days=1))

    # the backup: data tables only, taken while the entity is alive
    if backend == "postgres":
        async with scratch_postgres() as restore_url:
            dump = tmp_path / "backup.sql"
            await _pg_dump_and_restore(database_url, dump, restore_url)
            tokens = await _pg_tokens(restore_url, ws.id, subject)
        text = dump.read_text()
        assert email not in text  # ciphertext only, as always
        assert ip not in text
    else:
        copy = tmp_path / "backup.db"
        await asyncio.to_thread(_sqlite_data_copy, database_url, copy)
        tokens = await asyncio.to_thread(_sqlite_tokens, copy, ws.id, subject)
    assert set(tokens) == {"attributes.email", "attributes.first_name", f"events/{ip_event}/data.ip_address"}
    if backend == "postgres":
        assert all(token in text for token in tokens.values())
    expected = {
        "attributes.email": email,
        "attributes.first_name": "Erin",
        f"events/{ip_event}/data.ip_address": ip,
    }

    # before the purge the server's keys open the copy's ciphertexts
    for path, token in tokens.items():
        assert await decrypt_with_server_keys(services, ws, subject, path, token) == expected[path]

    await delete(api, subject)
    report = await sweeper(services).sweep()
    assert of(report, ws).entities_purged == 1

    # after it, nothing the server holds opens them: its own entity key is gone, and
    # no other key it still has (other entities' keys, under its master keys) authenticates them
    await player(api, f"neighbour-{uuid.uuid4().hex[:6]}", email="n@example.com")
    for path, token in tokens.items():
        with pytest.raises(LookupError):
            await decrypt_with_server_keys(services, ws, subject, path, token)
        assert await no_stored_key_opens(services, ws, subject, path, token) >= 1


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL: VACUUM and WAL recycling (README)
async def test_after_a_purge_the_sqlite_files_hold_neither_the_key_nor_the_pii(
    api: Api, services: Services, clock: Clock, database_url: str
) -> None:
    ws = await workspace_of(services, api)
    await put_settings(api, deletedEntitiesDays=0)
    subject = new_id()
    await write_subject(api, subject, clock)
    of_subject = {"ws": ws.id, "ext": subject}
    where = "workspace_id = :ws AND external_id = :ext"
    [(data_key,)] = await sql(services, f"SELECT data_key FROM entity_keys WHERE {where}", **of_subject)
    secrets = [data_key.encode()]
    for table in ("entities", "events"):
        rows = await sql(services, f"SELECT pii FROM {table} WHERE {where}", **of_subject)
        secrets += [token.encode() for (pii,) in rows for token in (as_json(pii) or {}).values()]
    assert len(secrets) == 4  # the key, email and first_name, the session's ip
    path = Path(database_url.split(":///", 1)[1])
    log = Path(f"{path}-wal")

    def files() -> bytes:
        return path.read_bytes() + (log.read_bytes() if log.exists() else b"")

    assert all(secret in files() for secret in secrets)  # where a copy of the files finds them today
    await delete(api, subject)

    report = await sweeper(services).sweep()

    assert of(report, ws).entities_purged == 1
    left = files()
    assert [secret for secret in secrets if secret in left] == []
    assert log.stat().st_size == 0


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_reader_in_another_process_delays_the_log_truncation_briefly_not_for_30_s(
    api: Api, services: Services, database_url: str
) -> None:
    await put_settings(api, deletedEntitiesDays=0)  # something written: the log holds pages
    reader = sqlite3.connect(database_url.split(":///", 1)[1], isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM jobs").fetchall()  # a read transaction stays open
        started = asyncio.get_running_loop().time()
        assert await services.core.store.forget_overwritten() is False
        assert asyncio.get_running_loop().time() - started < 5  # writers were held off that long
        assert (await api.put("/settings", json={"retention": {"eventsDays": 9}})).status_code == 200
    finally:
        reader.close()
    assert await services.core.store.forget_overwritten() is True


async def test_an_entity_restored_without_its_key_is_unreadable_not_an_error(
    api: Api, services: Services, clock: Clock
) -> None:
    """An old data backup restored beside the current keys brings back rows whose key was erased:
    their PII cannot be read or written (409), and deleting them again erases the rest."""
    ws = await workspace_of(services, api)
    await put_settings(api, deletedEntitiesDays=0)
    await write_subject(api, "p-restored", clock)
    await sql(
        services, "DELETE FROM entity_keys WHERE workspace_id = :ws AND external_id = 'p-restored'", ws=ws.id
    )

    for response in (
        await api.get("/entities/p-restored"),
        await api.get("/entities/p-restored/events"),
        await api.post(
            "/entities",
            json={"externalId": "p-restored", "type": "player", "attributes": {"email": "x@y.io"}},
        ),
        await api.post(
            "/entities/p-restored/events", json={"type": "session", "data": {"ip_address": "192.0.2.1"}}
        ),
    ):
        assert response.status_code == 409, (response.request.url, response.text)
        assert response.json()["error"]["code"] == "pii_unreadable"
        assert "p-restored@example.com" not in response.text
    assert (await api.get("/entities", params={"limit": 1000})).status_code == 200

    await delete(api, "p-restored")
    report = await sweeper(services).sweep()
    assert (of(report, ws).entities_purged, of(report, ws).purged_events) == (1, 2)
    await assert_gone(api, "p-restored")


# --- several sweeps at once -------------------------------------------------------


async def test_concurrent_sweeps_remove_everything_exactly_once(
    api: Api, services: Services, clock: Clock, database_url: str
) -> None:
    """Three sweeps over separate engines (as three processes would be). On PostgreSQL they
    share chunks through SKIP LOCKED; on SQLite BEGIN IMMEDIATE takes their transactions in turn."""
    ws = await workspace_of(services, api)
    await put_settings(api, eventsDays=3, deletedEntitiesDays=0)
    players = [f"p-{i}" for i in range(12)]
    for external_id in [*players, "p-old"]:
        await player(api, external_id, email=f"{external_id}@example.com")
    old = [
        {"externalId": "p-old", "type": "session", "data": {}, "timestamp": ago(clock, days=4, seconds=i)}
        for i in range(2400)
    ]
    mine = [{"externalId": p, "type": "session", "data": {"ip_address": "192.0.2.9"}} for p in players] * 40
    await submit(api, "events", old)
    await submit(api, "events", mine)
    await drain(services)
    for external_id in players:
        await delete(api, external_id)

    others = [await open_services(Config.load(database_url, env=keyed_env())) for _ in range(2)]
    try:
        for other in others:
            other.core.clock = clock
        reports = await asyncio.gather(
            *(RetentionService(s.core, chunk=50).sweep() for s in [services, *others])
        )
    finally:
        for other in others:
            await other.close()

    lines = [of(r, ws) for r in reports]
    assert sum(line.events_expired for line in lines) == 2400
    assert sum(line.entities_purged for line in lines) == 12
    assert sum(line.purged_events for line in lines) == 480
    assert sum(line.redacted_job_items for line in lines) == 480
    for external_id in players:
        rows = await stored_rows(services, ws, external_id)
        assert (rows["keys"], rows["events"]) == (0, 0)
    assert await event_ids(api, "p-old") == []
    audit = (await api.get("/audit", params={"limit": 100})).json()["data"]
    assert sorted(r["target"] for r in audit if r["action"] == "entity.purge") == sorted(players)


# --- migration 0003 on a database that already holds entities --------------------------------------


def _alembic(sync_conn: Any, direction: str, revision: str) -> None:
    from alembic import command

    from onehazel.storage.migrate import alembic_config

    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    getattr(command, direction)(cfg, revision)


async def test_migration_0003_moves_existing_keys_both_ways(backend: str, tmp_path: Path) -> None:
    from onehazel.storage.engine import create_engine

    async with contextlib.AsyncExitStack() as stack:
        if backend == "postgres":
            url = await stack.enter_async_context(scratch_postgres())
        else:
            url = f"sqlite:///{tmp_path / 'migrate.db'}"
        services = await open_services(Config.load(url, env=keyed_env()), run_migrations=True)
        stack.push_async_callback(services.close)
        created = await services.auth.create_operator("migrating")
        ws = await services.auth.authenticate(f"Bearer {created.live_key}")
        await services.settings.update(ws, {"templateId": "tpl_igaming"})
        body = {"externalId": "p-1", "type": "player", "attributes": {"email": "kept@example.com"}}
        await services.entities.upsert(ws, body)
        wrapped = (await sql(services, "SELECT data_key FROM entity_keys"))[0][0]
        engine = create_engine(url, null_pool=True)
        stack.push_async_callback(engine.dispose)

        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "downgrade", "0002")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            back = (await conn.execute(sa.text("SELECT data_key, attributes FROM entities"))).all()
        assert "entity_keys" not in tables
        assert [row[0] for row in back] == [wrapped]

        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "upgrade", "head")
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: [col["name"] for col in sa.inspect(c).get_columns("entities")]
            )
        assert "data_key" not in columns
        assert "suppressed_until" in columns
        assert await sql(services, "SELECT external_id, data_key FROM entity_keys") == [("p-1", wrapped)]
        assert (await services.entities.get(ws, "p-1"))["attributes"] == {"email": "kept@example.com"}
