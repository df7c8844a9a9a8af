"""Rate limits and per-item size limits through the ASGI app, on SQLite and PostgreSQL.

On SQLite the token buckets live in the process; on PostgreSQL in the shared
``rate_buckets`` table, leased in blocks, so every test here runs against both
stores. Budgets are made tiny with the same service call ``onehazel operators
limits`` makes, and time is a clock the test moves (no sleeping): the limiter
reads it for both refills and lease lifetimes.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from onehazel.jobs.worker import Worker
from onehazel.services.auth import CreatedOperator
from onehazel.services.container import Services
from tests.conftest import Api
from tests.helpers import error_of

POLICY = re.compile(r'^"(writes|batches|reads)";q=(\d+);w=(\d+)$')
STATE = re.compile(r'^"(writes|batches|reads)";r=(\d+);t=(\d+)$')
DEFAULT_BURSTS = {"writes": 2000, "batches": 40, "reads": 1000}
KIB = 1024


class Clock:
    """Seconds since the epoch, moved by hand; starts on a whole second just ahead of now."""

    def __init__(self) -> None:
        self.now = float(int(time.time()) + 1)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(services: Services) -> Iterator[Clock]:
    limiter = services.rate_limits.limiter
    real, limiter.clock = limiter.clock, Clock()
    yield limiter.clock  # type: ignore[misc]
    limiter.clock = real


async def limit(services: Services, operator: CreatedOperator, **rates: int) -> None:
    """What ``onehazel operators limits OPERATOR_ID --writes N ...`` does."""
    await services.rate_limits.configure(operator.operator_id, dict(rates))


def rate_limit(response: httpx.Response) -> dict[str, Any]:
    """The RateLimit-Policy and RateLimit headers, parsed and checked against each other."""
    policy = POLICY.match(response.headers.get("ratelimit-policy", ""))
    state = STATE.match(response.headers.get("ratelimit", ""))
    assert policy is not None, dict(response.headers)
    assert state is not None, dict(response.headers)
    assert policy[1] == state[1]
    parsed = {
        "class": policy[1],
        "q": int(policy[2]),
        "w": int(policy[3]),
        "r": int(state[2]),
        "t": int(state[3]),
    }
    assert 0 <= parsed["r"] <= parsed["q"]
    return parsed


def retry_after(response: httpx.Response) -> int:
    error = error_of(response, 429, "rate_limited")
    assert "rate limit" in error["message"]
    value = response.headers["retry-after"]
    assert value.isdigit(), value
    assert int(value) >= 1
    assert rate_limit(response)["r"] == 0
    return int(value)


async def create(api: Api, external_id: str) -> httpx.Response:
    return await api.post("/entities", json={"externalId": external_id, "type": "player"})


async def drain(services: Services) -> None:
    worker = Worker(services)
    while await worker.run_once():
        pass


# --- the headers --------------------------------------------------------------------------------


async def test_every_authenticated_response_carries_the_rate_limit_headers(
    api: Api, services: Services
) -> None:
    entity = {"externalId": "p-1", "type": "player", "attributes": {"country": "MT"}}
    responses = [
        (200, "reads", await api.get("/settings")),
        (201, "writes", await api.post("/entities", json=entity)),
        (200, "writes", await api.post("/entities", json=entity)),
        (404, "reads", await api.get("/entities/ghost")),
        (422, "reads", await api.get("/entities", params={"limit": 0})),
        (422, "writes", await api.post("/entities", json={"externalId": "p-2", "type": "croupier"})),
        (400, "writes", await api.post("/entities", content=b"{nope")),
        (409, "writes", await api.post("/entities", json={"externalId": "p-1", "type": "game"})),
        (413, "writes", await api.post("/entities", content=b" " * (1024 * 1024 + 1))),
        (404, "writes", await api.post("/entities/ghost/events", json={"type": "session"})),
        (202, "batches", await api.post("/batch/entities", json={"entities": [entity]})),
        (200, "writes", await api.delete("/entities/p-1")),
        (410, "reads", await api.get("/entities/p-1")),
        (200, "reads", await api.get("/templates")),
    ]
    await drain(services)
    for status, traffic, response in responses:
        assert response.status_code == status, (status, traffic, response.text[:200])
        headers = rate_limit(response)
        assert headers["class"] == traffic, (status, traffic)
        assert headers["q"] == DEFAULT_BURSTS[traffic]
        assert headers["w"] == 2
        assert headers["r"] < headers["q"]  # this very request was counted


async def test_responses_without_a_workspace_carry_no_rate_limit_headers(api: Api) -> None:
    """Decision (documented in the OpenAPI description): no key, no workspace, nothing to report."""
    for response in (
        await api.as_key(None).get("/settings"),
        await api.as_key("oh_live_" + "x" * 43).post("/entities", json={}),
        await api.get("/healthz"),
    ):
        assert response.status_code in (200, 401)
        assert "ratelimit" not in response.headers
        assert "ratelimit-policy" not in response.headers


async def test_remaining_counts_down_and_reset_says_when_the_bucket_is_full(
    api: Api, services: Services, operator: CreatedOperator, clock: Clock
) -> None:
    await limit(services, operator, writes=2)  # bursts of 4, refilled at 2 a second
    seen = [rate_limit(await create(api, f"p-{i}")) for i in range(4)]
    assert [(h["q"], h["w"]) for h in seen] == [(4, 2)] * 4
    assert [h["r"] for h in seen] == [3, 2, 1, 0]
    assert [h["t"] for h in seen] == [1, 1, 2, 2]  # seconds until 4 again, rounded up
    for _ in range(3):  # reads: a full bucket of the default size, refilling meanwhile
        read = rate_limit(await api.get("/entities/p-0"))
        assert (read["r"], read["t"]) == (read["q"] - 1, 1)  # never "t=0" below full
        clock.advance(0.25)


# --- 429 ----------------------------------------------------------------------------------------


async def test_over_the_write_budget_is_429_with_retry_after_and_nothing_is_stored(
    api: Api, services: Services, operator: CreatedOperator, clock: Clock
) -> None:
    await limit(services, operator, writes=2)
    for i in range(4):
        assert (await create(api, f"p-{i}")).status_code == 201
    refused = await create(api, "p-late")
    wait = retry_after(refused)
    refused_event = await api.post("/entities/p-0/events", json={"type": "session", "eventId": "e-1"})
    retry_after(refused_event)

    error_of(await api.get("/entities/p-late"), 404, "entity_not_found")  # reads have their own budget
    assert (await api.get("/entities/p-0/events")).json()["data"] == []

    clock.advance(wait)
    assert (await create(api, "p-late")).status_code == 201


async def test_a_refused_request_is_refused_before_its_body_is_judged(
    api: Api, services: Services, operator: CreatedOperator, clock: Clock
) -> None:
    await limit(services, operator, writes=1)
    for i in range(2):
        assert (await create(api, f"p-{i}")).status_code == 201
    retry_after(await api.post("/entities", content=b"{not json"))
    retry_after(await api.post("/entities", json={"externalId": "p-9", "type": "croupier"}))


async def test_the_three_classes_have_separate_budgets(
    api: Api, services: Services, operator: CreatedOperator, clock: Clock
) -> None:
    await limit(services, operator, writes=1, reads=1, batches=1)  # bursts of 2 each
    assert [(await create(api, f"p-{i}")).status_code for i in range(2)] == [201, 201]
    retry_after(await create(api, "p-2"))

    reads = [await api.get("/entities/p-0"), await api.get("/entities")]
    assert [r.status_code for r in reads] == [200, 200]
    retry_after(await api.get("/settings"))

    batch = {"entities": [{"externalId": "b-1", "type": "player"}]}
    submits = [await api.post("/batch/entities", json=batch) for _ in range(2)]
    assert [r.status_code for r in submits] == [202, 202]
    assert {rate_limit(r)["class"] for r in submits} == {"batches"}
    retry_after(await api.post("/batch/events", json={"events": []}))
    await drain(services)

    clock.advance(1)  # one more of each
    assert (await create(api, "p-3")).status_code == 201
    assert (await api.get("/entities/p-3")).status_code == 200


async def test_each_workspace_has_its_own_budget(
    api: Api, http: httpx.AsyncClient, services: Services, operator: CreatedOperator, clock: Clock
) -> None:
    await limit(services, operator, writes=1)
    assert [(await create(api, f"p-{i}")).status_code for i in range(2)] == [201, 201]
    retry_after(await create(api, "p-2"))

    test_mode = api.as_key(operator.test_key)  # same operator, same rates, its own bucket
    assert (await test_mode.put("/settings", json={"templateId": "tpl_igaming"})).status_code == 200
    created = await create(test_mode, "p-2")
    assert created.status_code == 201
    assert rate_limit(created)["q"] == 2

    other = await services.auth.create_operator(f"other-{uuid.uuid4().hex[:6]}")
    other_api = Api(http, other.live_key)
    assert (await other_api.put("/settings", json={"templateId": "tpl_igaming"})).status_code == 200
    for i in range(5):
        response = await create(other_api, f"p-{i}")
        assert response.status_code == 201
        assert rate_limit(response)["q"] == DEFAULT_BURSTS["writes"]
    retry_after(await create(api, "p-2"))  # still over: nobody else's traffic refilled it


async def test_the_budget_refills_at_the_rate_and_never_beyond_the_burst(
    api: Api, services: Services, operator: CreatedOperator, clock: Clock
) -> None:
    await limit(services, operator, writes=2)

    async def admitted(prefix: str) -> int:
        """Writes until the first 429; how many got through."""
        for n in range(100):
            response = await create(api, f"{prefix}-{n}")
            if response.status_code == 429:
                return n
            assert response.status_code == 201, response.text
        raise AssertionError("never limited")

    assert await admitted("a") == 4
    clock.advance(0.5)  # 2 a second: one token back
    assert await admitted("b") == 1
    clock.advance(1.5)
    assert await admitted("c") == 3
    clock.advance(3600)  # an hour idle: still only a full bucket
    assert await admitted("d") == 4


async def test_a_new_limit_applies_at_once_and_reset_restores_the_defaults(
    api: Api, services: Services, operator: CreatedOperator, clock: Clock
) -> None:
    assert rate_limit(await create(api, "p-0"))["q"] == DEFAULT_BURSTS["writes"]
    await limit(services, operator, writes=3)
    assert rate_limit(await create(api, "p-1"))["q"] == 6
    limits = await services.rate_limits.configure(operator.operator_id, {}, reset=True)
    assert limits.to_wire()["writes"] == {"rate": 1000, "burst": 2000, "default": True}
    assert rate_limit(await create(api, "p-2"))["q"] == DEFAULT_BURSTS["writes"]


# --- per-item size limits -----------------------------------------------------------------------


def fields(count: int, *, size: int = 1) -> dict[str, str]:
    return {f"f{i:03d}": "x" * size for i in range(count)}


def padded(total: int) -> dict[str, str]:
    """An object whose compact JSON is exactly ``total`` bytes."""
    overhead = len('{"note":""}')
    return {"note": "x" * (total - overhead)}


def detail(response: httpx.Response, path: str, code: str) -> str:
    error = error_of(response, 422, "validation_error")
    matches = [d for d in error["details"] if d["path"] == path and d["code"] == code]
    assert matches, error["details"]
    return str(matches[0]["message"])


async def test_event_data_is_limited_to_32_kib_and_100_fields(api: Api) -> None:
    assert (await create(api, "p-1")).status_code == 201

    async def event(data: dict[str, Any]) -> httpx.Response:
        return await api.post("/entities/p-1/events", json={"type": "support", "data": data})

    assert (await event(padded(32 * KIB))).status_code == 201
    message = detail(await event(padded(32 * KIB + 1)), "data", "too_large")
    assert "32 KiB" in message
    assert (await event(fields(100))).status_code == 201
    message = detail(await event(fields(101)), "data", "too_many_fields")
    assert "100" in message
    assert len((await api.get("/entities/p-1/events")).json()["data"]) == 2


async def test_entity_attributes_are_limited_also_once_merged(api: Api) -> None:
    body = {"externalId": "p-1", "type": "player"}
    message = detail(
        await api.post("/entities", json={**body, "attributes": fields(101)}), "attributes", "too_many_fields"
    )
    assert "100" in message
    big = {**body, "attributes": padded(32 * KIB + 1)}
    assert "32 KiB" in detail(await api.post("/entities", json=big), "attributes", "too_large")

    assert (await api.post("/entities", json={**body, "attributes": fields(60)})).status_code == 201
    more = {**body, "attributes": {f"g{i:03d}": "y" for i in range(41)}}  # 101 once merged
    message = detail(await api.post("/entities", json=more), "attributes", "too_many_fields")
    assert "100" in message
    stored = (await api.get("/entities/p-1")).json()
    assert stored["version"] == 1
    assert stored["attributes"] == fields(60)

    fewer = {**body, "attributes": {"f000": None, **{f"g{i:03d}": "y" for i in range(41)}}}
    assert (await api.post("/entities", json=fewer)).status_code == 200  # 100 once merged


async def test_state_values_are_limited_to_32_kib(api: Api) -> None:
    assert (await create(api, "p-1")).status_code == 201
    huge = "x" * (32 * KIB)
    message = detail(
        await api.put("/entities/p-1/state/loyalty_tier", json={"value": huge}), "value", "too_large"
    )
    assert "32 KiB" in message
    error_of(await api.get("/entities/p-1/state/loyalty_tier"), 404, "state_not_found")
    assert (await api.put("/entities/p-1/state/loyalty_tier", json={"value": "gold"})).status_code == 200


async def test_ids_and_nesting_have_named_limits(api: Api) -> None:
    long_id = {"externalId": "x" * 257, "type": "player"}
    assert "256" in detail(await api.post("/entities", json=long_id), "externalId", "invalid_identifier")
    assert (await create(api, "p-1")).status_code == 201
    deep: Any = "leaf"
    for _ in range(40):
        deep = {"d": deep}
    response = await api.post("/entities/p-1/events", json={"type": "support", "data": {"deep": deep}})
    error = error_of(response, 422, "validation_error")
    assert any("nested deeper than" in d["message"] for d in error["details"]), error


async def test_in_a_batch_an_item_over_a_limit_fails_alone(api: Api, services: Services) -> None:
    assert (await create(api, "p-1")).status_code == 201
    items = [
        {"externalId": "p-1", "type": "support", "eventId": "ok-1", "data": {"topic": "a"}},
        {"externalId": "p-1", "type": "support", "eventId": "big", "data": padded(32 * KIB + 1)},
        {"externalId": "p-1", "type": "support", "eventId": "wide", "data": fields(101)},
        {"externalId": "p-1", "type": "support", "eventId": "ok-2", "data": padded(32 * KIB)},
    ]
    response = await api.post("/batch/events", json={"events": items})
    assert response.status_code == 202, response.text
    await drain(services)
    job = (await api.get(f"/batch/jobs/{response.json()['jobId']}")).json()
    assert (job["status"], job["succeeded"], job["failed"]) == ("completed", 2, 2)
    assert [(e["index"], e["code"]) for e in job["errors"]] == [(1, "too_large"), (2, "too_many_fields")]
    assert "32 KiB" in job["errors"][0]["message"]
    stored = [
        e["eventId"] for e in (await api.get("/entities/p-1/events", params={"order": "asc"})).json()["data"]
    ]
    assert stored == ["ok-1", "ok-2"]

    states = [
        {"externalId": "p-1", "key": "loyalty_tier", "value": "x" * (32 * KIB)},
        {"externalId": "p-1", "key": "kyc_status", "value": "verified"},
    ]
    response = await api.post("/batch/states", json={"states": states})
    await drain(services)
    job = (await api.get(f"/batch/jobs/{response.json()['jobId']}")).json()
    assert [(e["index"], e["code"]) for e in job["errors"]] == [(0, "too_large")]
    assert job["succeeded"] == 1
