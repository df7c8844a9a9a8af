"""Batch operations through the ASGI app, on SQLite and PostgreSQL (CONTRACT.md, "Batch operations").

The test app has no background worker: a test applies accepted jobs itself
with ``drain()`` (``Worker.run_once`` until nothing is runnable). Every test
drains at teardown too, so no queued job of this file is left for another
test's worker to pick up first.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from onehazel.jobs.apply import CHUNK_SIZE
from onehazel.jobs.worker import Worker
from onehazel.services.auth import CreatedOperator
from onehazel.services.batch import MAX_BATCH_VALUES
from onehazel.services.container import Services
from onehazel.storage.tables import entities, events, job_chunks, jobs, states
from tests.conftest import Api
from tests.helpers import error_of

T0 = "2026-11-27T10:00:00Z"
T1 = "2026-11-27T11:00:00Z"
T2 = "2026-11-27T12:00:00Z"
DEPOSIT = {"type": "deposit", "amount": "10.50", "currency": "EUR"}
LIMITS = {"entities": 1000, "events": 5000, "states": 1000}
JOB_FIELDS = {
    "jobId",
    "kind",
    "status",
    "total",
    "processed",
    "succeeded",
    "failed",
    "duplicates",
    "errors",
    "warnings",
    "createdAt",
    "startedAt",
    "completedAt",
}
MIB = 1024 * 1024


# --- helpers ------------------------------------------------------------------------------------


async def drain(services: Services) -> None:
    worker = Worker(services)
    while await worker.run_once():
        pass


@pytest.fixture(autouse=True)
async def _drain_after(services: Services) -> AsyncIterator[None]:
    yield
    await drain(services)


async def submit(api: Api, kind: str, items: list[Any], **kwargs: Any) -> str:
    response = await api.post(f"/batch/{kind}", json={kind: items}, **kwargs)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert body["total"] == len(items)
    return str(body["jobId"])


async def job_of(api: Api, job_id: str) -> dict[str, Any]:
    response = await api.get(f"/batch/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body = dict(response.json())
    assert set(body) == JOB_FIELDS
    return body


async def run(api: Api, services: Services, kind: str, items: list[Any]) -> tuple[dict[str, Any], list[Any]]:
    """Submit, apply, and return (the completed job, every item outcome in order)."""
    job_id = await submit(api, kind, items)
    await drain(services)
    job = await job_of(api, job_id)
    assert job["status"] == "completed", job
    outcomes = await all_items(api, job_id)
    assert [o["index"] for o in outcomes] == list(range(len(items)))
    return job, outcomes


async def all_items(
    api: Api, job_id: str, *, status: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": limit}
    if status is not None:
        params["status"] = status
    collected: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        page_params = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.get(f"/batch/jobs/{job_id}/items", params=page_params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "nextCursor"}
        assert len(body["data"]) <= limit
        collected += body["data"]
        cursor = body["nextCursor"]
        if cursor is None:
            return collected
        assert len(body["data"]) == limit
    raise AssertionError("item pages never ended")


async def workspace_id(services: Services, api: Api) -> str:
    return (await services.auth.authenticate(f"Bearer {api.key}")).id


async def count(services: Services, table: sa.Table, ws_id: str) -> int:
    async with services.core.store.begin() as uow:
        query = sa.select(sa.func.count()).select_from(table).where(table.c.workspace_id == ws_id)
        return int((await uow.conn.execute(query)).scalar_one())


async def entity(api: Api, external_id: str, type_: str = "player", **attributes: Any) -> None:
    body = {"externalId": external_id, "type": type_, "attributes": attributes}
    response = await api.post("/entities", json=body)
    assert response.status_code in (200, 201), response.text


async def deleted_entity(api: Api, external_id: str) -> None:
    await entity(api, external_id)
    assert (await api.delete(f"/entities/{external_id}")).status_code == 200


async def events_of(api: Api, external_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/entities/{external_id}/events", params={"limit": 1000, "order": "asc"})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def single_code(response: httpx.Response) -> str:
    """The code a single write reports: the first detail's for a 422, else the error's own."""
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    return str(error["details"][0]["code"] if response.status_code == 422 else error["code"])


def error_codes(outcomes: list[dict[str, Any]]) -> dict[int, str]:
    return {o["index"]: o["error"]["code"] for o in outcomes if o["status"] == "failed"}


# --- acceptance ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "item"),
    [
        ("entities", {"externalId": "p-1", "type": "player"}),
        ("events", {"externalId": "p-1", "type": "session", "data": {}}),
        ("states", {"externalId": "p-1", "key": "loyalty_tier", "value": "gold"}),
    ],
)
async def test_accepted_batch_is_202_then_a_queued_job(api: Api, kind: str, item: dict[str, Any]) -> None:
    response = await api.post(f"/batch/{kind}", json={kind: [item, item]})
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"jobId", "status", "total"}
    assert body["jobId"].startswith("job_")
    assert len(body["jobId"]) > len("job_")
    assert body["status"] == "queued"
    assert body["total"] == 2
    job = await job_of(api, body["jobId"])
    assert job["jobId"] == body["jobId"]
    assert job["kind"] == kind
    assert job["status"] == "queued"
    assert (job["total"], job["processed"], job["succeeded"], job["failed"], job["duplicates"]) == (
        2,
        0,
        0,
        0,
        0,
    )
    assert job["errors"] == []
    assert job["warnings"] == []
    assert job["createdAt"].endswith("Z")
    assert job["startedAt"] is None
    assert job["completedAt"] is None


async def test_job_status_after_completion(api: Api, services: Services) -> None:
    await entity(api, "p-1")
    job, outcomes = await run(
        api,
        services,
        "events",
        [
            {"externalId": "p-1", "type": "transaction", "eventId": "a", "data": DEPOSIT},
            {"externalId": "p-1", "type": "transaction", "eventId": "a", "data": DEPOSIT},
            {"externalId": "p-1", "type": "bogus", "data": {}},
            {"externalId": "p-1", "type": "transaction", "data": {"type": "deposit", "amount": "1"}},
        ],
    )
    assert job["kind"] == "events"
    assert (job["total"], job["processed"], job["succeeded"], job["failed"], job["duplicates"]) == (
        4,
        4,
        2,
        1,
        1,
    )
    assert [(e["index"], e["code"]) for e in job["errors"]] == [(2, "unknown_event_type")]
    assert all(set(e) == {"index", "code", "message"} and e["message"] for e in job["errors"])
    assert [(w["index"], w["code"], w["field"]) for w in job["warnings"]] == [
        (3, "missing_required_field", "currency")
    ]
    assert set(job["warnings"][0]) == {"index", "code", "field", "message"}
    assert job["createdAt"] <= job["startedAt"] <= job["completedAt"]
    assert [o["status"] for o in outcomes] == ["succeeded", "duplicate", "failed", "succeeded"]


async def test_empty_batch_completes_with_nothing_to_do(api: Api, services: Services) -> None:
    job, outcomes = await run(api, services, "entities", [])
    assert (job["total"], job["processed"], job["succeeded"], job["failed"]) == (0, 0, 0, 0)
    assert outcomes == []


@pytest.mark.parametrize("kind", ["entities", "events", "states"])
async def test_over_the_item_limit_is_413(api: Api, services: Services, kind: str) -> None:
    ws_id = await workspace_id(services, api)
    limit = LIMITS[kind]
    response = await api.post(f"/batch/{kind}", json={kind: [{}] * (limit + 1)})
    error = error_of(response, 413, "batch_too_large")
    assert str(limit) in error["message"]
    dry = await api.post(f"/batch/{kind}", json={kind: [{}] * (limit + 1)}, params={"dryRun": "true"})
    error_of(dry, 413, "batch_too_large")
    assert await count(services, jobs, ws_id) == 0


async def test_a_batch_of_too_many_json_values_is_413_before_anything_is_parsed(
    api: Api, services: Services
) -> None:
    ws_id = await workspace_id(services, api)
    await entity(api, "p-1")
    # One item: a list of a million small objects (~3 MB), ~150 MB once parsed.
    item = b'{"externalId":"p-1","type":"support","data":{"x":[' + b",".join([b"{}"] * MAX_BATCH_VALUES)
    bomb = b'{"events":[' + item + b"]}}]}"
    for params in ({}, {"dryRun": "true"}):
        response = await api.post("/batch/events", content=bomb, params=params)
        error = error_of(response, 413, "payload_too_large")
        assert f"{MAX_BATCH_VALUES:,} JSON values" in error["message"]
    assert await count(services, jobs, ws_id) == 0
    # Commas and brackets inside strings are text, not values: a batch of such text passes.
    wordy = [{"externalId": "p-1", "type": "support", "data": {"topic": "a, [b], {c}, " * 2000}}] * 60
    job, outcomes = await run(api, services, "events", wordy)
    assert job["succeeded"] == 60, job


async def test_an_item_nested_past_what_parsers_usually_read_fails_alone(
    api: Api, services: Services
) -> None:
    await entity(api, "p-1")
    deep = {"externalId": "p-1", "type": "support", "eventId": "e-2", "data": {"topic": "deep", "x": []}}
    body = json.dumps({"events": [{**deep, "eventId": "e-1", "data": {"topic": "ok"}}, deep]}).encode()
    body = body.replace(b'"x": []', b'"x": ' + b"[" * 1000 + b"]" * 1000)  # 1000 levels: JSON allows it

    dry = await api.post("/batch/events", content=body, params={"dryRun": "true"})
    assert dry.status_code == 200, dry.text
    response = await api.post("/batch/events", content=body)
    assert response.status_code == 202, response.text
    await drain(services)
    job = await job_of(api, response.json()["jobId"])
    assert (job["status"], job["succeeded"], job["failed"]) == ("completed", 1, 1), job
    outcomes = await all_items(api, response.json()["jobId"])
    assert outcomes == dry.json()["results"]
    assert outcomes[1]["error"]["code"] == "invalid_json_value"
    assert "nested deeper than" in outcomes[1]["error"]["message"]


@pytest.mark.parametrize("kind", ["entities", "events", "states"])
async def test_exactly_at_the_item_limit_is_accepted(api: Api, services: Services, kind: str) -> None:
    limit = LIMITS[kind]
    items = [{"externalId": f"x-{i}", "type": "nope", "key": "nope"} for i in range(limit)]
    job_id = await submit(api, kind, items)
    await drain(services)
    job = await job_of(api, job_id)
    assert (job["status"], job["total"], job["processed"], job["failed"]) == (
        "completed",
        limit,
        limit,
        limit,
    )
    assert len(job["errors"]) == 100


async def test_not_json_is_400(api: Api, services: Services) -> None:
    ws_id = await workspace_id(services, api)
    for kind in LIMITS:
        response = await api.post(f"/batch/{kind}", content=b'{"entities": [')
        error_of(response, 400, "invalid_json")
    assert await count(services, jobs, ws_id) == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        [],
        "events",
        {"events": {"0": {}}},
        {"events": "[]"},
        {"events": None},
        {"entities": []},
        {"events": [], "dryRun": True},
    ],
)
async def test_wrong_envelope_is_422(api: Api, services: Services, body: Any) -> None:
    ws_id = await workspace_id(services, api)
    response = await api.post("/batch/events", json=body)
    error = error_of(response, 422, "validation_error")
    assert error["details"]
    assert await count(services, jobs, ws_id) == 0


async def test_body_over_16_mib_is_413(api: Api, services: Services) -> None:
    ws_id = await workspace_id(services, api)
    pad = b"a" * (16 * MIB)
    content = b'{"events": [{"externalId": "p-1", "type": "session", "data": {"pad": "' + pad + b'"}}]}'
    response = await api.post("/batch/events", content=content)
    error = error_of(response, 413, "payload_too_large")
    assert "16 MiB" in error["message"]
    inflated_too_far = gzip.compress(content)
    response = await api.post("/batch/events", content=inflated_too_far, headers={"Content-Encoding": "gzip"})
    error = error_of(response, 413, "payload_too_large")
    assert "16 MiB" in error["message"]
    assert await count(services, jobs, ws_id) == 0


async def test_body_over_1_mib_is_fine_for_a_batch(api: Api, services: Services) -> None:
    await entity(api, "p-1")
    items = [
        {"externalId": "p-1", "type": "support", "eventId": f"s-{i}", "data": {"topic": "x" * 1000}}
        for i in range(1500)
    ]
    assert len(json.dumps({"events": items})) > 1 * MIB
    job, _ = await run(api, services, "events", items)
    assert job["succeeded"] == 1500
    assert len(await events_of(api, "p-1")) == 1000  # one page of the 1500


async def test_gzip_body_is_accepted(api: Api, services: Services) -> None:
    raw = json.dumps(
        {"entities": [{"externalId": "gz-1", "type": "player", "attributes": {"country": "MT"}}]}
    ).encode()
    response = await api.post(
        "/batch/entities",
        content=gzip.compress(raw),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["total"] == 1
    await drain(services)
    assert (await job_of(api, response.json()["jobId"]))["succeeded"] == 1
    got = await api.get("/entities/gz-1")
    assert got.status_code == 200
    assert got.json()["attributes"] == {"country": "MT"}


async def test_batch_before_a_template_is_409(bare_api: Api, services: Services) -> None:
    ws_id = await workspace_id(services, bare_api)
    bodies = {
        "entities": {"externalId": "p-1", "type": "player"},
        "events": {"externalId": "p-1", "type": "session"},
        "states": {"externalId": "p-1", "key": "kyc_status", "value": "pending"},
    }
    for kind, item in bodies.items():
        for params in ({}, {"dryRun": "true"}):
            response = await bare_api.post(f"/batch/{kind}", json={kind: [item]}, params=params)
            error_of(response, 409, "template_not_configured")
    assert await count(services, jobs, ws_id) == 0


# --- per-item outcomes --------------------------------------------------------------------------


async def test_event_items_succeed_or_fail_on_their_own(api: Api, services: Services) -> None:
    await entity(api, "p-1")
    await deleted_entity(api, "gone")
    single = {"type": "transaction", "eventId": "single-1", "data": DEPOSIT, "timestamp": T0}
    assert (await api.post("/entities/p-1/events", json=single)).status_code == 201
    ok = {"externalId": "p-1", "type": "transaction", "eventId": "ok-1", "data": DEPOSIT, "timestamp": T1}
    items: list[Any] = [
        ok,
        {"externalId": "p-1", "type": "jackpot", "data": {}},
        {"externalId": "p-1", "type": "transaction", "data": {**DEPOSIT, "amount": True}},
        {
            "externalId": "p-1",
            "type": "transaction",
            "eventId": "warn-1",
            "data": {"type": "bet", "amount": "1"},
        },
        {"externalId": "nobody", "type": "session", "data": {}},
        {"externalId": "gone", "type": "session", "data": {}},
        dict(ok),
        {"externalId": "p-1", **single},
        {"externalId": "p-1", **single, "data": {**DEPOSIT, "amount": "99"}},
        {"externalId": "p-1", "type": "session", "eventId": "nul-1", "data": {"device": "a\x00b"}},
        {**ok, "data": {**DEPOSIT, "amount": "11"}},
        {"externalId": "p-1", "type": "session", "eventId": "sess-1", "data": {"ip_address": "10.0.0.1"}},
        42,
        {"externalId": "p-1", "type": "session", "timestamp": "2026-11-27T10:00:00"},
        {"externalId": "p-1", "type": "session", "data": {"action": "login"}, "colour": "red"},
        {"externalId": "p-1", **single, "data": {**DEPOSIT, "amount": "99"}},
    ]
    job, outcomes = await run(api, services, "events", items)
    statuses = [o["status"] for o in outcomes]
    assert statuses == [
        "succeeded",
        "failed",
        "failed",
        "succeeded",
        "failed",
        "failed",
        "duplicate",
        "duplicate",
        "failed",
        "failed",
        "failed",
        "succeeded",
        "failed",
        "failed",
        "failed",
        "failed",
    ]
    codes = error_codes(outcomes)
    assert codes == {
        1: "unknown_event_type",
        2: "invalid_field_type",
        4: "entity_not_found",
        5: "entity_deleted",
        8: "event_id_conflict",
        9: "invalid_json_value",
        10: "event_id_conflict",
        12: "invalid_type",
        13: "invalid_timestamp",
        14: "unknown_field",
        15: "event_id_conflict",
    }
    assert outcomes[2]["error"]["path"] == "data.amount"
    assert outcomes[0]["eventId"] == "ok-1"
    assert outcomes[6]["eventId"] == "ok-1"
    assert outcomes[7]["eventId"] == "single-1"
    assert outcomes[3]["warnings"] == [
        {
            "code": "missing_required_field",
            "field": "currency",
            "message": outcomes[3]["warnings"][0]["message"],
        }
    ]
    assert all(
        o["externalId"] == (i["externalId"] if isinstance(i, dict) else None)
        for o, i in zip(outcomes, items, strict=True)
    )
    assert (job["succeeded"], job["failed"], job["duplicates"]) == (3, 11, 2)
    assert [e["index"] for e in job["errors"]] == sorted(codes)
    assert [w["index"] for w in job["warnings"]] == [3]

    # the same items, sent one by one, fail with the same codes
    for index, expected in codes.items():
        item = items[index]
        if not isinstance(item, dict):
            response = await api.post("/entities/p-1/events", json=item)
        else:
            body = {k: v for k, v in item.items() if k != "externalId"}
            response = await api.post(f"/entities/{item['externalId']}/events", json=body)
        assert single_code(response) == expected, (index, response.text)

    stored = {e["eventId"]: e for e in await events_of(api, "p-1")}
    assert set(stored) == {"single-1", "ok-1", "warn-1", "sess-1"}
    assert stored["ok-1"]["data"] == DEPOSIT
    assert stored["single-1"]["data"] == DEPOSIT
    assert stored["sess-1"]["data"] == {"ip_address": "10.0.0.1"}


async def test_entity_items_succeed_or_fail_on_their_own(api: Api, services: Services) -> None:
    await entity(api, "p-1", country="MT")
    await deleted_entity(api, "gone")
    items: list[Any] = [
        {"externalId": "new-1", "type": "player", "attributes": {"country": "MT"}},
        {"externalId": "x-1", "type": "spaceship"},
        {"externalId": "x-2", "type": "player", "attributes": {"vip": "yes"}},
        {"externalId": "gone", "type": "player"},
        {"externalId": "p-1", "type": "game"},
        {"externalId": "nul-1", "type": "player", "attributes": {"segment": "a\x00"}},
        {"type": "player"},
        {"externalId": "p-1", "type": "player", "attributes": {"country": "DE"}},
        "p-2",
    ]
    job, outcomes = await run(api, services, "entities", items)
    assert [o["status"] for o in outcomes] == ["succeeded"] + ["failed"] * 6 + ["succeeded", "failed"]
    codes = error_codes(outcomes)
    assert codes == {
        1: "unknown_entity_type",
        2: "invalid_field_type",
        3: "entity_deleted",
        4: "entity_type_conflict",
        5: "invalid_json_value",
        6: "missing_field",
        8: "invalid_type",
    }
    assert outcomes[0]["created"] is True
    assert outcomes[7]["created"] is False
    assert (job["succeeded"], job["failed"], job["duplicates"]) == (2, 7, 0)
    for index, expected in codes.items():
        response = await api.post("/entities", json=items[index])
        assert single_code(response) == expected, (index, response.text)
    assert (await api.get("/entities/new-1")).json()["attributes"] == {"country": "MT"}
    assert (await api.get("/entities/p-1")).json()["attributes"] == {"country": "DE"}
    for missing in ("x-1", "x-2", "nul-1"):
        error_of(await api.get(f"/entities/{missing}"), 404, "entity_not_found")


async def test_state_items_succeed_or_fail_on_their_own(api: Api, services: Services) -> None:
    await entity(api, "p-1")
    await deleted_entity(api, "gone")
    items: list[Any] = [
        {"externalId": "p-1", "key": "kyc_status", "value": "verified", "timestamp": T1},
        {"externalId": "p-1", "key": "mood", "value": "calm"},
        {"externalId": "p-1", "key": "risk_score", "value": "high"},
        {"externalId": "nobody", "key": "kyc_status", "value": "pending"},
        {"externalId": "gone", "key": "kyc_status", "value": "pending"},
        {"externalId": "p-1", "key": "loyalty_tier", "value": "a\x00"},
        {"externalId": "p-1", "key": "kyc_status", "value": "pending", "timestamp": T0},
        {"externalId": "p-1", "key": "kyc_status", "value": "sleepy"},
        {"externalId": "p-1", "key": "risk_score", "value": 0.25},
    ]
    job, outcomes = await run(api, services, "states", items)
    assert [o["status"] for o in outcomes] == ["succeeded"] + ["failed"] * 5 + [
        "succeeded",
        "failed",
        "succeeded",
    ]
    codes = error_codes(outcomes)
    assert codes == {
        1: "unknown_state_key",
        2: "invalid_field_type",
        3: "entity_not_found",
        4: "entity_deleted",
        5: "invalid_json_value",
        7: "invalid_field_value",
    }
    assert (outcomes[0]["applied"], outcomes[6]["applied"], outcomes[8]["applied"]) == (True, False, True)
    assert (job["succeeded"], job["failed"]) == (3, 6)
    for index, expected in codes.items():
        item = items[index]
        body = {k: v for k, v in item.items() if k not in ("externalId", "key")}
        response = await api.put(f"/entities/{item['externalId']}/state/{item['key']}", json=body)
        assert single_code(response) == expected, (index, response.text)
    stored = (await api.get("/entities/p-1/state")).json()["states"]
    assert set(stored) == {"kyc_status", "risk_score"}
    assert stored["kyc_status"]["value"] == "verified"
    assert stored["kyc_status"]["timestamp"] == T1


async def test_a_nul_string_fails_only_its_own_item(api: Api, services: Services) -> None:
    await entity(api, "p-1")
    items = [
        {"externalId": "p-1", "type": "support", "eventId": f"e-{i}", "data": {"topic": f"t{i}"}}
        for i in range(5)
    ]
    items[2]["data"] = {"topic": "bad\x00topic"}
    items[3]["data"] = {"topic": "lone \ud800 surrogate"}
    items[4]["data"] = {"topic": "ok", "big": 2**70}
    items.append({"externalId": "p-1", "type": "support", "eventId": "e-5", "data": {}})
    # json.dumps escapes the lone surrogate, so the body itself is valid UTF-8 JSON
    response = await api.post("/batch/events", content=json.dumps({"events": items}).encode())
    assert response.status_code == 202, response.text
    await drain(services)
    job = await job_of(api, response.json()["jobId"])
    outcomes = await all_items(api, job["jobId"])
    assert [o["status"] for o in outcomes] == [
        "succeeded",
        "succeeded",
        "failed",
        "failed",
        "failed",
        "succeeded",
    ]
    assert [o["error"]["code"] for o in outcomes[2:4]] == ["invalid_json_value", "invalid_json_value"]
    for index in (2, 3, 4):  # each fails as it would alone
        body = {k: v for k, v in items[index].items() if k != "externalId"}
        single = await api.post("/entities/p-1/events", content=json.dumps(body).encode())
        assert single_code(single) == outcomes[index]["error"]["code"], single.text
    assert (job["succeeded"], job["failed"]) == (3, 3)
    assert [e["eventId"] for e in await events_of(api, "p-1")] == ["e-0", "e-1", "e-5"]


async def test_errors_and_warnings_are_capped_at_100_but_items_list_them_all(
    api: Api, services: Services
) -> None:
    await entity(api, "p-1")
    items: list[dict[str, Any]] = []
    for i in range(150):
        items.append({"externalId": "p-1", "type": "jackpot", "data": {}})
        items.append({"externalId": "p-1", "type": "transaction", "data": {"type": "bet", "amount": str(i)}})
    job_id = await submit(api, "events", items)
    await drain(services)
    job = await job_of(api, job_id)
    assert (job["succeeded"], job["failed"]) == (150, 150)
    assert len(job["errors"]) == 100
    assert [e["index"] for e in job["errors"]] == list(range(0, 200, 2))
    assert {e["code"] for e in job["errors"]} == {"unknown_event_type"}
    assert len(job["warnings"]) == 100
    assert [w["index"] for w in job["warnings"]] == list(range(1, 201, 2))
    assert {(w["code"], w["field"]) for w in job["warnings"]} == {("missing_required_field", "currency")}
    failed = await all_items(api, job_id, status="failed", limit=40)
    assert [o["index"] for o in failed] == list(range(0, 300, 2))
    assert all(o["error"]["code"] == "unknown_event_type" for o in failed)
    warned = await all_items(api, job_id, status="warning", limit=33)
    assert [o["index"] for o in warned] == list(range(1, 300, 2))
    assert all(o["warnings"][0]["field"] == "currency" for o in warned)


async def test_a_chunk_mixing_stored_and_new_event_ids_reports_each_one(api: Api, services: Services) -> None:
    """Some eventIds of the chunk are already stored (one exact replay, one conflict), the
    rest are new: exactly the new ones are written and each item says which case it was."""
    await entity(api, "p-1")
    for event_id in ("old-1", "old-2"):
        body = {"eventId": event_id, "type": "transaction", "data": DEPOSIT}
        assert (await api.post("/entities/p-1/events", json=body)).status_code == 201
    other = {**DEPOSIT, "amount": "99.00"}
    items = [
        {"externalId": "p-1", "type": "transaction", "eventId": "new-1", "data": DEPOSIT},
        {"externalId": "p-1", "type": "transaction", "eventId": "old-1", "data": DEPOSIT},
        {"externalId": "p-1", "type": "transaction", "eventId": "old-2", "data": other},
        {"externalId": "p-1", "type": "transaction", "eventId": "new-2", "data": other},
    ]
    job, outcomes = await run(api, services, "events", items)
    assert [(o["status"], o["eventId"]) for o in outcomes] == [
        ("succeeded", "new-1"),
        ("duplicate", "old-1"),
        ("failed", "old-2"),
        ("succeeded", "new-2"),
    ]
    assert outcomes[2]["error"]["code"] == "event_id_conflict"
    stored = {e["eventId"]: e["data"]["amount"] for e in await events_of(api, "p-1")}
    assert stored == {"old-1": "10.50", "old-2": "10.50", "new-1": "10.50", "new-2": "99.00"}
    _, repeated = await run(api, services, "events", items)  # the whole chunk re-sent
    assert [o["status"] for o in repeated] == ["duplicate", "duplicate", "failed", "duplicate"]
    assert await count(services, events, await workspace_id(services, api)) == 4


async def test_item_pages_cover_every_outcome_exactly_once(
    api: Api, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1100 events in chunks of 1000 (production: 5000) span two chunks; pages cross the boundary."""
    monkeypatch.setitem(CHUNK_SIZE, "events", 1000)
    await entity(api, "p-1")
    items: list[dict[str, Any]] = []
    for i in range(1100):
        item: dict[str, Any] = {"externalId": "p-1", "type": "support", "eventId": f"e-{i}", "data": {}}
        if i % 10 == 3:
            item["type"] = "jackpot"
        elif i % 10 == 7:
            item = dict(items[i - 1])  # an exact replay of the previous item
        elif i % 10 == 5:
            item = {**item, "type": "game_activity", "data": {"game_id": "g"}}
        items.append(item)
    expected = {i: {3: "failed", 7: "duplicate"}.get(i % 10, "succeeded") for i in range(1100)}
    job_id = await submit(api, "events", items)
    await drain(services)
    job = await job_of(api, job_id)
    assert (job["succeeded"], job["failed"], job["duplicates"]) == (880, 110, 110)
    assert await count(services, job_chunks, await workspace_id(services, api)) == 2

    every = await all_items(api, job_id, limit=150)
    assert [o["index"] for o in every] == list(range(1100))
    assert {o["index"]: o["status"] for o in every} == expected
    assert [o["eventId"] for o in every if o["status"] != "failed"] == [
        items[i]["eventId"] for i in range(1100) if expected[i] != "failed"
    ]
    for status in ("failed", "duplicate", "succeeded"):
        page = await all_items(api, job_id, status=status, limit=37)
        assert [o["index"] for o in page] == [i for i in range(1100) if expected[i] == status]
        assert {o["status"] for o in page} == {status}
    warned = await all_items(api, job_id, status="warning", limit=50)
    assert [o["index"] for o in warned] == [i for i in range(1100) if i % 10 == 5]
    assert all(o["warnings"][0]["field"] == "bet_amount" for o in warned)
    one_by_one = await all_items(api, job_id, status="duplicate", limit=1)
    assert [o["index"] for o in one_by_one] == [i for i in range(1100) if i % 10 == 7]


