"""Workspace isolation for every route under /operator-data-api (CONTRACT.md, "Base path, formats, auth").

An owner writes data with its live key. An intruder, either another operator's
live key or the owner's own test key (Stripe-style test mode), must not be able
to see, change or even detect it through any route: reads answer 404 exactly
as for an id that never existed, writes of the same ids create independent
data, and the owner's data is unchanged afterwards.

Each route has one case in ``CASES``; ``test_every_route_has_an_isolation_case``
enumerates the app's routes, so a new route cannot be added without one.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from onehazel.api.app import BASE, create_app
from onehazel.services.auth import CreatedOperator
from onehazel.services.container import Services
from tests.conftest import Api

INTRUDERS = ["other_operator", "own_test_key"]
OWNER_TS = "2026-11-27T10:00:00Z"
OLDER_TS = "2026-01-01T00:00:00Z"


@dataclass
class Scene:
    """The owner's data, and an intruder in another workspace with the same template."""

    owner: Api
    intruder: Api
    services: Services
    external_id: str
    event_id: str
    email: str
    secret: str
    """A non-PII attribute value that only the owner's workspace holds."""

    @property
    def path(self) -> str:
        return f"/entities/{self.external_id}"

    @property
    def hidden(self) -> list[str]:
        return [self.email, self.secret]


@pytest.fixture(params=INTRUDERS)
async def scene(
    request: pytest.FixtureRequest, api: Api, operator: CreatedOperator, services: Services
) -> Scene:
    if request.param == "own_test_key":
        intruder = api.as_key(operator.test_key)
    else:
        other = await services.auth.create_operator(f"intruder-{uuid.uuid4().hex[:8]}")
        intruder = api.as_key(other.live_key)
    configured = await intruder.put("/settings", json={"templateId": "tpl_igaming"})
    assert configured.status_code == 200, configured.text

    uid = uuid.uuid4().hex[:12]
    s = Scene(
        owner=api,
        intruder=intruder,
        services=services,
        external_id=f"iso-{uid}",
        event_id=f"evt-iso-{uid}",
        email=f"owner-{uid}@example.com",
        secret=f"owner-secret-{uid}",
    )
    created = await api.post(
        "/entities",
        json={
            "externalId": s.external_id,
            "type": "player",
            "attributes": {"email": s.email, "country": "MT", "segment": s.secret},
        },
    )
    assert created.status_code == 201, created.text
    event = await api.post(f"{s.path}/events", json=owner_event(s))
    assert event.status_code == 201, event.text
    state = await api.put(f"{s.path}/state/balance", json={"value": "25.00", "timestamp": OWNER_TS})
    assert state.status_code == 200, state.text
    return s


def owner_event(s: Scene) -> dict[str, Any]:
    return {
        "eventId": s.event_id,
        "type": "transaction",
        "data": {"type": "deposit", "amount": "25.00", "currency": "EUR", "method": s.secret},
        "timestamp": OWNER_TS,
    }


def assert_error(response: httpx.Response, status: int, code: str, hidden: Sequence[str] = ()) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    for value in hidden:
        assert value not in response.text


async def snapshot(s: Scene) -> dict[str, Any]:
    """Everything the owner can read about its entity."""
    entity = await s.owner.get(s.path)
    events = await s.owner.get(f"{s.path}/events")
    states = await s.owner.get(f"{s.path}/state")
    assert (entity.status_code, events.status_code, states.status_code) == (200, 200, 200)
    return {"entity": entity.json(), "events": events.json(), "states": states.json()}


async def assert_owner_untouched(s: Scene, before: dict[str, Any] | None = None) -> None:
    now = await snapshot(s)
    entity = now["entity"]
    assert entity["type"] == "player"
    assert entity["version"] == 1
    assert entity["attributes"] == {"email": s.email, "country": "MT", "segment": s.secret}
    assert [e["eventId"] for e in now["events"]["data"]] == [s.event_id]
    assert now["events"]["data"][0]["data"]["amount"] == "25.00"
    assert now["states"]["states"]["balance"]["value"] == "25.00"
    assert now["states"]["states"]["balance"]["timestamp"] == OWNER_TS
    if before is not None:
        assert now == before


async def intruder_creates_same_id(s: Scene) -> None:
    created = await s.intruder.post(
        "/entities", json={"externalId": s.external_id, "type": "player", "attributes": {"country": "DE"}}
    )
    assert created.status_code == 201, created.text


