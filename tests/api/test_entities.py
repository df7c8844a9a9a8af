"""POST/GET/DELETE /entities through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import Api
from tests.helpers import detail_codes, error_of

PLAYER_PII = {
    "email": "alice@example.com",
    "first_name": "Alice",
    "last_name": "Liddell",
    "date_of_birth": "1990-05-04",
    "phone": "+44 20 7946 0958",
    "address": {"line1": "1 Rabbit Hole", "city": "Oxford"},
}


def path_of(external_id: str) -> str:
    return "/entities/" + quote(external_id, safe="")


async def create(api: Api, external_id: str, type_: str = "player", **attributes: Any) -> dict[str, Any]:
    response = await api.post(
        "/entities", json={"externalId": external_id, "type": type_, "attributes": attributes}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def list_all(api: Api, **params: Any) -> list[dict[str, Any]]:
    response = await api.get("/entities", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    assert response.json()["nextCursor"] is None
    return list(response.json()["data"])


# --- create and merge update --------------------------------------------------------------------


async def test_create_returns_201_with_the_entity(api: Api) -> None:
    response = await api.post(
        "/entities",
        json={"externalId": "p-1", "type": "player", "attributes": {"country": "MT", **PLAYER_PII}},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["externalId"] == "p-1"
    assert body["type"] == "player"
    assert body["attributes"] == {"country": "MT", **PLAYER_PII}
    assert body["version"] == 1
    assert body["createdAt"] == body["updatedAt"]
    assert body["createdAt"].endswith("Z")


async def test_update_merges_attributes_and_null_removes_one(api: Api) -> None:
    await create(api, "p-1", country="MT", segment="vip", email="a@example.com")
    response = await api.post(
        "/entities",
        json={
            "externalId": "p-1",
            "type": "player",
            "attributes": {"segment": None, "language": "en", "email": "b@example.com"},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["attributes"] == {"country": "MT", "language": "en", "email": "b@example.com"}
    assert body["version"] == 2
    assert body["updatedAt"] > body["createdAt"]
    stored = (await api.get("/entities/p-1")).json()
    assert stored["attributes"] == {"country": "MT", "language": "en", "email": "b@example.com"}
    assert stored["version"] == 2


async def test_null_removes_a_pii_attribute(api: Api) -> None:
    await create(api, "p-1", email="a@example.com", phone="123")
    response = await api.post(
        "/entities", json={"externalId": "p-1", "type": "player", "attributes": {"email": None}}
    )
    assert response.status_code == 200
    assert response.json()["attributes"] == {"phone": "123"}
    assert (await api.get("/entities/p-1")).json()["attributes"] == {"phone": "123"}


async def test_unchanged_upsert_keeps_the_version(api: Api) -> None:
    first = await create(api, "p-1", country="MT", email="a@example.com")
    again = await api.post(
        "/entities",
        json={
            "externalId": "p-1",
            "type": "player",
            "attributes": {"country": "MT", "email": "a@example.com"},
        },
    )
    assert again.status_code == 200
    assert again.json()["version"] == 1
    assert again.json()["updatedAt"] == first["updatedAt"]
    empty = await api.post("/entities", json={"externalId": "p-1", "type": "player", "attributes": {}})
    assert empty.status_code == 200
    assert empty.json()["version"] == 1
    removing_absent = await api.post(
        "/entities", json={"externalId": "p-1", "type": "player", "attributes": {"segment": None}}
    )
    assert removing_absent.json()["version"] == 1
    changed = await api.post(
        "/entities", json={"externalId": "p-1", "type": "player", "attributes": {"country": "DE"}}
    )
    assert changed.json()["version"] == 2
    assert (await api.get("/entities/p-1")).json()["version"] == 2


async def test_money_attribute_is_returned_as_exact_string(api: Api) -> None:
    response = await api.post(
        "/entities",
        content=b'{"externalId": "g-1", "type": "game", "attributes": {"min_bet": 0.1, '
        b'"max_bet": 12345678901234567890.12}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["attributes"] == {"min_bet": "0.1", "max_bet": "12345678901234567890.12"}
    stored = (await api.get("/entities/g-1")).json()
    assert stored["attributes"] == {"min_bet": "0.1", "max_bet": "12345678901234567890.12"}


async def test_entity_type_conflict_is_409_and_keeps_the_entity(api: Api) -> None:
    await create(api, "x-1", "player", country="MT")
    response = await api.post(
        "/entities", json={"externalId": "x-1", "type": "game", "attributes": {"name": "Slots"}}
    )
    error_of(response, 409, "entity_type_conflict")
    stored = (await api.get("/entities/x-1")).json()
    assert stored["type"] == "player"
    assert stored["attributes"] == {"country": "MT"}


async def test_unknown_entity_type_is_422(api: Api) -> None:
    response = await api.post("/entities", json={"externalId": "x-1", "type": "croupier", "attributes": {}})
    error_of(response, 422, "validation_error")
    assert ("type", "unknown_entity_type") in detail_codes(response)
    error_of(await api.get("/entities/x-1"), 404, "entity_not_found")


@pytest.mark.parametrize(
    ("field", "value"),
    [("vip", "yes"), ("email", 42), ("country", ["MT"]), ("registration_date", "2026-01-01T00:00:00")],
)
async def test_wrong_field_type_is_422_with_its_path(api: Api, field: str, value: Any) -> None:
    response = await api.post(
        "/entities", json={"externalId": "p-1", "type": "player", "attributes": {field: value}}
    )
    error = error_of(response, 422, "validation_error")
    assert error["details"][0]["path"] == f"attributes.{field}"
    expected = "invalid_timestamp" if field == "registration_date" else "invalid_field_type"
    assert error["details"][0]["code"] == expected
    error_of(await api.get("/entities/p-1"), 404, "entity_not_found")


async def test_wrong_field_type_on_update_changes_nothing(api: Api) -> None:
    await create(api, "g-1", "game", rtp=96.5)
    response = await api.post(
        "/entities",
        json={"externalId": "g-1", "type": "game", "attributes": {"name": "New", "min_bet": "abc"}},
    )
    assert ("attributes.min_bet", "invalid_field_type") in detail_codes(error_of_422(response))
    stored = (await api.get("/entities/g-1")).json()
    assert stored["attributes"] == {"rtp": 96.5}
    assert stored["version"] == 1


def error_of_422(response: httpx.Response) -> httpx.Response:
    error_of(response, 422, "validation_error")
    return response


async def test_missing_external_id_and_type_are_422(api: Api) -> None:
    response = await api.post("/entities", json={"attributes": {}})
    codes = detail_codes(error_of_422(response))
    assert ("externalId", "missing_field") in codes
    assert ("type", "missing_field") in codes


async def test_undeclared_attributes_are_kept_as_plain_data(api: Api) -> None:
    await create(api, "p-1", favourite_colour="green", nested={"a": [1, 2]})
    listed = await list_all(api)
    assert listed[0]["attributes"] == {"favourite_colour": "green", "nested": {"a": [1, 2]}}


# --- single read and bulk listing ---------------------------------------------------------------


async def test_get_single_entity_decrypts_pii(api: Api) -> None:
    await create(api, "p-1", country="MT", **PLAYER_PII)
    response = await api.get("/entities/p-1")
    assert response.status_code == 200
    body = response.json()
    assert body["attributes"] == {"country": "MT", **PLAYER_PII}
    assert body["externalId"] == "p-1"
    assert body["type"] == "player"
    assert body["version"] == 1


async def test_get_unknown_entity_is_404(api: Api) -> None:
    error_of(await api.get("/entities/nobody"), 404, "entity_not_found")


async def test_bulk_listing_never_shows_plain_pii(api: Api) -> None:
    await create(api, "p-1", country="MT", **PLAYER_PII)
    response = await api.get("/entities")
    assert response.status_code == 200
    (entity,) = response.json()["data"]
    attributes = entity["attributes"]
    assert attributes["country"] == "MT"
    assert set(attributes) == {"country", *PLAYER_PII}
    for name in PLAYER_PII:
        token = attributes[name]
        assert set(token) == {"$encrypted"}, name
        assert isinstance(token["$encrypted"], str)
        assert token["$encrypted"]
    for plain in ("alice@example.com", "Alice", "Liddell", "1990-05-04", "7946", "Rabbit Hole", "Oxford"):
        assert plain not in response.text


async def test_cursor_pagination_returns_each_entity_once(api: Api) -> None:
    ids = {f"p-{i:02d}" for i in range(25)}
    for external_id in sorted(ids):
        await create(api, external_id)
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        response = await api.get("/entities", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["data"]) <= 10
        seen.extend(e["externalId"] for e in body["data"])
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            break
        assert pages < 10
    assert pages == 3
    assert len(seen) == 25
    assert set(seen) == ids


async def test_default_limit_is_100(api: Api) -> None:
    for i in range(101):
        await api.post("/entities", json={"externalId": f"p-{i}", "type": "player"})
    body = (await api.get("/entities")).json()
    assert len(body["data"]) == 100
    assert body["nextCursor"] is not None
    rest = (await api.get("/entities", params={"cursor": body["nextCursor"]})).json()
    assert len(rest["data"]) == 1
    assert rest["nextCursor"] is None


async def test_type_filter(api: Api) -> None:
    await create(api, "p-1", "player")
    await create(api, "g-1", "game")
    await create(api, "o-1", "operator")
    assert [e["externalId"] for e in await list_all(api, type="game")] == ["g-1"]
    assert [e["externalId"] for e in await list_all(api, type="player")] == ["p-1"]
    assert await list_all(api, type="croupier") == []
    assert len(await list_all(api)) == 3
    for bad in ("play\x00er", "\x01", "x" * 65):
        error_of(await api.get("/entities", params={"type": bad}), 422, "validation_error")


async def test_updated_since_filter(api: Api) -> None:
    first = await create(api, "p-1")
    second = await create(api, "p-2")
    assert second["updatedAt"] > first["updatedAt"]
    since_first = await list_all(api, updatedSince=first["updatedAt"])
    assert {e["externalId"] for e in since_first} == {"p-1", "p-2"}
    since_second = await list_all(api, updatedSince=second["updatedAt"])
    assert [e["externalId"] for e in since_second] == ["p-2"]
    assert await list_all(api, updatedSince="2999-01-01T00:00:00Z") == []
    # an update moves p-1 past the mark
    updated = await api.post(
        "/entities", json={"externalId": "p-1", "type": "player", "attributes": {"country": "MT"}}
    )
    since_update = await list_all(api, updatedSince=updated.json()["updatedAt"])
    assert [e["externalId"] for e in since_update] == ["p-1"]


async def test_updated_since_with_an_offset_is_compared_as_an_instant(api: Api) -> None:
    await create(api, "p-1")
    assert len(await list_all(api, updatedSince="2000-01-01T02:00:00+02:00")) == 1
    for bad in ("2000-01-01T00:00:00", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "a\x00"):
        response = await api.get("/entities", params={"updatedSince": bad})
        error = error_of(response, 422, "validation_error")
        assert error["details"][0]["code"] == "invalid_timestamp"


@pytest.mark.parametrize("limit", [0, 1001, -1, "ten"])
async def test_limit_out_of_bounds_is_422(api: Api, limit: Any) -> None:
    error_of(await api.get("/entities", params={"limit": limit}), 422, "validation_error")


async def test_limit_bounds_are_inclusive(api: Api) -> None:
    await create(api, "p-1")
    await create(api, "p-2")
    one = await api.get("/entities", params={"limit": 1})
    assert one.status_code == 200
    assert len(one.json()["data"]) == 1
    assert one.json()["nextCursor"] is not None
    assert (await api.get("/entities", params={"limit": 1000})).status_code == 200


def forged_cursor(key: str) -> str:
    raw = '{"k":"entities","v":' + key + "}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!",
        "a" * 100,
        "😀",
        forged_cursor("[]"),
        forged_cursor('[1, 2, "a"]'),
        forged_cursor('["1", "a"]'),
        forged_cursor('[99999999999999999999999, "a"]'),
        forged_cursor('[1, "a\\u0000"]'),
        forged_cursor('[1, "\\ud800"]'),
    ],
)
async def test_garbage_cursor_is_422(api: Api, cursor: str) -> None:
    await create(api, "p-1")
    response = await api.get("/entities", params={"cursor": cursor})
    error_of(response, 422, "validation_error")
    assert ("cursor", "invalid_cursor") in detail_codes(response)


async def test_listing_is_per_workspace(api: Api, services: Any) -> None:
    await create(api, "p-1", email="a@example.com")
    other = await services.auth.create_operator("other")
    other_api = api.as_key(other.live_key)
    assert (await other_api.put("/settings", json={"templateId": "tpl_igaming"})).status_code == 200
    assert (await other_api.get("/entities")).json()["data"] == []
    error_of(await other_api.get("/entities/p-1"), 404, "entity_not_found")
    test_mode = api.as_key(other.test_key)
    error_of(await test_mode.get("/entities/p-1"), 404, "entity_not_found")


# --- soft delete --------------------------------------------------------------------------------


async def test_delete_returns_deleted_at_and_purge_after_and_is_idempotent(api: Api) -> None:
    await create(api, "p-1", email="a@example.com")
    first = await api.delete("/entities/p-1")
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"externalId", "deletedAt", "purgeAfter"}
    assert body["externalId"] == "p-1"
    assert body["purgeAfter"] > body["deletedAt"]
    # default retention is 30 days: same time of day, 30 days later
    assert body["purgeAfter"][10:] == body["deletedAt"][10:]
    second = await api.delete("/entities/p-1")
    assert second.status_code == 200
    assert second.json() == body


async def test_deleted_entity_answers_410_everywhere(api: Api) -> None:
    await create(api, "p-1", email="a@example.com")
    event = await api.post(
        "/entities/p-1/events",
        json={"type": "transaction", "data": {"type": "deposit", "amount": "5", "currency": "EUR"}},
    )
    assert event.status_code == 201
    assert (await api.put("/entities/p-1/state/balance", json={"value": "5"})).status_code == 200
    assert (await api.delete("/entities/p-1")).status_code == 200

    error_of(await api.get("/entities/p-1"), 410, "entity_deleted")
    error_of(
        await api.post("/entities", json={"externalId": "p-1", "type": "player", "attributes": {}}),
        410,
        "entity_deleted",
    )
    error_of(
        await api.post("/entities/p-1/events", json={"type": "session", "data": {"action": "login"}}),
        410,
        "entity_deleted",
    )
    error_of(await api.get("/entities/p-1/events"), 410, "entity_deleted")
    error_of(await api.put("/entities/p-1/state/balance", json={"value": "7"}), 410, "entity_deleted")
    error_of(await api.get("/entities/p-1/state"), 410, "entity_deleted")
    error_of(await api.get("/entities/p-1/state/balance"), 410, "entity_deleted")


async def test_deleted_entity_disappears_from_listing(api: Api) -> None:
    await create(api, "p-1")
    await create(api, "p-2")
    assert (await api.delete("/entities/p-1")).status_code == 200
    assert [e["externalId"] for e in await list_all(api)] == ["p-2"]


async def test_recreate_after_delete_is_refused(api: Api) -> None:
    await create(api, "p-1", country="MT")
    await api.delete("/entities/p-1")
    for type_ in ("player", "game"):
        response = await api.post(
            "/entities", json={"externalId": "p-1", "type": type_, "attributes": {"country": "DE"}}
        )
        error_of(response, 410, "entity_deleted")
    assert await list_all(api) == []


async def test_delete_unknown_is_404(api: Api) -> None:
    error_of(await api.delete("/entities/nobody"), 404, "entity_not_found")


async def test_a_dry_run_delete_answers_the_outcome_and_deletes_nothing(api: Api) -> None:
    created = await create(api, "p-1", email="a@example.com")
    dry = {"dryRun": "true"}

    live = await api.delete("/entities/p-1", params=dry)
    assert live.status_code == 200, live.text
    assert live.json() == {"results": [{"index": 0, "status": "succeeded", "externalId": "p-1"}]}
    kept = await api.get("/entities/p-1")
    assert kept.status_code == 200  # still there, unchanged
    assert kept.json() == {**created, "attributes": {"email": "a@example.com"}}
    assert [e["externalId"] for e in await list_all(api)] == ["p-1"]

    unknown = (await api.delete("/entities/nobody", params=dry)).json()["results"]
    assert [(r["status"], r["externalId"], r["error"]["code"]) for r in unknown] == [
        ("failed", "nobody", "entity_not_found")
    ]

    deleted = (await api.delete("/entities/p-1")).json()
    again = await api.delete("/entities/p-1", params=dry)  # deleting again is idempotent: succeeds
    assert again.json()["results"][0]["status"] == "succeeded"
    assert (await api.delete("/entities/p-1")).json() == deleted  # the dry run changed no time
    error_of(await api.get("/entities/p-1"), 410, "entity_deleted")


# --- identifiers --------------------------------------------------------------------------------


@pytest.mark.parametrize("external_id", ["a/b", "tenant/42/player", "josé-ünïcødé-😀", "with space", "a%2Fb"])
async def test_unusual_external_ids_round_trip(api: Api, external_id: str) -> None:
    await create(api, external_id, country="MT")
    path = path_of(external_id)
    got = await api.get(path)
    assert got.status_code == 200, got.text
    assert got.json()["externalId"] == external_id
    event = await api.post(path + "/events", json={"type": "session", "data": {"action": "login"}})
    assert event.status_code == 201, event.text
    assert event.json()["externalId"] == external_id
    events = await api.get(path + "/events")
    assert [e["externalId"] for e in events.json()["data"]] == [external_id]
    state = await api.put(path + "/state/loyalty_tier", json={"value": "gold"})
    assert state.status_code == 200, state.text
    assert (await api.get(path + "/state/loyalty_tier")).json()["value"] == "gold"
    assert [e["externalId"] for e in await list_all(api)] == [external_id]
    deleted = await api.delete(path)
    assert deleted.json()["externalId"] == external_id
    error_of(await api.get(path), 410, "entity_deleted")


async def test_slash_ids_do_not_collide_with_sub_resources(api: Api) -> None:
    await create(api, "p-1", country="MT")
    await create(api, "p-1/events", country="DE")
    assert (await api.get(path_of("p-1/events"))).json()["attributes"] == {"country": "DE"}
    assert (await api.get("/entities/p-1")).json()["attributes"] == {"country": "MT"}


@pytest.mark.parametrize(
    "external_id", ["a\x00b", "a\x01b", "tab\there", "new\nline", "del\x7f", "", "x" * 257]
)
async def test_invalid_external_id_in_body_is_422(api: Api, external_id: str) -> None:
    response = await api.post("/entities", json={"externalId": external_id, "type": "player"})
    error_of(response, 422, "validation_error")
    assert await list_all(api) == []


async def test_external_id_of_256_characters_is_accepted(api: Api) -> None:
    await create(api, "x" * 256)
    assert (await api.get("/entities/" + "x" * 256)).status_code == 200


@pytest.mark.parametrize("raw", ["a%01b", "a%0Ab", "a%7F", "%00"])
async def test_control_character_in_path_id_is_422(api: Api, raw: str) -> None:
    for response in (
        await api.get("/entities/" + raw),
        await api.delete("/entities/" + raw),
        await api.get(f"/entities/{raw}/events"),
        await api.post(f"/entities/{raw}/events", json={"type": "session"}),
        await api.put(f"/entities/{raw}/state/balance", json={"value": "1"}),
    ):
        error_of(response, 422, "validation_error")


# --- before a template is chosen ----------------------------------------------------------------


async def test_writes_before_template_are_409(bare_api: Api) -> None:
    response = await bare_api.post("/entities", json={"externalId": "p-1", "type": "player"})
    error = error_of(response, 409, "template_not_configured")
    assert "settings" in error["message"].lower()
    error_of(
        await bare_api.post("/entities/p-1/events", json={"type": "session", "data": {}}),
        409,
        "template_not_configured",
    )
    error_of(
        await bare_api.put("/entities/p-1/state/balance", json={"value": "1"}),
        409,
        "template_not_configured",
    )
    listing = await bare_api.get("/entities")
    assert listing.status_code == 200
    assert listing.json() == {"data": [], "nextCursor": None}
    # after choosing the template the same write works
    assert (await bare_api.put("/settings", json={"templateId": "tpl_igaming"})).status_code == 200
    assert (await bare_api.post("/entities", json={"externalId": "p-1", "type": "player"})).status_code == 201
