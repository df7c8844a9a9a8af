"""GET /templates, GET/PUT /settings through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from onehazel.services.auth import CreatedOperator
from tests.conftest import Api
from tests.helpers import detail_codes, error_of

FIELD_TYPES = {"string", "number", "decimal", "integer", "boolean", "timestamp", "object", "array", "any"}
REQUIRED = {
    "transaction": ["type", "amount", "currency"],
    "game_activity": ["game_id", "bet_amount"],
    "session": [],
    "bonus": [],
    "block": [],
    "support": [],
    "affiliate": [],
}
PLAYER_PII = {"email", "first_name", "last_name", "date_of_birth", "phone", "address"}
DEFAULTS = {
    "templateId": None,
    "retention": {"eventsDays": None, "deletedEntitiesDays": 30},
    "updatedAt": None,
}


async def igaming(api: Api) -> dict[str, Any]:
    response = await api.get("/templates/tpl_igaming")
    assert response.status_code == 200, response.text
    return dict(response.json())


# --- templates ----------------------------------------------------------------------------------


async def test_templates_list_includes_igaming(bare_api: Api) -> None:
    response = await bare_api.get("/templates")
    assert response.status_code == 200
    templates = response.json()["data"]
    ids = [t["id"] for t in templates]
    assert "tpl_igaming" in ids
    listed = next(t for t in templates if t["id"] == "tpl_igaming")
    assert listed == await igaming(bare_api)


async def test_template_shape(bare_api: Api) -> None:
    template = await igaming(bare_api)
    assert template["id"] == "tpl_igaming"
    assert isinstance(template["name"], str)
    assert template["name"]
    assert isinstance(template["version"], int)
    specs: list[dict[str, Any]] = []
    for entity_type in template["entityTypes"].values():
        specs.extend(entity_type["fields"].values())
    for event_type in template["eventTypes"].values():
        assert isinstance(event_type["description"], str)
        assert set(event_type["requiredFields"]) <= set(event_type["fields"])
        specs.extend(event_type["fields"].values())
    for state_key in template["stateKeys"].values():
        assert isinstance(state_key["description"], str)
        specs.append(state_key["value"])
    for spec in specs:
        assert spec["type"] in FIELD_TYPES
        assert isinstance(spec["pii"], bool)
        if "enum" in spec:
            assert isinstance(spec["enum"], list)


async def test_igaming_has_exactly_the_contract_types(bare_api: Api) -> None:
    template = await igaming(bare_api)
    assert set(template["entityTypes"]) == {"player", "operator", "game"}
    assert set(template["eventTypes"]) == set(REQUIRED)
    for name, required in REQUIRED.items():
        assert sorted(template["eventTypes"][name]["requiredFields"]) == sorted(required), name
    assert set(template["stateKeys"]) == {"balance", "kyc_status", "risk_score", "loyalty_tier"}


async def test_igaming_pii_flags(bare_api: Api) -> None:
    template = await igaming(bare_api)
    player = template["entityTypes"]["player"]["fields"]
    for name in PLAYER_PII:
        assert player[name]["pii"] is True, name
    assert template["eventTypes"]["session"]["fields"]["ip_address"]["pii"] is True
    # money and ids are not PII (they must stay aggregatable)
    assert template["eventTypes"]["transaction"]["fields"]["amount"]["pii"] is False
    assert player["country"]["pii"] is False


async def test_igaming_money_fields_are_decimal(bare_api: Api) -> None:
    template = await igaming(bare_api)
    events = template["eventTypes"]
    assert events["transaction"]["fields"]["amount"]["type"] == "decimal"
    assert events["game_activity"]["fields"]["bet_amount"]["type"] == "decimal"
    assert events["game_activity"]["fields"]["win_amount"]["type"] == "decimal"
    assert template["stateKeys"]["balance"]["value"]["type"] == "decimal"
    assert "verified" in template["stateKeys"]["kyc_status"]["value"]["enum"]


@pytest.mark.parametrize("template_id", ["tpl_nope", "TPL_IGAMING", "tpl_igaming2"])
async def test_unknown_template_is_404(bare_api: Api, template_id: str) -> None:
    error_of(await bare_api.get(f"/templates/{template_id}"), 404, "template_not_found")


async def test_templates_need_a_key(bare_api: Api) -> None:
    error_of(await bare_api.as_key(None).get("/templates"), 401, "unauthorized")
    error_of(await bare_api.as_key(None).get("/templates/tpl_igaming"), 401, "unauthorized")


# --- settings -----------------------------------------------------------------------------------


async def test_settings_defaults(bare_api: Api) -> None:
    response = await bare_api.get("/settings")
    assert response.status_code == 200
    assert response.json() == DEFAULTS


async def test_choose_template(bare_api: Api) -> None:
    response = await bare_api.put("/settings", json={"templateId": "tpl_igaming"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["templateId"] == "tpl_igaming"
    assert body["retention"] == DEFAULTS["retention"]
    assert body["updatedAt"].endswith("Z")
    assert (await bare_api.get("/settings")).json() == body


async def test_partial_updates_keep_other_fields(bare_api: Api) -> None:
    await bare_api.put("/settings", json={"templateId": "tpl_igaming"})
    events = await bare_api.put("/settings", json={"retention": {"eventsDays": 365}})
    assert events.status_code == 200, events.text
    assert events.json()["templateId"] == "tpl_igaming"
    assert events.json()["retention"] == {"eventsDays": 365, "deletedEntitiesDays": 30}
    deleted = await bare_api.put("/settings", json={"retention": {"deletedEntitiesDays": 7}})
    assert deleted.json()["retention"] == {"eventsDays": 365, "deletedEntitiesDays": 7}
    assert deleted.json()["templateId"] == "tpl_igaming"
    nothing = await bare_api.put("/settings", json={})
    assert nothing.status_code == 200
    assert nothing.json()["retention"] == {"eventsDays": 365, "deletedEntitiesDays": 7}
    forever = await bare_api.put("/settings", json={"retention": {"eventsDays": None}})
    assert forever.json()["retention"] == {"eventsDays": None, "deletedEntitiesDays": 7}
    stored = (await bare_api.get("/settings")).json()
    assert stored["templateId"] == "tpl_igaming"
    assert stored["retention"] == {"eventsDays": None, "deletedEntitiesDays": 7}


async def test_retention_bounds_that_are_accepted(bare_api: Api) -> None:
    response = await bare_api.put(
        "/settings", json={"retention": {"eventsDays": 1, "deletedEntitiesDays": 0}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["retention"] == {"eventsDays": 1, "deletedEntitiesDays": 0}


async def test_settings_affect_deletion_purge_date(api: Api) -> None:
    assert (await api.put("/settings", json={"retention": {"deletedEntitiesDays": 0}})).status_code == 200
    await api.post("/entities", json={"externalId": "p-1", "type": "player"})
    deleted = (await api.delete("/entities/p-1")).json()
    assert deleted["purgeAfter"] == deleted["deletedAt"]


async def test_unknown_template_id_is_422(bare_api: Api) -> None:
    response = await bare_api.put("/settings", json={"templateId": "tpl_casino"})
    error_of(response, 422, "validation_error")
    assert ("templateId", "unknown_template") in detail_codes(response)
    assert (await bare_api.get("/settings")).json() == DEFAULTS


async def test_template_can_be_unset_with_null(api: Api) -> None:
    response = await api.put("/settings", json={"templateId": None})
    assert response.status_code == 200
    assert response.json()["templateId"] is None
    error_of(
        await api.post("/entities", json={"externalId": "p-1", "type": "player"}),
        409,
        "template_not_configured",
    )


@pytest.mark.parametrize(
    "retention",
    [
        {"eventsDays": -1},
        {"eventsDays": 0},
        {"eventsDays": 10**9},
        {"eventsDays": "7"},
        {"eventsDays": 7.5},
        {"eventsDays": True},
        {"deletedEntitiesDays": -1},
        {"deletedEntitiesDays": 10**9},
        {"deletedEntitiesDays": None},
        {"deletedEntitiesDays": "30"},
    ],
)
async def test_bad_retention_is_422_and_changes_nothing(bare_api: Api, retention: dict[str, Any]) -> None:
    response = await bare_api.put("/settings", json={"templateId": "tpl_igaming", "retention": retention})
    error_of(response, 422, "validation_error")
    (field,) = retention
    assert [p for p, _ in detail_codes(response)] == [f"retention.{field}"]
    assert (await bare_api.get("/settings")).json() == DEFAULTS


@pytest.mark.parametrize(
    "body",
    [
        {"template": "tpl_igaming"},
        {"retention": {"eventDays": 3}},
        {"retention": 30},
        {"templateId": 5},
        [],
        "tpl_igaming",
    ],
)
async def test_malformed_settings_are_422(bare_api: Api, body: Any) -> None:
    error_of(await bare_api.put("/settings", json=body), 422, "validation_error")
    assert (await bare_api.get("/settings")).json() == DEFAULTS


async def test_settings_are_per_workspace(bare_api: Api, operator: CreatedOperator, services: Any) -> None:
    other = await services.auth.create_operator("other")
    await bare_api.put("/settings", json={"templateId": "tpl_igaming", "retention": {"eventsDays": 9}})
    assert (await bare_api.get("/settings")).json()["retention"]["eventsDays"] == 9
    assert (await bare_api.as_key(operator.test_key).get("/settings")).json() == DEFAULTS
    assert (await bare_api.as_key(other.live_key).get("/settings")).json() == DEFAULTS
