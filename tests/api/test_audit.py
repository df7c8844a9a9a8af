"""GET /audit and what is recorded in it, on SQLite and PostgreSQL.

Every deletion, export, settings change and key creation/revocation leaves one
record in its workspace's audit log: who (the API key id, ``cli`` or
``system``), what (action, target, non-PII details) and when. PII never reaches
it, and another workspace never sees it.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from onehazel.api.app import BASE
from onehazel.domain.values import parse_timestamp
from onehazel.services.auth import CreatedOperator
from onehazel.services.container import Services
from onehazel.storage.tables import audit_log
from tests.conftest import Api

RECORD_FIELDS = {"id", "at", "actor", "action", "target", "details"}


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    return dict(response.json()["error"])


async def key_id(services: Services, key: str | None) -> str:
    return (await services.auth.authenticate(f"Bearer {key}")).key_id


async def audit(api: Api, *, limit: int = 1000) -> list[dict[str, Any]]:
    """The whole audit log of the key's workspace, newest first, every page checked."""
    records: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await api.get("/audit", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "nextCursor"}
        assert len(body["data"]) <= limit
        for record in body["data"]:
            assert set(record) == RECORD_FIELDS, record
        records += body["data"]
        cursor = body["nextCursor"]
        if cursor is None:
            return records
        assert len(body["data"]) == limit
    raise AssertionError("audit pages never ended")


async def of_action(api: Api, action: str) -> list[dict[str, Any]]:
    return [r for r in await audit(api) if r["action"] == action]


async def player(api: Api, external_id: str = "p-1", **attributes: Any) -> None:
    response = await api.post(
        "/entities", json={"externalId": external_id, "type": "player", "attributes": attributes}
    )
    assert response.status_code == 201, response.text


# --- what is recorded ---------------------------------------------------------------------------


async def test_a_new_operator_starts_with_its_key_and_the_template_choice(
    api: Api, services: Services, operator: CreatedOperator
) -> None:
    records = await audit(api)

    assert [(r["action"], r["actor"]) for r in records] == [
        ("settings.update", await key_id(services, api.key)),
        ("key.create", "system"),
    ]
    settings, key = records
    assert key["target"] == await key_id(services, operator.live_key)
    assert key["details"] == {"mode": "live"}
    assert settings["target"] is None
    assert settings["details"] == {
        "changed": ["templateId"],
        "changes": {"templateId": {"from": None, "to": "tpl_igaming"}},
    }
    assert parse_timestamp(settings["at"]) >= parse_timestamp(key["at"])


async def test_a_deletion_is_recorded_once_with_the_key_that_made_it(api: Api, services: Services) -> None:
    await player(api)
    deleted = await api.delete("/entities/p-1")
    assert deleted.status_code == 200
    assert (await api.delete("/entities/p-1")).status_code == 200  # idempotent: nothing deleted again
    error_of(await api.delete("/entities/ghost"), 404, "entity_not_found")

    (record,) = await of_action(api, "entity.delete")

    assert record["actor"] == await key_id(services, api.key)
    assert record["actor"].startswith("key_")
    assert record["target"] == "p-1"
    assert record["details"] == {"purgeAfter": deleted.json()["purgeAfter"]}
    assert parse_timestamp(record["at"]) >= parse_timestamp(deleted.json()["deletedAt"])


async def test_settings_changes_name_the_fields_that_changed(api: Api, services: Services) -> None:
    changed = await api.put("/settings", json={"retention": {"eventsDays": 90, "deletedEntitiesDays": 7}})
    assert changed.status_code == 200
    same = await api.put("/settings", json={"retention": {"eventsDays": 90}})
    assert same.status_code == 200
    error_of(await api.put("/settings", json={"retention": {"eventsDays": -1}}), 422, "validation_error")

    latest, earlier = (await of_action(api, "settings.update"))[:2]

    assert earlier["details"] == {
        "changed": ["retention.eventsDays", "retention.deletedEntitiesDays"],
        "changes": {
            "retention.eventsDays": {"from": None, "to": 90},
            "retention.deletedEntitiesDays": {"from": 30, "to": 7},
        },
    }
    assert latest["details"] == {"changed": [], "changes": {}}  # a write that changed nothing
    assert latest["actor"] == earlier["actor"] == await key_id(services, api.key)
    assert len(await of_action(api, "settings.update")) == 3  # the rejected write left no record