async def drain(services: Services) -> None:
    """Run the batch worker until no job is runnable (the API only queues)."""
    from onehazel.jobs.worker import Worker

    worker = Worker(services)
    while await worker.run_once():
        pass


async def job_items(api: Api, job_id: str) -> list[dict[str, Any]]:
    job = await api.get(f"/batch/jobs/{job_id}")
    assert job.status_code == 200, job.text
    assert job.json()["status"] == "completed", job.text
    items = await api.get(f"/batch/jobs/{job_id}/items")
    assert items.status_code == 200, items.text
    return list(items.json()["data"])


Case = Callable[[Scene], Awaitable[None]]
CASES: dict[tuple[str, str], Case] = {}


def isolation(method: str, path: str) -> Callable[[Case], Case]:
    def register(case: Case) -> Case:
        assert (method, path) not in CASES, f"two cases for {method} {path}"
        CASES[(method, path)] = case
        return case

    return register


# --- templates and settings -------------------------------------------------------------------


@isolation("GET", "/templates")
async def templates_are_global_and_reveal_nothing(s: Scene) -> None:
    mine, theirs = await s.owner.get("/templates"), await s.intruder.get("/templates")
    assert mine.status_code == theirs.status_code == 200
    assert mine.json() == theirs.json()
    assert "tpl_igaming" in [t["id"] for t in theirs.json()["data"]]


@isolation("GET", "/templates/{templateId}")
async def template_is_the_same_for_every_workspace(s: Scene) -> None:
    mine, theirs = await s.owner.get("/templates/tpl_igaming"), await s.intruder.get("/templates/tpl_igaming")
    assert mine.status_code == theirs.status_code == 200
    assert mine.json() == theirs.json()
    assert_error(await s.intruder.get("/templates/tpl_nope"), 404, "template_not_found")


@isolation("GET", "/settings")
async def settings_are_read_per_workspace(s: Scene) -> None:
    changed = await s.owner.put("/settings", json={"retention": {"eventsDays": 90, "deletedEntitiesDays": 7}})
    assert changed.status_code == 200
    theirs = await s.intruder.get("/settings")
    assert theirs.status_code == 200
    assert theirs.json()["retention"] == {"eventsDays": None, "deletedEntitiesDays": 30}
    assert theirs.json()["templateId"] == "tpl_igaming"
    mine = await s.owner.get("/settings")
    assert mine.json()["retention"] == {"eventsDays": 90, "deletedEntitiesDays": 7}


@isolation("PUT", "/settings")
async def settings_are_written_per_workspace(s: Scene) -> None:
    before = (await s.owner.get("/settings")).json()
    unset = await s.intruder.put("/settings", json={"templateId": None, "retention": {"eventsDays": 1}})
    assert unset.status_code == 200
    assert unset.json()["templateId"] is None
    assert (await s.owner.get("/settings")).json() == before
    # the owner can still write: its template was not unset by the other workspace
    assert (await s.owner.post(f"{s.path}/events", json={"type": "support", "data": {}})).status_code == 201
    assert_error(
        await s.intruder.post("/entities", json={"externalId": "x", "type": "player"}),
        409,
        "template_not_configured",
    )


# --- entities ---------------------------------------------------------------------------------


@isolation("POST", "/entities")
async def upsert_of_the_same_external_id_creates_an_independent_entity(s: Scene) -> None:
    # Another type must not be an entity_type_conflict: that would reveal the owner's entity.
    theirs = await s.intruder.post(
        "/entities", json={"externalId": s.external_id, "type": "game", "attributes": {"name": "Slots"}}
    )
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["version"] == 1
    assert theirs.json()["attributes"] == {"name": "Slots"}
    again = await s.intruder.post(
        "/entities", json={"externalId": s.external_id, "type": "game", "attributes": {"provider": "X"}}
    )
    assert again.status_code == 200
    assert again.json()["attributes"] == {"name": "Slots", "provider": "X"}
    assert (await s.intruder.get(s.path)).json()["type"] == "game"
    await assert_owner_untouched(s)


