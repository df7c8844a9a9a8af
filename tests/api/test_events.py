"""POST/GET /entities/{externalId}/events through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from onehazel.services.container import Services
from tests.conftest import Api
from tests.helpers import detail_codes, error_of

DEPOSIT = {"type": "deposit", "amount": "25.00", "currency": "EUR"}


async def player(api: Api, external_id: str = "p-1") -> None:
    response = await api.post("/entities", json={"externalId": external_id, "type": "player"})
    assert response.status_code == 201, response.text


async def post_event(api: Api, body: dict[str, Any], external_id: str = "p-1") -> dict[str, Any]:
    response = await api.post(f"/entities/{external_id}/events", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def events_of(api: Api, external_id: str = "p-1", **params: Any) -> list[dict[str, Any]]:
    response = await api.get(f"/entities/{external_id}/events", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    assert response.json()["nextCursor"] is None
    return list(response.json()["data"])


def at(minute: int) -> str:
    return f"2026-11-27T10:{minute:02d}:00Z"


# --- recording ----------------------------------------------------------------------------------


async def test_server_assigns_event_id_and_timestamp(api: Api) -> None:
    await player(api)
    response = await api.post("/entities/p-1/events", json={"type": "transaction", "data": DEPOSIT})
    assert response.status_code == 201
    body = response.json()
    assert body["eventId"].startswith("evt_")
    assert len(body["eventId"]) > len("evt_")
    assert body["type"] == "transaction"
    assert body["externalId"] == "p-1"
    assert body["data"] == DEPOSIT
    assert body["timestamp"] == body["receivedAt"]
    assert "warnings" not in body
    other = await post_event(api, {"type": "transaction", "data": DEPOSIT})
    assert other["eventId"] != body["eventId"]
    assert len(await events_of(api)) == 2


async def test_client_timestamp_is_returned_exactly_as_sent(api: Api) -> None:
    await player(api)
    body = await post_event(
        api, {"type": "session", "data": {"action": "login"}, "timestamp": "2026-11-27T10:00:00+02:00"}
    )
    assert body["timestamp"] == "2026-11-27T10:00:00+02:00"
    assert body["receivedAt"].endswith("Z")
    assert body["receivedAt"] != body["timestamp"]
    (stored,) = await events_of(api)
    assert stored["timestamp"] == "2026-11-27T10:00:00+02:00"
    assert stored["receivedAt"] == body["receivedAt"]


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-11-27T10:00:00",
        "2026-11-27",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-27T10:00:00Z\n",
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        1764237600,
    ],
)
async def test_bad_timestamp_is_422(api: Api, timestamp: Any) -> None:
    await player(api)
    response = await api.post(
        "/entities/p-1/events", json={"type": "session", "data": {}, "timestamp": timestamp}
    )
    error_of(response, 422, "validation_error")
    assert ("timestamp", "invalid_timestamp") in detail_codes(response)
    assert await events_of(api) == []


async def test_unknown_event_type_is_422(api: Api) -> None:
    await player(api)
    response = await api.post("/entities/p-1/events", json={"type": "jackpot", "data": {}})
    error_of(response, 422, "validation_error")
    assert ("type", "unknown_event_type") in detail_codes(response)
    assert await events_of(api) == []


@pytest.mark.parametrize(
    ("type_", "data", "path"),
    [
        ("transaction", {**DEPOSIT, "amount": True}, "data.amount"),
        ("transaction", {**DEPOSIT, "amount": "12,50"}, "data.amount"),
        ("transaction", {**DEPOSIT, "currency": 978}, "data.currency"),
        ("session", {"duration_seconds": 1.5}, "data.duration_seconds"),
        ("session", {"ip_address": ["10.0.0.1"]}, "data.ip_address"),
        ("game_activity", {"game_id": "g", "bet_amount": {"v": 1}}, "data.bet_amount"),
    ],
)
async def test_wrong_field_type_is_422(api: Api, type_: str, data: dict[str, Any], path: str) -> None:
    await player(api)
    response = await api.post("/entities/p-1/events", json={"type": type_, "data": data})
    error_of(response, 422, "validation_error")
    assert (path, "invalid_field_type") in detail_codes(response)
    assert await events_of(api) == []


async def test_missing_required_field_is_accepted_with_a_warning(api: Api) -> None:
    await player(api)
    response = await api.post(
        "/entities/p-1/events", json={"type": "transaction", "data": {"type": "deposit", "amount": "5"}}
    )
    assert response.status_code == 201, response.text
    warnings = response.json()["warnings"]
    assert len(warnings) == 1
    assert warnings[0]["code"] == "missing_required_field"
    assert warnings[0]["field"] == "currency"
    assert isinstance(warnings[0]["message"], str)
    assert warnings[0]["message"]
    (stored,) = await events_of(api)
    assert stored["data"] == {"type": "deposit", "amount": "5"}


async def test_every_missing_required_field_is_flagged(api: Api) -> None:
    await player(api)
    body = await post_event(api, {"type": "game_activity"})
    assert sorted(w["field"] for w in body["warnings"]) == ["bet_amount", "game_id"]
    assert {w["code"] for w in body["warnings"]} == {"missing_required_field"}
    null_currency = await post_event(api, {"type": "transaction", "data": {**DEPOSIT, "currency": None}})
    assert [w["field"] for w in null_currency["warnings"]] == ["currency"]


async def test_undeclared_data_fields_are_kept(api: Api) -> None:
    await player(api)
    body = await post_event(api, {"type": "support", "data": {"channel": "chat", "mood": "happy", "n": 3}})
    assert body["data"] == {"channel": "chat", "mood": "happy", "n": 3}
    assert "warnings" not in body


async def test_unknown_entity_is_404(api: Api) -> None:
    response = await api.post("/entities/ghost/events", json={"type": "transaction", "data": DEPOSIT})
    error_of(response, 404, "entity_not_found")
    error_of(await api.get("/entities/ghost/events"), 404, "entity_not_found")


async def test_external_id_in_body_must_match_path(api: Api) -> None:
    await player(api, "p-1")
    await player(api, "p-2")
    response = await api.post(
        "/entities/p-1/events", json={"type": "session", "data": {}, "externalId": "p-2"}
    )
    error_of(response, 422, "validation_error")
    assert await events_of(api, "p-1") == []
    assert await events_of(api, "p-2") == []


# --- eventId idempotency ------------------------------------------------------------------------


async def test_exact_replay_is_200_duplicate_and_stores_once(api: Api) -> None:
    await player(api)
    body = {"type": "transaction", "data": DEPOSIT, "eventId": "tx-1", "timestamp": at(0)}
    first = await api.post("/entities/p-1/events", json=body)
    assert first.status_code == 201
    assert "duplicate" not in first.json()
    replay = await api.post("/entities/p-1/events", json=body)
    assert replay.status_code == 200, replay.text
    assert replay.json()["duplicate"] is True
    assert {k: v for k, v in replay.json().items() if k != "duplicate"} == first.json()
    stored = await events_of(api)
    assert [e["eventId"] for e in stored] == ["tx-1"]


async def test_replay_without_timestamp_is_a_duplicate_too(api: Api) -> None:
    await player(api)
    body = {"type": "session", "data": {"action": "login", "ip_address": "10.1.2.3"}, "eventId": "s-1"}
    first = await api.post("/entities/p-1/events", json=body)
    replay = await api.post("/entities/p-1/events", json=body)
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True
    assert replay.json()["receivedAt"] == first.json()["receivedAt"]
    assert replay.json()["data"]["ip_address"] == "10.1.2.3"
    assert len(await events_of(api)) == 1


async def test_same_event_id_with_a_different_payload_is_409(api: Api) -> None:
    await player(api)
    first = await post_event(
        api, {"type": "transaction", "data": DEPOSIT, "eventId": "tx-1", "timestamp": at(0)}
    )
    for changed in (
        {
            "type": "transaction",
            "data": {**DEPOSIT, "amount": "26.00"},
            "eventId": "tx-1",
            "timestamp": at(0),
        },
        {"type": "transaction", "data": DEPOSIT, "eventId": "tx-1", "timestamp": at(1)},
        {"type": "bonus", "data": {}, "eventId": "tx-1", "timestamp": at(0)},
    ):
        error_of(await api.post("/entities/p-1/events", json=changed), 409, "event_id_conflict")
    assert await events_of(api) == [first]


async def test_same_event_id_for_another_entity_is_409(api: Api) -> None:
    await player(api, "p-1")
    await player(api, "p-2")
    body = {"type": "transaction", "data": DEPOSIT, "eventId": "tx-1", "timestamp": at(0)}
    await post_event(api, body, "p-1")
    error_of(await api.post("/entities/p-2/events", json=body), 409, "event_id_conflict")
    assert await events_of(api, "p-2") == []
    assert len(await events_of(api, "p-1")) == 1


async def test_event_ids_are_scoped_to_the_workspace(api: Api, services: Services) -> None:
    other = await services.auth.create_operator("other operator")
    other_api = api.as_key(other.live_key)
    assert (await other_api.put("/settings", json={"templateId": "tpl_igaming"})).status_code == 200
    await player(api)
    await player(other_api)
    mine = {"type": "transaction", "data": DEPOSIT, "eventId": "tx-1", "timestamp": at(0)}
    theirs = {"type": "transaction", "data": {**DEPOSIT, "amount": "99"}, "eventId": "tx-1"}
    assert (await api.post("/entities/p-1/events", json=mine)).status_code == 201
    response = await other_api.post("/entities/p-1/events", json=theirs)
    assert response.status_code == 201, response.text
    assert "duplicate" not in response.json()
    assert [e["data"]["amount"] for e in await events_of(api)] == ["25.00"]
    assert [e["data"]["amount"] for e in await events_of(other_api)] == ["99"]
    # the same id in the same operator's test workspace is independent too
    test_api = api.as_key(other.test_key)
    assert (await test_api.put("/settings", json={"templateId": "tpl_igaming"})).status_code == 200
    await player(test_api)
    assert (await test_api.post("/entities/p-1/events", json=mine)).status_code == 201


# --- money --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_amount", "expected"),
    [
        (b'"12345678901234567890.12"', "12345678901234567890.12"),
        (b"12345678901234567890.12", "12345678901234567890.12"),
        (b"0.1", "0.1"),
        (b'"0.1"', "0.1"),
        (b"10.50", "10.50"),
        (b"-3", "-3"),
        (b"1e3", "1000"),
    ],
)
async def test_money_round_trips_exactly(api: Api, raw_amount: bytes, expected: str) -> None:
    await player(api)
    content = (
        b'{"type": "transaction", "data": {"type": "deposit", "currency": "EUR", "amount": '
        + raw_amount
        + b', "balance_after": 0.1}}'
    )
    response = await api.post("/entities/p-1/events", content=content)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["amount"] == expected
    assert response.json()["data"]["balance_after"] == "0.1"
    (stored,) = await events_of(api)
    assert stored["data"]["amount"] == expected
    assert stored["data"]["balance_after"] == "0.1"


async def test_game_activity_money_fields_are_exact(api: Api) -> None:
    await player(api)
    content = b'{"type": "game_activity", "data": {"game_id": "g", "bet_amount": 0.3, "win_amount": 0.30}}'
    response = await api.post("/entities/p-1/events", content=content)
    assert response.status_code == 201
    assert response.json()["data"] == {"game_id": "g", "bet_amount": "0.3", "win_amount": "0.30"}


# --- listing ------------------------------------------------------------------------------------


async def record_timeline(api: Api) -> None:
    """Five events sent out of order: minutes 3, 1, 4, 0, 2."""
    for minute, type_ in (
        (3, "session"),
        (1, "transaction"),
        (4, "bonus"),
        (0, "session"),
        (2, "transaction"),
    ):
        data = DEPOSIT if type_ == "transaction" else {}
        await post_event(api, {"type": type_, "data": data, "eventId": f"e{minute}", "timestamp": at(minute)})


async def test_listing_orders_by_timestamp(api: Api) -> None:
    await player(api)
    await record_timeline(api)
    assert [e["eventId"] for e in await events_of(api)] == ["e4", "e3", "e2", "e1", "e0"]
    assert [e["eventId"] for e in await events_of(api, order="desc")] == ["e4", "e3", "e2", "e1", "e0"]
    assert [e["eventId"] for e in await events_of(api, order="asc")] == ["e0", "e1", "e2", "e3", "e4"]
    error_of(await api.get("/entities/p-1/events", params={"order": "sideways"}), 422, "validation_error")


async def test_listing_orders_by_instant_not_by_text(api: Api) -> None:
    await player(api)
    # 10:30+02:00 is 08:30Z: earlier than 09:00Z though it sorts later as text
    await post_event(
        api, {"type": "session", "eventId": "late-text", "timestamp": "2026-11-27T10:30:00+02:00"}
    )
    await post_event(api, {"type": "session", "eventId": "nine", "timestamp": "2026-11-27T09:00:00Z"})
    assert [e["eventId"] for e in await events_of(api, order="asc")] == ["late-text", "nine"]


async def test_equal_timestamps_keep_server_order(api: Api) -> None:
    await player(api)
    for i in range(4):
        await post_event(api, {"type": "session", "eventId": f"s{i}", "timestamp": at(0)})
    assert [e["eventId"] for e in await events_of(api, order="asc")] == ["s0", "s1", "s2", "s3"]
    assert [e["eventId"] for e in await events_of(api, order="desc")] == ["s3", "s2", "s1", "s0"]


async def test_type_filter(api: Api) -> None:
    await player(api)
    await record_timeline(api)
    assert [e["eventId"] for e in await events_of(api, type="transaction", order="asc")] == ["e1", "e2"]
    assert [e["eventId"] for e in await events_of(api, type="bonus")] == ["e4"]
    assert await events_of(api, type="block") == []
    for bad in ("sess\x00ion", "\x1f"):
        error_of(await api.get("/entities/p-1/events", params={"type": bad}), 422, "validation_error")


async def test_from_and_to_filters(api: Api) -> None:
    await player(api)
    await record_timeline(api)
    ids = [e["eventId"] for e in await events_of(api, order="asc", **{"from": at(1), "to": at(3)})]
    assert ids == ["e1", "e2"]  # from is inclusive, to is exclusive (as documented)
    after = await events_of(api, order="asc", **{"from": "2026-11-27T12:02:30+02:00"})
    assert [e["eventId"] for e in after] == ["e3", "e4"]
    before = await events_of(api, order="asc", to="2026-11-27T10:01:30Z")
    assert [e["eventId"] for e in before] == ["e0", "e1"]
    both = await events_of(api, type="session", **{"from": at(1)})
    assert [e["eventId"] for e in both] == ["e3"]
    for name, bad in (
        ("from", "2026-11-27T10:00:00"),
        ("to", "2026-11-27T10:00:00Z\x00"),
        ("from", "0001-01-01T00:00:00+23:59"),
        ("to", "9999-12-31T23:59:59-23:59"),
    ):
        response = await api.get("/entities/p-1/events", params={name: bad})
        error_of(response, 422, "validation_error")
        assert (name, "invalid_timestamp") in detail_codes(response)
    for backwards in ({"from": at(3), "to": at(1)}, {"from": at(2), "to": "2026-11-27T12:02:00+02:00"}):
        response = await api.get("/entities/p-1/events", params=backwards)  # as /analytics answers
        error_of(response, 422, "validation_error")
        assert detail_codes(response) == [("from", "invalid_range")]


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_pages_return_each_event_once(api: Api, order: str) -> None:
    await player(api)
    sent = []
    for i in range(23):
        body = await post_event(api, {"type": "session", "timestamp": at(i % 7)})  # many equal timestamps
        sent.append(body["eventId"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 5, "order": order}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/entities/p-1/events", params=params)).json()
        assert len(page["data"]) <= 5
        seen.extend(e["eventId"] for e in page["data"])
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 5
    assert sorted(seen) == sorted(sent)
    assert len(seen) == 23
    full = [e["eventId"] for e in await events_of(api, order=order)]
    assert seen == full


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_cursor_is_stable_while_events_are_appended(api: Api, order: str) -> None:
    await player(api)
    existing = [
        (await post_event(api, {"type": "session", "timestamp": at(10 + i)}))["eventId"] for i in range(12)
    ]
    first = (await api.get("/entities/p-1/events", params={"limit": 4, "order": order})).json()
    seen = [e["eventId"] for e in first["data"]]
    cursor = first["nextCursor"]
    added = []
    while cursor is not None:
        # new events arrive between pages: newest, oldest, and one tied with an existing timestamp
        for timestamp in (None, at(0), at(15)):
            body: dict[str, Any] = {"type": "session"}
            if timestamp:
                body["timestamp"] = timestamp
            added.append((await post_event(api, body))["eventId"])
        page = (
            await api.get("/entities/p-1/events", params={"limit": 4, "order": order, "cursor": cursor})
        ).json()
        seen.extend(e["eventId"] for e in page["data"])
        cursor = page["nextCursor"]
    assert len(seen) == len(set(seen)), "an event appeared twice"
    assert set(existing) <= set(seen), "a pre-existing event was skipped"
    assert set(seen) <= set(existing) | set(added)


async def test_cursor_of_one_order_is_refused_by_the_other(api: Api) -> None:
    await player(api)
    await record_timeline(api)
    cursor = (await api.get("/entities/p-1/events", params={"limit": 2, "order": "asc"})).json()["nextCursor"]
    assert cursor is not None
    response = await api.get("/entities/p-1/events", params={"cursor": cursor, "order": "desc"})
    error_of(response, 422, "validation_error")
    garbage = await api.get("/entities/p-1/events", params={"cursor": "not-a-cursor"})
    assert ("cursor", "invalid_cursor") in detail_codes(error_response(garbage))
    for key in ('[1, 2, "e\\u0000"]', '[1, 99999999999999999999999, "e"]', '[1, 2, "\\udc00"]'):
        raw = '{"k":"events-desc","v":' + key + "}"
        forged = base64.urlsafe_b64encode(raw.encode()).decode()
        response = await api.get("/entities/p-1/events", params={"cursor": forged})
        assert ("cursor", "invalid_cursor") in detail_codes(error_response(response))


def error_response(response: httpx.Response) -> httpx.Response:
    error_of(response, 422, "validation_error")
    return response


@pytest.mark.parametrize("limit", [0, 1001])
async def test_limit_bounds(api: Api, limit: int) -> None:
    await player(api)
    error_of(await api.get("/entities/p-1/events", params={"limit": limit}), 422, "validation_error")


async def test_events_are_listed_per_entity(api: Api) -> None:
    await player(api, "p-1")
    await player(api, "p-2")
    await post_event(api, {"type": "session", "eventId": "a"}, "p-1")
    await post_event(api, {"type": "session", "eventId": "b"}, "p-2")
    assert [e["eventId"] for e in await events_of(api, "p-1")] == ["a"]
    assert [e["eventId"] for e in await events_of(api, "p-2")] == ["b"]


async def test_session_ip_address_is_decrypted_on_the_entitys_events(api: Api) -> None:
    await player(api)
    body = await post_event(
        api,
        {"type": "session", "data": {"action": "login", "ip_address": "203.0.113.7", "device": "ios"}},
    )
    assert body["data"] == {"action": "login", "ip_address": "203.0.113.7", "device": "ios"}
    (stored,) = await events_of(api)
    assert stored["data"] == {"action": "login", "ip_address": "203.0.113.7", "device": "ios"}


# --- no modification ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_events_cannot_be_modified_or_deleted(api: Api, method: str) -> None:
    await player(api)
    event = await post_event(api, {"type": "transaction", "data": DEPOSIT, "eventId": "tx-1"})
    for path in ("/entities/p-1/events/tx-1", "/entities/p-1/events"):
        response = await api.request(method, path, json={"type": "transaction", "data": {}})
        assert response.status_code in (404, 405), response.text
        error = response.json()["error"]
        assert error["code"] in ("not_found", "method_not_allowed")
        assert error["requestId"] == response.headers["x-request-id"]
    assert await events_of(api) == [event]