async def test_an_export_is_recorded_with_the_key_that_asked(api: Api, services: Services) -> None:
    await player(api)
    assert (await api.get("/entities/p-1/export")).status_code == 200
    error_of(await api.get("/entities/ghost/export"), 404, "entity_not_found")

    (record,) = await of_action(api, "entity.export")

    assert (record["actor"], record["target"]) == (await key_id(services, api.key), "p-1")


async def test_key_creation_and_revocation_are_recorded_in_the_keys_workspace(
    api: Api, services: Services, operator: CreatedOperator
) -> None:
    test_api = api.as_key(operator.test_key)
    new_id, new_key = await services.auth.create_key(operator.operator_id, "test", actor="cli")
    await services.auth.revoke_key(new_id, actor="cli")
    await services.auth.revoke_key(new_id, actor="cli")  # revoking again changes nothing

    records = await audit(test_api)

    assert [(r["action"], r["target"], r["actor"], r["details"]) for r in records[:2]] == [
        ("key.revoke", new_id, "cli", {"mode": "test"}),
        ("key.create", new_id, "cli", {"mode": "test"}),
    ]
    assert len(records) == 3  # and the test key made with the operator
    assert records[2]["target"] == await key_id(services, operator.test_key)
    live_targets = {r["target"] for r in await audit(api)}
    assert new_id not in live_targets
    error_of(await api.as_key(new_key).get("/audit"), 401, "unauthorized")


async def test_ordinary_writes_are_not_audited(api: Api) -> None:
    before = await audit(api)
    await player(api)
    assert (await api.post("/entities/p-1/events", json={"type": "support", "data": {}})).status_code == 201
    assert (await api.put("/entities/p-1/state/kyc_status", json={"value": "verified"})).status_code == 200
    assert (await api.get("/entities/p-1")).status_code == 200

    assert await audit(api) == before


# --- the service the retention sweep records through -------------------------------------------


async def test_a_record_made_inside_a_rolled_back_transaction_is_gone(api: Api, services: Services) -> None:
    ws = await services.auth.authenticate(f"Bearer {api.key}")
    before = await audit(api)

    async def purge_that_fails() -> None:
        async with services.core.store.begin() as uow:
            await services.audit.record_in(uow, workspace_id=ws.id, action="entity.purge", target="p-9")
            raise RuntimeError("the purge failed")

    with pytest.raises(RuntimeError, match="the purge failed"):
        await purge_that_fails()

    assert await audit(api) == before
    await services.audit.record(
        workspace_id=ws.id, action="entity.purge", target="p-9", details={"events": 3}
    )
    (record,) = await of_action(api, "entity.purge")
    assert (record["actor"], record["target"], record["details"]) == ("system", "p-9", {"events": 3})


async def test_an_action_name_is_checked(services: Services) -> None:
    with pytest.raises(ValueError, match="audit action"):
        await services.audit.record(workspace_id="ws_x", action="Deleted p-1 for ada@example.com")


# --- listing ------------------------------------------------------------------------------------


async def test_pages_go_newest_first_without_gaps_or_repeats(api: Api) -> None:
    for days in range(1, 8):
        assert (await api.put("/settings", json={"retention": {"eventsDays": days}})).status_code == 200

    first = await api.get("/audit", params={"limit": 3})
    assert first.status_code == 200
    # a record made while paging does not shift the pages already handed out
    assert (await api.put("/settings", json={"retention": {"eventsDays": 100}})).status_code == 200
    records = list(first.json()["data"])
    cursor = first.json()["nextCursor"]
    sizes = [len(records)]
    while cursor:
        page = await api.get("/audit", params={"limit": 3, "cursor": cursor})
        assert page.status_code == 200, page.text
        records += page.json()["data"]
        sizes.append(len(page.json()["data"]))
        cursor = page.json()["nextCursor"]

    assert sizes == [3, 3, 3]  # 7 changes, the template choice, the first key
    assert len({r["id"] for r in records}) == len(records)
    days = [r["details"]["changes"]["retention.eventsDays"]["to"] for r in records[:7]]
    assert days == [7, 6, 5, 4, 3, 2, 1]
    assert [r["action"] for r in records[7:]] == ["settings.update", "key.create"]
    assert [r["details"]["changes"]["retention.eventsDays"]["to"] for r in (await audit(api))[:1]] == [100]
    stamps = [parse_timestamp(r["at"]) for r in records]
    assert stamps == sorted(stamps, reverse=True)