@isolation("GET", "/entities")
async def listing_shows_only_the_callers_workspace(s: Scene) -> None:
    empty = await s.intruder.get("/entities", params={"limit": 1000})
    assert empty.status_code == 200
    assert empty.json() == {"data": [], "nextCursor": None}
    assert (await s.intruder.get("/entities", params={"type": "player"})).json()["data"] == []

    # a cursor from the owner's listing pages only through the intruder's own data
    extra = await s.owner.post("/entities", json={"externalId": f"{s.external_id}-2", "type": "player"})
    assert extra.status_code == 201
    first_page = (await s.owner.get("/entities", params={"limit": 1})).json()
    assert first_page["nextCursor"] is not None
    await intruder_creates_same_id(s)
    paged = await s.intruder.get("/entities", params={"cursor": first_page["nextCursor"], "limit": 1000})
    assert paged.status_code == 200
    for entity in paged.json()["data"]:
        assert entity["attributes"] == {"country": "DE"}
    listed = (await s.intruder.get("/entities", params={"limit": 1000})).json()["data"]
    assert [(e["externalId"], e["attributes"]) for e in listed] == [(s.external_id, {"country": "DE"})]
    for value in s.hidden:
        assert value not in paged.text

    owner_ids = [
        e["externalId"] for e in (await s.owner.get("/entities", params={"limit": 1000})).json()["data"]
    ]
    assert sorted(owner_ids) == sorted([s.external_id, f"{s.external_id}-2"])


@isolation("GET", "/entities/{externalId}")
async def reading_the_owners_entity_is_a_404(s: Scene) -> None:
    assert_error(await s.intruder.get(s.path), 404, "entity_not_found", s.hidden)
    await intruder_creates_same_id(s)
    theirs = (await s.intruder.get(s.path)).json()
    assert theirs["attributes"] == {"country": "DE"}
    await assert_owner_untouched(s)


@isolation("DELETE", "/entities/{externalId}")
async def deleting_the_owners_entity_is_a_404_and_changes_nothing(s: Scene) -> None:
    before = await snapshot(s)
    assert_error(await s.intruder.delete(s.path), 404, "entity_not_found", s.hidden)
    await assert_owner_untouched(s, before)
    # deleting one's own entity of the same id leaves the owner's alone
    await intruder_creates_same_id(s)
    assert (await s.intruder.delete(s.path)).status_code == 200
    assert_error(await s.intruder.get(s.path), 410, "entity_deleted")
    await assert_owner_untouched(s, before)
    assert [
        e["externalId"] for e in (await s.owner.get("/entities", params={"limit": 1000})).json()["data"]
    ] == [s.external_id]


@isolation("GET", "/entities/{externalId}/export")
async def exporting_the_owners_entity_is_a_404(s: Scene) -> None:
    assert_error(await s.intruder.get(f"{s.path}/export"), 404, "entity_not_found", s.hidden)
    await intruder_creates_same_id(s)
    theirs = await s.intruder.get(f"{s.path}/export")
    assert theirs.status_code == 200, theirs.text
    lines = [line for line in theirs.text.splitlines() if line]
    assert len(lines) == 2  # their entity and the end line: no event or state of the owner
    assert '"country":"DE"' in lines[0]
    for value in [*s.hidden, s.event_id, "25.00"]:
        assert value not in theirs.text
    mine = await s.owner.get(f"{s.path}/export")
    assert s.email in mine.text
    assert s.event_id in mine.text
    await assert_owner_untouched(s)


# --- events -----------------------------------------------------------------------------------


@isolation("POST", "/entities/{externalId}/events")
async def recording_an_event_for_the_owners_entity_is_a_404(s: Scene) -> None:
    before = await snapshot(s)
    assert_error(
        await s.intruder.post(f"{s.path}/events", json={"type": "support", "data": {"topic": "x"}}),
        404,
        "entity_not_found",
        s.hidden,
    )
    # the owner's eventId, replayed verbatim, is not a duplicate in another workspace
    assert_error(
        await s.intruder.post(f"{s.path}/events", json=owner_event(s)), 404, "entity_not_found", s.hidden
    )
    await assert_owner_untouched(s, before)

    await intruder_creates_same_id(s)
    different = {"eventId": s.event_id, "type": "support", "data": {"topic": "refund"}}
    theirs = await s.intruder.post(f"{s.path}/events", json=different)
    assert theirs.status_code == 201, theirs.text  # not 409 event_id_conflict: ids are per workspace
    assert "duplicate" not in theirs.json()
    replay = await s.intruder.post(f"{s.path}/events", json=different)
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True
    mine = await s.owner.post(f"{s.path}/events", json=owner_event(s))
    assert mine.status_code == 200
    assert mine.json()["duplicate"] is True
    assert mine.json()["type"] == "transaction"
    await assert_owner_untouched(s, before)