async def test_item_listing_rejects_bad_parameters(api: Api, services: Services) -> None:
    job_id = await submit(api, "entities", [{"externalId": "p-1", "type": "player"}])
    await drain(services)
    for params in ({"status": "bogus"}, {"limit": 0}, {"limit": 1001}, {"cursor": "not-a-cursor"}):
        response = await api.get(f"/batch/jobs/{job_id}/items", params=params)
        error_of(response, 422, "validation_error")


async def test_unknown_job_is_404(api: Api) -> None:
    error_of(await api.get("/batch/jobs/job_doesnotexist"), 404, "job_not_found")
    error_of(await api.get("/batch/jobs/job_doesnotexist/items"), 404, "job_not_found")


async def test_job_of_another_workspace_is_404(
    api: Api, services: Services, operator: CreatedOperator
) -> None:
    job_id = await submit(api, "entities", [{"externalId": "p-1", "type": "player"}])
    await drain(services)
    other = await services.auth.create_operator(f"other-{uuid.uuid4().hex[:8]}")
    for key in (other.live_key, other.test_key, operator.test_key):
        stranger = api.as_key(key)
        error_of(await stranger.get(f"/batch/jobs/{job_id}"), 404, "job_not_found")
        error_of(await stranger.get(f"/batch/jobs/{job_id}/items"), 404, "job_not_found")
        error_of(
            await stranger.get(f"/batch/jobs/{job_id}/items", params={"status": "succeeded"}),
            404,
            "job_not_found",
        )
    assert (await job_of(api, job_id))["succeeded"] == 1