async def test_the_default_page_is_100(api: Api) -> None:
    for days in range(1, 101):
        assert (await api.put("/settings", json={"retention": {"eventsDays": days}})).status_code == 200
    page = await api.get("/audit")
    assert len(page.json()["data"]) == 100
    assert page.json()["nextCursor"] is not None


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1001}, {"limit": "ten"}, {"cursor": "not-a-cursor"}, {"cursor": "x" * 3000}],
    ids=["limit-0", "limit-1001", "limit-text", "bad-cursor", "long-cursor"],
)
async def test_bad_parameters_are_422(api: Api, params: dict[str, Any]) -> None:
    error_of(await api.get("/audit", params=params), 422, "validation_error")


async def test_a_cursor_of_another_listing_is_422(api: Api) -> None:
    await player(api, "p-1")
    await player(api, "p-2")
    entities_cursor = (await api.get("/entities", params={"limit": 1})).json()["nextCursor"]
    details = error_of(await api.get("/audit", params={"cursor": entities_cursor}), 422, "validation_error")
    assert details["details"][0]["code"] == "invalid_cursor"


async def test_no_key_is_401(api: Api) -> None:
    error_of(await api.as_key(None).get("/audit"), 401, "unauthorized")


# --- privacy and isolation ----------------------------------------------------------------------


async def test_no_pii_ever_reaches_the_audit_log(
    api: Api, services: Services, operator: CreatedOperator
) -> None:
    canary = f"canary{uuid.uuid4().hex[:10]}"
    pii = {
        "email": f"{canary}@example.com",
        "first_name": canary,
        "last_name": canary,
        "phone": f"+356{canary}",
        "address": f"1 {canary} Street",
        "date_of_birth": "1990-01-01",
    }
    await player(api, "p-1", **pii)
    session = {"type": "session", "data": {"ip_address": f"{canary}.example"}}
    assert (await api.post("/entities/p-1/events", json=session)).status_code == 201
    assert (
        await api.post(
            "/entities",
            json={"externalId": "p-1", "type": "player", "attributes": {"first_name": f"x{canary}"}},
        )
    ).status_code == 200
    export = await api.get("/entities/p-1/export")
    assert canary in export.text  # the export itself holds the PII ...
    assert (await api.put("/settings", json={"retention": {"eventsDays": 30}})).status_code == 200
    extra_id, _ = await services.auth.create_key(operator.operator_id, "live", actor="cli")
    await services.auth.revoke_key(extra_id, actor="cli")
    assert (await api.delete("/entities/p-1")).status_code == 200

    listed = await api.get("/audit", params={"limit": 1000})
    actions = {r["action"] for r in listed.json()["data"]}
    assert {"entity.export", "entity.delete", "settings.update", "key.create", "key.revoke"} <= actions
    assert canary not in listed.text  # ... the audit log never does
    async with services.core.store.begin() as uow:
        rows = (await uow.conn.execute(sa.select(audit_log))).all()
    assert len(rows) >= len(listed.json()["data"])
    assert canary not in repr(rows)


async def test_each_workspace_sees_only_its_own_log(
    api: Api, services: Services, operator: CreatedOperator
) -> None:
    await player(api, "mine-only")
    assert (await api.delete("/entities/mine-only")).status_code == 200
    other = await services.auth.create_operator("other")

    for intruder in (api.as_key(other.live_key), api.as_key(operator.test_key)):
        records = await audit(intruder)
        assert [r["action"] for r in records] == ["key.create"]
        assert "mine-only" not in str(records)
    assert [r["target"] for r in await of_action(api, "entity.delete")] == ["mine-only"]


async def test_openapi_documents_the_audit_log(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/openapi.json")).json()
    operation = doc["paths"][BASE + "/audit"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"limit", "cursor"}
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    page = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(page["properties"]) == {"data", "nextCursor"}
    assert set(doc["components"]["schemas"]["AuditEntryOut"]["properties"]) == RECORD_FIELDS