@isolation("GET", "/entities/{externalId}/events")
async def listing_the_owners_events_is_a_404(s: Scene) -> None:
    assert_error(await s.intruder.get(f"{s.path}/events"), 404, "entity_not_found", s.hidden)
    assert_error(
        await s.intruder.get(f"{s.path}/events", params={"order": "asc", "type": "transaction"}),
        404,
        "entity_not_found",
        s.hidden,
    )
    await intruder_creates_same_id(s)
    theirs = await s.intruder.get(f"{s.path}/events")
    assert theirs.status_code == 200
    assert theirs.json() == {"data": [], "nextCursor": None}


# --- states -----------------------------------------------------------------------------------


@isolation("PUT", "/entities/{externalId}/state/{key}")
async def setting_a_state_of_the_owners_entity_is_a_404(s: Scene) -> None:
    before = await snapshot(s)
    assert_error(
        await s.intruder.put(f"{s.path}/state/balance", json={"value": "999.00"}), 404, "entity_not_found"
    )
    await assert_owner_untouched(s, before)
    # last-writer-wins is per workspace: an older write than the owner's still applies here
    await intruder_creates_same_id(s)
    theirs = await s.intruder.put(f"{s.path}/state/balance", json={"value": "1.00", "timestamp": OLDER_TS})
    assert theirs.status_code == 200
    assert theirs.json()["applied"] is True
    assert theirs.json()["value"] == "1.00"
    await assert_owner_untouched(s, before)


@isolation("GET", "/entities/{externalId}/state")
async def listing_the_owners_states_is_a_404(s: Scene) -> None:
    assert_error(await s.intruder.get(f"{s.path}/state"), 404, "entity_not_found", ["25.00"])
    await intruder_creates_same_id(s)
    theirs = await s.intruder.get(f"{s.path}/state")
    assert theirs.status_code == 200
    assert theirs.json() == {"externalId": s.external_id, "states": {}}


@isolation("GET", "/entities/{externalId}/state/{key}")
async def reading_the_owners_state_is_a_404(s: Scene) -> None:
    assert_error(await s.intruder.get(f"{s.path}/state/balance"), 404, "entity_not_found", ["25.00"])
    await intruder_creates_same_id(s)
    assert_error(await s.intruder.get(f"{s.path}/state/balance"), 404, "state_not_found", ["25.00"])
    assert (await s.owner.get(f"{s.path}/state/balance")).json()["value"] == "25.00"


# --- batch ------------------------------------------------------------------------------------


async def owner_job(s: Scene, *, key: str | None = None) -> str:
    headers = {"Idempotency-Key": key} if key else {}
    body = {"events": [{"externalId": s.external_id, "type": "support", "data": {"topic": s.secret}}]}
    accepted = await s.owner.post("/batch/events", json=body, headers=headers)
    assert accepted.status_code == 202, accepted.text
    return str(accepted.json()["jobId"])


@isolation("POST", "/batch/entities")
async def batch_upsert_of_the_same_external_id_is_independent(s: Scene) -> None:
    body = {"entities": [{"externalId": s.external_id, "type": "game", "attributes": {"name": "Slots"}}]}
    dry = await s.intruder.post("/batch/entities", params={"dryRun": "true"}, json=body)
    assert dry.status_code == 200, dry.text
    assert [r["status"] for r in dry.json()["results"]] == ["succeeded"]
    assert dry.json()["results"][0]["created"] is True

    # an Idempotency-Key is per workspace too: the owner's key is not a conflict here
    key = f"idem-{uuid.uuid4().hex}"
    mine = await owner_job(s, key=key)
    accepted = await s.intruder.post("/batch/entities", json=body, headers={"Idempotency-Key": key})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["jobId"] != mine
    await drain(s.services)

    (item,) = await job_items(s.intruder, accepted.json()["jobId"])
    assert (item["status"], item["created"]) == ("succeeded", True)
    assert (await s.intruder.get(s.path)).json()["type"] == "game"
    entity = (await s.owner.get(s.path)).json()
    assert entity["type"] == "player"
    assert entity["attributes"] == {"email": s.email, "country": "MT", "segment": s.secret}