# --- Idempotency-Key ----------------------------------------------------------------------------


async def test_idempotency_key_replay_returns_the_same_job(api: Api, services: Services) -> None:
    ws_id = await workspace_id(services, api)
    await entity(api, "p-1")
    batch = {"events": [{"externalId": "p-1", "type": "support", "data": {"topic": "a"}}]}
    headers = {"Idempotency-Key": "import-2026-11-27"}
    first = await api.post("/batch/events", json=batch, headers=headers)
    assert first.status_code == 202, first.text
    again = await api.post("/batch/events", json=batch, headers=headers)
    assert again.status_code == 202, again.text
    assert again.json()["jobId"] == first.json()["jobId"]
    assert again.json()["total"] == 1
    assert await count(services, jobs, ws_id) == 1
    await drain(services)
    after = await api.post("/batch/events", json=batch, headers=headers)
    assert after.json()["jobId"] == first.json()["jobId"]
    assert after.json()["status"] == "completed"  # the job as it is now, as OpenAPI documents
    accepted = (await api.get("/openapi.json")).json()["components"]["schemas"]["BatchAccepted"]
    assert "completed" in accepted["properties"]["status"]["enum"]
    zipped = await api.post(
        "/batch/events",
        content=gzip.compress(first.request.content),
        headers={**headers, "Content-Encoding": "gzip"},
    )
    assert zipped.status_code == 202, zipped.text
    assert zipped.json()["jobId"] == first.json()["jobId"]
    await drain(services)
    assert await count(services, jobs, ws_id) == 1
    # no eventId: a second job would have stored a second event
    assert len(await events_of(api, "p-1")) == 1


