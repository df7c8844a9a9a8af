"""Retention as an API client sees it: the settings that drive it, and what a purge leaves.

The sweep itself (chunks, concurrency, copies) is tested in
tests/integration/test_retention.py; here every check goes through HTTP.
"""

from __future__ import annotations

from typing import Any

import pytest

from onehazel.domain.values import now_micros
from onehazel.services.container import Services
from onehazel.services.retention import RetentionService
from tests.conftest import Api

DAY = 86_400 * 1_000_000


@pytest.mark.parametrize(
    ("retention", "accepted"),
    [
        ({"eventsDays": 36_500}, True),
        ({"eventsDays": 36_501}, False),
        ({"deletedEntitiesDays": 3_650}, True),
        ({"deletedEntitiesDays": 3_651}, False),
        ({"eventsDays": -30}, False),
        ({"deletedEntitiesDays": -1}, False),
        ({"eventsDays": 1e308}, False),
        ({"deletedEntitiesDays": 2**63}, False),
    ],
    ids=str,
)
async def test_retention_limits(bare_api: Api, retention: dict[str, Any], accepted: bool) -> None:
    response = await bare_api.put("/settings", json={"retention": retention})

    if accepted:
        assert response.status_code == 200, response.text
        (field,) = retention
        assert response.json()["retention"][field] == retention[field]
        return
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    (field,) = retention
    assert [(d["path"], d["code"]) for d in error["details"]] == [
        (f"retention.{field}", "invalid_field_value")
    ]
    assert (await bare_api.get("/settings")).json()["retention"] == {
        "eventsDays": None,
        "deletedEntitiesDays": 30,
    }


async def _purge(services: Services, *, after_days: float = 0, suppression_days: float = 365) -> None:
    sweep = RetentionService(services.core, suppression_days=suppression_days)
    await sweep.sweep(now=now_micros() + int(after_days * DAY))


async def test_a_purged_entity_is_gone_from_every_route(api: Api, services: Services) -> None:
    assert (await api.put("/settings", json={"retention": {"deletedEntitiesDays": 0}})).status_code == 200
    for external_id in ("p-gone", "p-kept"):
        created = await api.post(
            "/entities",
            json={
                "externalId": external_id,
                "type": "player",
                "attributes": {"email": f"{external_id}@x.io"},
            },
        )
        assert created.status_code == 201, created.text
        logged = await api.post(
            f"/entities/{external_id}/events", json={"type": "session", "data": {"ip_address": "192.0.2.4"}}
        )
        assert logged.status_code == 201, logged.text
    deleted = (await api.delete("/entities/p-gone")).json()

    await _purge(services)

    for method, path, body in [
        ("GET", "/entities/p-gone", None),
        ("GET", "/entities/p-gone/events", None),
        ("GET", "/entities/p-gone/state", None),
        ("GET", "/entities/p-gone/export", None),
        ("POST", "/entities", {"externalId": "p-gone", "type": "player", "attributes": {}}),
        ("POST", "/entities/p-gone/events", {"type": "session", "data": {}}),
        ("PUT", "/entities/p-gone/state/kyc_status", {"value": "verified"}),
    ]:
        response = await api.request(method, path, json=body)
        assert response.status_code == 410, (method, path, response.text)
        assert response.json()["error"]["code"] == "entity_deleted"
    assert (await api.delete("/entities/p-gone")).json() == deleted
    listing = (await api.get("/entities", params={"limit": 1000})).json()["data"]
    assert [e["externalId"] for e in listing] == ["p-kept"]
    kept = (await api.get("/entities/p-kept")).json()
    assert kept["attributes"]["email"] == "p-kept@x.io"
    assert len((await api.get("/entities/p-kept/events")).json()["data"]) == 1


async def test_after_the_suppression_period_the_external_id_is_new_again(
    api: Api, services: Services
) -> None:
    assert (await api.put("/settings", json={"retention": {"deletedEntitiesDays": 0}})).status_code == 200
    body = {"externalId": "p-1", "type": "player", "attributes": {"email": "first@x.io", "country": "MT"}}
    assert (await api.post("/entities", json=body)).status_code == 201
    assert (await api.delete("/entities/p-1")).status_code == 200
    await _purge(services, suppression_days=30)

    await _purge(services, after_days=29, suppression_days=30)
    assert (await api.get("/entities/p-1")).status_code == 410
    await _purge(services, after_days=31, suppression_days=30)

    assert (await api.get("/entities/p-1")).status_code == 404
    again = await api.post("/entities", json={**body, "attributes": {"email": "second@x.io"}})
    assert again.status_code == 201, again.text
    assert again.json()["attributes"] == {"email": "second@x.io"}
    assert (await api.get("/entities/p-1")).json()["attributes"] == {"email": "second@x.io"}


async def test_another_workspaces_deletion_setting_does_not_purge_here(
    api: Api, services: Services, operator: Any
) -> None:
    """The purge date is the deleting workspace's: 0 days there, the default 30 here."""
    other = api.as_key(operator.test_key)
    assert (await other.put("/settings", json={"templateId": "tpl_igaming"})).status_code == 200
    assert (await other.put("/settings", json={"retention": {"deletedEntitiesDays": 0}})).status_code == 200
    for client in (api, other):
        body = {"externalId": "p-1", "type": "player", "attributes": {"email": "x@x.io"}}
        assert (await client.post("/entities", json=body)).status_code == 201
        assert (await client.delete("/entities/p-1")).status_code == 200

    await _purge(services, after_days=29, suppression_days=0)
    await _purge(services, after_days=29, suppression_days=0)

    assert (await other.get("/entities/p-1")).status_code == 404  # purged and released
    assert (await api.get("/entities/p-1")).status_code == 410  # still within its 30 days