@isolation("POST", "/batch/events")
async def batch_events_for_the_owners_entity_fail_as_not_found(s: Scene) -> None:
    before = await snapshot(s)
    body = {"events": [{**owner_event(s), "externalId": s.external_id}]}
    dry = await s.intruder.post("/batch/events", params={"dryRun": "true"}, json=body)
    assert dry.status_code == 200, dry.text
    assert [(r["status"], r["error"]["code"]) for r in dry.json()["results"]] == [
        ("failed", "entity_not_found")
    ]

    accepted = await s.intruder.post("/batch/events", json=body)
    assert accepted.status_code == 202, accepted.text
    await drain(s.services)
    (item,) = await job_items(s.intruder, accepted.json()["jobId"])
    assert (item["status"], item["error"]["code"]) == ("failed", "entity_not_found")
    for value in s.hidden:
        assert value not in str(item)
    await assert_owner_untouched(s, before)

    # once the intruder has its own entity, the owner's eventId is simply new there
    await intruder_creates_same_id(s)
    other = {"events": [{"externalId": s.external_id, "eventId": s.event_id, "type": "support", "data": {}}]}
    accepted = await s.intruder.post("/batch/events", json=other)
    await drain(s.services)
    (item,) = await job_items(s.intruder, accepted.json()["jobId"])
    assert (item["status"], item["eventId"]) == ("succeeded", s.event_id)
    await assert_owner_untouched(s, before)


@isolation("POST", "/batch/states")
async def batch_states_for_the_owners_entity_fail_as_not_found(s: Scene) -> None:
    before = await snapshot(s)
    body = {"states": [{"externalId": s.external_id, "key": "balance", "value": "999.00"}]}
    dry = await s.intruder.post("/batch/states", params={"dryRun": "true"}, json=body)
    assert dry.status_code == 200, dry.text
    assert [(r["status"], r["error"]["code"]) for r in dry.json()["results"]] == [
        ("failed", "entity_not_found")
    ]
    accepted = await s.intruder.post("/batch/states", json=body)
    assert accepted.status_code == 202, accepted.text
    await drain(s.services)
    (item,) = await job_items(s.intruder, accepted.json()["jobId"])
    assert (item["status"], item["error"]["code"]) == ("failed", "entity_not_found")
    await assert_owner_untouched(s, before)


@isolation("GET", "/batch/jobs/{jobId}")
async def reading_the_owners_job_is_a_404(s: Scene) -> None:
    job_id = await owner_job(s)
    assert_error(await s.intruder.get(f"/batch/jobs/{job_id}"), 404, "job_not_found", s.hidden)
    await drain(s.services)
    assert_error(await s.intruder.get(f"/batch/jobs/{job_id}"), 404, "job_not_found", s.hidden)
    mine = await s.owner.get(f"/batch/jobs/{job_id}")
    assert mine.status_code == 200
    assert (mine.json()["jobId"], mine.json()["status"], mine.json()["succeeded"]) == (job_id, "completed", 1)


@isolation("GET", "/batch/jobs/{jobId}/items")
async def listing_the_owners_job_items_is_a_404(s: Scene) -> None:
    job_id = await owner_job(s)
    await drain(s.services)
    for params in ({}, {"status": "succeeded"}, {"status": "failed", "limit": 1}):
        response = await s.intruder.get(f"/batch/jobs/{job_id}/items", params=params)
        assert_error(response, 404, "job_not_found", [s.external_id, *s.hidden])
    mine = await s.owner.get(f"/batch/jobs/{job_id}/items")
    assert [i["externalId"] for i in mine.json()["data"]] == [s.external_id]


# --- audit ------------------------------------------------------------------------------------


@isolation("GET", "/audit")
async def the_audit_log_is_per_workspace(s: Scene) -> None:
    assert (await s.owner.get(f"{s.path}/export")).status_code == 200  # audited: entity.export
    owner_key = (await s.services.auth.authenticate(f"Bearer {s.owner.key}")).key_id
    theirs = await s.intruder.get("/audit", params={"limit": 1000})
    assert theirs.status_code == 200
    for value in [s.external_id, owner_key, *s.hidden]:
        assert value not in theirs.text
    # a cursor from the owner's log pages only through the intruder's own records
    mine = await s.owner.get("/audit", params={"limit": 1})
    paged = await s.intruder.get("/audit", params={"cursor": mine.json()["nextCursor"], "limit": 1000})
    assert paged.status_code == 200
    assert s.external_id not in paged.text
    assert {r["id"] for r in paged.json()["data"]} <= {r["id"] for r in theirs.json()["data"]}
    # and what the intruder does is not in the owner's log
    await intruder_creates_same_id(s)
    assert (await s.intruder.delete(s.path)).status_code == 200
    owner_log = (await s.owner.get("/audit", params={"limit": 1000})).json()["data"]
    assert [r["action"] for r in owner_log if r["target"] == s.external_id] == ["entity.export"]