async def test_idempotency_key_with_another_body_is_409(api: Api, services: Services) -> None:
    ws_id = await workspace_id(services, api)
    headers = {"Idempotency-Key": "k-1"}
    first = await api.post(
        "/batch/entities", json={"entities": [{"externalId": "a", "type": "player"}]}, headers=headers
    )
    assert first.status_code == 202
    other_body = await api.post(
        "/batch/entities", json={"entities": [{"externalId": "b", "type": "player"}]}, headers=headers
    )
    error_of(other_body, 409, "idempotency_conflict")
    other_kind = await api.post(
        "/batch/states",
        json={"states": [{"externalId": "a", "key": "loyalty_tier", "value": "gold"}]},
        headers=headers,
    )
    error_of(other_kind, 409, "idempotency_conflict")
    assert await count(services, jobs, ws_id) == 1
    await drain(services)
    error_of(await api.get("/entities/b"), 404, "entity_not_found")


async def test_idempotency_keys_are_per_workspace(
    api: Api, services: Services, operator: CreatedOperator
) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    batch = {"entities": [{"externalId": "a", "type": "player"}]}
    mine = await api.post("/batch/entities", json=batch, headers=headers)
    assert mine.status_code == 202
    other = await services.auth.create_operator(f"other-{uuid.uuid4().hex[:8]}")
    for key in (other.live_key, operator.test_key):
        stranger = api.as_key(key)
        assert (await stranger.put("/settings", json={"templateId": "tpl_igaming"})).status_code == 200
        theirs = await stranger.post(
            "/batch/entities", json={"entities": [{"externalId": "z", "type": "game"}]}, headers=headers
        )
        assert theirs.status_code == 202, theirs.text
        assert theirs.json()["jobId"] != mine.json()["jobId"]
        same_body = await stranger.post("/batch/entities", json=batch, headers=headers)
        error_of(same_body, 409, "idempotency_conflict")
    await drain(services)
    error_of(await api.get("/entities/z"), 404, "entity_not_found")