# --- analytics --------------------------------------------------------------------------------

ANALYTICS_RANGE = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}


@isolation("GET", "/analytics/events")
async def event_counts_are_per_workspace(s: Scene) -> None:
    mine = await s.owner.get("/analytics/events", params=ANALYTICS_RANGE)
    assert mine.status_code == 200, mine.text
    assert mine.json()["data"] == [{"type": "transaction", "count": 1}]
    theirs = await s.intruder.get("/analytics/events", params={**ANALYTICS_RANGE, "groupBy": "type,day"})
    assert theirs.status_code == 200, theirs.text
    assert theirs.json()["data"] == []
    await intruder_creates_same_id(s)
    event = {"type": "support", "data": {}, "timestamp": OWNER_TS}
    assert (await s.intruder.post(f"{s.path}/events", json=event)).status_code == 201
    assert (await s.owner.get("/analytics/events", params=ANALYTICS_RANGE)).json() == mine.json()


@isolation("GET", "/analytics/transactions")
async def transaction_sums_are_per_workspace(s: Scene) -> None:
    mine = await s.owner.get("/analytics/transactions", params=ANALYTICS_RANGE)
    assert mine.status_code == 200, mine.text
    assert mine.json()["data"] == [{"currency": "EUR", "count": 1, "sum": "25.00"}]
    theirs = await s.intruder.get("/analytics/transactions", params=ANALYTICS_RANGE)
    assert theirs.status_code == 200, theirs.text
    assert theirs.json()["data"] == []
    await intruder_creates_same_id(s)
    assert (await s.intruder.post(f"{s.path}/events", json=owner_event(s))).status_code == 201
    again = await s.intruder.get("/analytics/transactions", params=ANALYTICS_RANGE)
    assert again.json()["data"] == [{"currency": "EUR", "count": 1, "sum": "25.00"}]
    assert (await s.owner.get("/analytics/transactions", params=ANALYTICS_RANGE)).json() == mine.json()
    await assert_owner_untouched(s)


@isolation("GET", "/analytics/entities")
async def entity_counts_are_per_workspace(s: Scene) -> None:
    theirs = await s.intruder.get("/analytics/entities", params={"groupBy": "segment"})
    assert theirs.status_code == 200, theirs.text
    assert theirs.json()["data"] == []
    for value in s.hidden:
        assert value not in theirs.text
    mine = await s.owner.get("/analytics/entities", params={"groupBy": "segment"})
    assert mine.json()["data"] == [{"segment": s.secret, "count": 1}]
    await intruder_creates_same_id(s)
    counted = await s.intruder.get("/analytics/entities")
    assert counted.json()["data"] == [{"type": "player", "count": 1}]
    assert (await s.owner.get("/analytics/entities", params={"groupBy": "segment"})).json() == mine.json()


# --- the tests --------------------------------------------------------------------------------


async def _never_opened() -> Services:
    raise AssertionError("the route table is read without starting the app")


def app_routes() -> set[tuple[str, str]]:
    """(method, path relative to the base) of every route the app serves or documents under the base."""
    app = create_app(_never_opened)
    served = {
        (method, route.path[len(BASE) :])
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith(BASE + "/")
        for method in route.methods
        if method != "HEAD"
    }
    documented = {
        (method.upper(), path[len(BASE) :])
        for path, operations in app.openapi()["paths"].items()
        if path.startswith(BASE + "/")
        for method in operations
    }
    return served | documented


def test_every_route_has_an_isolation_case() -> None:
    routes = app_routes()
    assert ("GET", "/entities/{externalId}") in routes, f"the route table was not read: {routes}"
    missing = sorted(routes - CASES.keys())
    assert not missing, f"routes without a workspace-isolation case in {__name__}: {missing}"
    stale = sorted(CASES.keys() - routes)
    assert not stale, f"isolation cases for routes that no longer exist: {stale}"


@pytest.mark.parametrize("route", sorted(CASES), ids=[f"{m} {p}" for m, p in sorted(CASES)])
async def test_route_is_workspace_isolated(route: tuple[str, str], scene: Scene) -> None:
    await CASES[route](scene)