# --- dry runs -----------------------------------------------------------------------------------


async def test_dry_run_events_batch_stores_nothing(api: Api, services: Services) -> None:
    ws_id = await workspace_id(services, api)
    await entity(api, "p-1")
    await deleted_entity(api, "gone")
    stored = {"type": "transaction", "eventId": "old-1", "data": DEPOSIT, "timestamp": T0}
    assert (await api.post("/entities/p-1/events", json=stored)).status_code == 201
    items: list[Any] = [
        {"externalId": "p-1", "type": "transaction", "eventId": "new-1", "data": DEPOSIT},
        {"externalId": "p-1", **stored},
        {"externalId": "p-1", **stored, "data": {**DEPOSIT, "amount": "2"}},
        {"externalId": "nobody", "type": "session", "data": {}},
        {"externalId": "gone", "type": "session", "data": {}},
        {"externalId": "p-1", "type": "jackpot", "data": {}},
        {"externalId": "p-1", "type": "transaction", "eventId": "new-1", "data": DEPOSIT},
        {"externalId": "p-1", "type": "transaction", "data": {"type": "win", "amount": "3"}},
        {"externalId": "p-1", "type": "session", "data": {"ip_address": "192.0.2.1"}},
    ]
    before_events, before_jobs = await count(services, events, ws_id), await count(services, jobs, ws_id)
    response = await api.post("/batch/events", json={"events": items}, params={"dryRun": "true"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert set(response.json()) == {"results"}
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["status"] for r in results] == [
        "succeeded",
        "duplicate",
        "failed",
        "failed",
        "failed",
        "failed",
        "duplicate",
        "succeeded",
        "succeeded",
    ]
    assert error_codes(results) == {
        2: "event_id_conflict",
        3: "entity_not_found",
        4: "entity_deleted",
        5: "unknown_event_type",
    }
    assert results[0]["eventId"] == "new-1"
    assert results[1]["eventId"] == "old-1"
    assert [w["field"] for w in results[7]["warnings"]] == ["currency"]
    assert await count(services, events, ws_id) == before_events == 1
    assert await count(services, jobs, ws_id) == before_jobs == 0
    assert [e["eventId"] for e in await events_of(api, "p-1")] == ["old-1"]
    # the real write then gives the outcomes the dry run announced
    job, outcomes = await run(api, services, "events", items)
    assert [o["status"] for o in outcomes] == [r["status"] for r in results]
    assert error_codes(outcomes) == error_codes(results)


async def test_dry_run_entities_batch_stores_nothing(api: Api, services: Services) -> None:
    ws_id = await workspace_id(services, api)
    await entity(api, "p-1", country="MT")
    items: list[Any] = [
        {"externalId": "new-1", "type": "player", "attributes": {"email": "a@example.com"}},
        {"externalId": "new-1", "type": "player", "attributes": {"country": "DE"}},
        {"externalId": "p-1", "type": "player", "attributes": {"country": None}},
        {"externalId": "p-1", "type": "game"},
        {"externalId": "x", "type": "player", "attributes": {"vip": 1}},
    ]
    response = await api.post("/batch/entities", json={"entities": items}, params={"dryRun": "true"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["succeeded", "succeeded", "succeeded", "failed", "failed"]
    assert [r.get("created") for r in results[:3]] == [True, False, False]
    assert error_codes(results) == {3: "entity_type_conflict", 4: "invalid_field_type"}
    assert await count(services, entities, ws_id) == 1
    assert await count(services, jobs, ws_id) == 0
    error_of(await api.get("/entities/new-1"), 404, "entity_not_found")
    p1 = (await api.get("/entities/p-1")).json()
    assert (p1["attributes"], p1["version"]) == ({"country": "MT"}, 1)


async def test_dry_run_states_batch_stores_nothing(api: Api, services: Services) -> None:
    ws_id = await workspace_id(services, api)
    await entity(api, "p-1")
    put = await api.put("/entities/p-1/state/kyc_status", json={"value": "pending", "timestamp": T1})
    assert put.status_code == 200
    items = [
        {"externalId": "p-1", "key": "kyc_status", "value": "verified", "timestamp": T0},
        {"externalId": "p-1", "key": "kyc_status", "value": "verified", "timestamp": T2},
        {"externalId": "p-1", "key": "balance", "value": "5.00"},
        {"externalId": "nobody", "key": "balance", "value": "5.00"},
    ]
    response = await api.post("/batch/states", json={"states": items}, params={"dryRun": "true"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["succeeded", "succeeded", "succeeded", "failed"]
    assert [r.get("applied") for r in results[:3]] == [False, True, True]
    assert error_codes(results) == {3: "entity_not_found"}
    assert await count(services, states, ws_id) == 1
    assert await count(services, jobs, ws_id) == 0
    got = (await api.get("/entities/p-1/state/kyc_status")).json()
    assert (got["value"], got["timestamp"]) == ("pending", T1)
    error_of(await api.get("/entities/p-1/state/balance"), 404, "state_not_found")


async def test_dry_run_single_entity_write(api: Api, services: Services) -> None:
    ws_id = await workspace_id(services, api)
    new = await api.post("/entities", json={"externalId": "p-1", "type": "player"}, params={"dryRun": "true"})
    assert new.status_code == 200, new.text
    assert new.json() == {
        "results": [{"index": 0, "status": "succeeded", "externalId": "p-1", "created": True}]
    }
    assert await count(services, entities, ws_id) == 0
    error_of(await api.get("/entities/p-1"), 404, "entity_not_found")
    await entity(api, "p-1", country="MT")
    update = await api.post(
        "/entities",
        json={"externalId": "p-1", "type": "player", "attributes": {"country": "DE"}},
        params={"dryRun": "true"},
    )
    assert update.json()["results"][0]["created"] is False
    invalid = await api.post(
        "/entities", json={"externalId": "p-1", "type": "game"}, params={"dryRun": "true"}
    )
    assert invalid.status_code == 200
    assert invalid.json()["results"][0]["status"] == "failed"
    assert invalid.json()["results"][0]["error"]["code"] == "entity_type_conflict"
    got = (await api.get("/entities/p-1")).json()
    assert (got["attributes"], got["version"]) == ({"country": "MT"}, 1)


async def test_dry_run_single_event_write(api: Api, services: Services) -> None:
    ws_id = await workspace_id(services, api)
    body = {"type": "transaction", "eventId": "e-1", "data": DEPOSIT}
    missing = await api.post("/entities/p-1/events", json=body, params={"dryRun": "true"})
    assert missing.status_code == 200, missing.text
    (outcome,) = missing.json()["results"]
    assert (outcome["status"], outcome["error"]["code"]) == ("failed", "entity_not_found")
    await entity(api, "p-1")
    fresh = await api.post("/entities/p-1/events", json=body, params={"dryRun": "true"})
    assert fresh.json() == {
        "results": [{"index": 0, "status": "succeeded", "externalId": "p-1", "eventId": "e-1"}]
    }
    assert await count(services, events, ws_id) == 0
    assert (await api.post("/entities/p-1/events", json=body)).status_code == 201
    replay = await api.post("/entities/p-1/events", json=body, params={"dryRun": "true"})
    assert replay.json()["results"][0]["status"] == "duplicate"
    conflict = await api.post(
        "/entities/p-1/events", json={**body, "data": {**DEPOSIT, "amount": "1"}}, params={"dryRun": "true"}
    )
    assert conflict.json()["results"][0]["error"]["code"] == "event_id_conflict"
    warned = await api.post(
        "/entities/p-1/events", json={"type": "transaction", "data": {}}, params={"dryRun": "true"}
    )
    (outcome,) = warned.json()["results"]
    assert outcome["status"] == "succeeded"
    assert sorted(w["field"] for w in outcome["warnings"]) == ["amount", "currency", "type"]
    assert await count(services, events, ws_id) == 1


async def test_dry_run_single_state_write(api: Api, services: Services) -> None:
    ws_id = await workspace_id(services, api)
    await entity(api, "p-1")
    first = await api.put(
        "/entities/p-1/state/balance", json={"value": "10.00", "timestamp": T1}, params={"dryRun": "true"}
    )
    assert first.status_code == 200, first.text
    (outcome,) = first.json()["results"]
    assert (outcome["status"], outcome["applied"], outcome["key"]) == ("succeeded", True, "balance")
    assert await count(services, states, ws_id) == 0
    error_of(await api.get("/entities/p-1/state/balance"), 404, "state_not_found")
    assert (await api.put("/entities/p-1/state/balance", json={"value": "10.00", "timestamp": T1})).json()[
        "applied"
    ]
    older = await api.put(
        "/entities/p-1/state/balance", json={"value": "1.00", "timestamp": T0}, params={"dryRun": "true"}
    )
    assert older.json()["results"][0]["applied"] is False
    newer = await api.put(
        "/entities/p-1/state/balance", json={"value": "1.00", "timestamp": T2}, params={"dryRun": "true"}
    )
    assert newer.json()["results"][0]["applied"] is True
    bad = await api.put("/entities/p-1/state/balance", json={"value": True}, params={"dryRun": "true"})
    assert bad.json()["results"][0]["error"]["code"] == "invalid_field_type"
    got = (await api.get("/entities/p-1/state/balance")).json()
    assert (got["value"], got["timestamp"]) == ("10.00", T1)


# --- semantics through batches ------------------------------------------------------------------


async def test_entities_batch_merges_like_single_upserts(api: Api, services: Services) -> None:
    await entity(api, "old-1", country="MT", segment="vip")
    items = [
        {
            "externalId": "p-9",
            "type": "player",
            "attributes": {"country": "MT", "email": "first@example.com"},
        },
        {"externalId": "p-9", "type": "player", "attributes": {"vip": True, "email": "second@example.com"}},
        {"externalId": "old-1", "type": "player", "attributes": {"segment": None, "language": "mt"}},
    ]
    job, outcomes = await run(api, services, "entities", items)
    assert [(o["status"], o["created"]) for o in outcomes] == [
        ("succeeded", True),
        ("succeeded", False),
        ("succeeded", False),
    ]
    p9 = (await api.get("/entities/p-9")).json()
    assert p9["version"] == 2
    assert p9["attributes"] == {"country": "MT", "vip": True, "email": "second@example.com"}
    old = (await api.get("/entities/old-1")).json()
    assert (old["version"], old["attributes"]) == (2, {"country": "MT", "language": "mt"})
    listing = (await api.get("/entities", params={"type": "player"})).json()["data"]
    (listed,) = [e for e in listing if e["externalId"] == "p-9"]
    assert set(listed["attributes"]["email"]) == {"$encrypted"}
    assert "second@example.com" not in json.dumps(listed)
    assert listed["attributes"]["country"] == "MT"


async def test_states_batch_last_writer_wins_by_timestamp(api: Api, services: Services) -> None:
    await entity(api, "p-1")
    assert (
        await api.put("/entities/p-1/state/loyalty_tier", json={"value": "silver", "timestamp": T1})
    ).json()["applied"]
    items = [
        {"externalId": "p-1", "key": "loyalty_tier", "value": "bronze", "timestamp": T0},
        {"externalId": "p-1", "key": "kyc_status", "value": "verified", "timestamp": T2},
        {"externalId": "p-1", "key": "kyc_status", "value": "pending", "timestamp": T1},
        {"externalId": "p-1", "key": "loyalty_tier", "value": "gold", "timestamp": T2},
    ]
    job, outcomes = await run(api, services, "states", items)
    assert [(o["status"], o["key"], o["applied"]) for o in outcomes] == [
        ("succeeded", "loyalty_tier", False),
        ("succeeded", "kyc_status", True),
        ("succeeded", "kyc_status", False),
        ("succeeded", "loyalty_tier", True),
    ]
    assert job["succeeded"] == 4
    assert job["failed"] == 0
    got = (await api.get("/entities/p-1/state")).json()["states"]
    assert (got["loyalty_tier"]["value"], got["loyalty_tier"]["timestamp"]) == ("gold", T2)
    assert (got["kyc_status"]["value"], got["kyc_status"]["timestamp"]) == ("verified", T2)


async def test_money_stays_exact_through_batches(api: Api, services: Services) -> None:
    money = "12345678901234567890.12"
    await entity(api, "p-1")
    raw_events = (
        '{"events": ['
        f'{{"externalId": "p-1", "type": "transaction", "eventId": "n", '
        f'"data": {{"type": "deposit", "amount": {money}, "currency": "EUR"}}}},'
        f'{{"externalId": "p-1", "type": "transaction", "eventId": "s", '
        f'"data": {{"type": "deposit", "amount": "{money}", "currency": "EUR", "balance_after": {money}}}}}'
        "]}"
    )
    response = await api.post("/batch/events", content=raw_events.encode())
    assert response.status_code == 202, response.text
    raw_states = f'{{"states": [{{"externalId": "p-1", "key": "balance", "value": {money}}}]}}'
    response = await api.post("/batch/states", content=raw_states.encode())
    assert response.status_code == 202, response.text
    raw_entities = (
        f'{{"entities": [{{"externalId": "g-1", "type": "game", "attributes": {{"max_bet": {money}}}}}]}}'
    )
    response = await api.post("/batch/entities", content=raw_entities.encode())
    assert response.status_code == 202, response.text
    await drain(services)
    stored = {e["eventId"]: e["data"] for e in await events_of(api, "p-1")}
    assert stored["n"]["amount"] == money
    assert stored["s"]["amount"] == money
    assert stored["s"]["balance_after"] == money
    assert (await api.get("/entities/p-1/state/balance")).json()["value"] == money
    assert (await api.get("/entities/g-1")).json()["attributes"]["max_bet"] == money


async def test_an_entitys_events_keep_the_batch_order_whatever_the_write_order(
    api: Api, services: Services
) -> None:
    """The bulk write stores a chunk's rows grouped by entity (storage/events.py): events of
    one entity that share a timestamp still list in the order the batch gave them, and the
    rollup counts every row once."""
    players = [f"p-{n}" for n in range(7)]
    for player in players:
        await entity(api, player)
    # Entities interleaved, every event at the same instant, eventIds out of sort order.
    items = [
        {
            "externalId": players[(n * 5) % 7],
            "type": "transaction",
            "eventId": f"e-{(n * 37) % 200:03d}",
            "timestamp": T0,
            "data": {"type": "deposit", "amount": f"{n}.01", "currency": "EUR"},
        }
        for n in range(200)
    ]
    job = await submit(api, "events", items)
    await drain(services)
    assert (await job_of(api, job))["succeeded"] == len(items)
    for player in players:
        expected = [i["eventId"] for i in items if i["externalId"] == player]
        assert [e["eventId"] for e in await events_of(api, player)] == expected
    summary = await api.get(
        "/analytics/transactions", params={"from": "2026-11-27T00:00:00Z", "to": "2026-11-28T00:00:00Z"}
    )
    assert summary.status_code == 200, summary.text
    # 0.01 + 1.01 + ... + 199.01 = 19900 + 2.00
    assert summary.json()["data"] == [{"currency": "EUR", "count": 200, "sum": "19902.00"}]


async def test_repeated_conflicting_event_id_conflicts_every_time(api: Api, services: Services) -> None:
    """A stored eventId sent twice in one batch with another payload: both items conflict."""
    await entity(api, "p-1")
    stored = {"type": "transaction", "eventId": "x-1", "data": DEPOSIT}
    assert (await api.post("/entities/p-1/events", json=stored)).status_code == 201
    changed = {"externalId": "p-1", **stored, "data": {**DEPOSIT, "amount": "99"}}
    job, outcomes = await run(api, services, "events", [changed, dict(changed)])
    assert error_codes(outcomes) == {0: "event_id_conflict", 1: "event_id_conflict"}
    assert (job["succeeded"], job["failed"], job["duplicates"]) == (0, 2, 0)
    dry = await api.post("/batch/events", json={"events": [changed, changed]}, params={"dryRun": "true"})
    assert error_codes(dry.json()["results"]) == {0: "event_id_conflict", 1: "event_id_conflict"}
    (event,) = await events_of(api, "p-1")
    assert event["data"] == DEPOSIT
