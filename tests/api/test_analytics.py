"""Analytics (CONTRACT.md, "Analytics"): counts and exact sums, on SQLite and PostgreSQL alike.

Every test here runs on both databases (the ``api`` fixture), so the same numbers,
the same day boundaries and the same decimal rendering are checked on both.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Api

FROM = "2026-03-01T00:00:00Z"
TO = "2026-04-01T00:00:00Z"
RANGE = {"from": FROM, "to": TO}


def uid() -> str:
    return uuid.uuid4().hex[:10]


async def player(api: Api, **attributes: Any) -> str:
    external_id = f"p-{uid()}"
    created = await api.post(
        "/entities", json={"externalId": external_id, "type": "player", "attributes": attributes}
    )
    assert created.status_code == 201, created.text
    return external_id


async def event(api: Api, external_id: str, type_: str, timestamp: str | None, **data: Any) -> None:
    body: dict[str, Any] = {"type": type_, "data": data}
    if timestamp is not None:
        body["timestamp"] = timestamp
    created = await api.post(f"/entities/{external_id}/events", json=body)
    assert created.status_code == 201, created.text


async def transaction(
    api: Api, external_id: str, amount: str, currency: str = "EUR", kind: str = "deposit", at: str = FROM
) -> None:
    await event(api, external_id, "transaction", at, type=kind, amount=amount, currency=currency)


def assert_invalid(response: httpx.Response, code: str, path: str = "groupBy") -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error", response.text
    assert [(d["path"], d["code"]) for d in error["details"]] == [(path, code)], response.text


# --- events -----------------------------------------------------------------------------------


async def seed_events(api: Api) -> str:
    p = await player(api, country="MT")
    await event(api, p, "session", "2026-03-01T00:00:00Z", action="login")  # first instant: inclusive
    await event(api, p, "session", "2026-03-01T23:59:59.999999Z", action="login")
    await event(api, p, "session", "2026-03-02T00:00:00Z", action="logout")
    await event(api, p, "support", "2026-03-02T01:00:00+02:00", channel="chat")  # 2026-03-01 23:00 UTC
    await event(api, p, "support", "2026-04-01T00:00:00Z", channel="chat")  # `to` is exclusive
    await event(api, p, "session", "2026-02-28T23:59:59Z", action="login")  # before `from`
    return p


async def test_event_counts_by_type(api: Api) -> None:
    await seed_events(api)
    response = await api.get("/analytics/events", params={**RANGE, "groupBy": "type"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "data": [{"type": "session", "count": 3}, {"type": "support", "count": 1}],
        "from": "2026-03-01T00:00:00.000000Z",
        "to": "2026-04-01T00:00:00.000000Z",
    }


async def test_event_counts_by_utc_day(api: Api) -> None:
    await seed_events(api)
    response = await api.get("/analytics/events", params={**RANGE, "groupBy": "day"})
    assert response.status_code == 200, response.text
    assert response.json()["data"] == [{"day": "2026-03-01", "count": 3}, {"day": "2026-03-02", "count": 1}]


async def test_event_counts_by_type_and_day_with_type_filter(api: Api) -> None:
    await seed_events(api)
    both = await api.get("/analytics/events", params={**RANGE, "groupBy": "type,day"})
    assert both.status_code == 200, both.text
    assert both.json()["data"] == [
        {"type": "session", "day": "2026-03-01", "count": 2},
        {"type": "session", "day": "2026-03-02", "count": 1},
        {"type": "support", "day": "2026-03-01", "count": 1},
    ]
    reversed_order = await api.get("/analytics/events", params={**RANGE, "groupBy": "day,type"})
    assert reversed_order.json()["data"] == both.json()["data"]
    only = await api.get("/analytics/events", params={**RANGE, "groupBy": "day", "type": "support"})
    assert only.json()["data"] == [{"day": "2026-03-01", "count": 1}]


async def test_event_range_bounds_are_inclusive_then_exclusive(api: Api) -> None:
    await seed_events(api)
    day = await api.get(
        "/analytics/events", params={"from": "2026-03-02T00:00:00Z", "to": "2026-04-01T00:00:00.000001Z"}
    )
    assert day.json()["data"] == [{"type": "session", "count": 1}, {"type": "support", "count": 1}]
    # offsets are honoured: 2026-03-02T01:00:00+01:00 is midnight UTC
    shifted = await api.get(
        "/analytics/events",
        params={"from": "2026-03-02T01:00:00+01:00", "to": "2026-03-02T00:00:00.000001Z", "groupBy": "day"},
    )
    assert shifted.json() == {
        "data": [{"day": "2026-03-02", "count": 1}],
        "from": "2026-03-02T00:00:00.000000Z",
        "to": "2026-03-02T00:00:00.000001Z",
    }


async def test_default_range_is_the_last_30_days(api: Api) -> None:
    p = await player(api)
    await event(api, p, "session", None, action="login")  # timestamp: now
    long_ago = (datetime.now(UTC) - timedelta(days=31)).isoformat().replace("+00:00", "Z")
    await event(api, p, "support", long_ago, channel="mail")
    response = await api.get("/analytics/events")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] == [{"type": "session", "count": 1}]
    start = datetime.fromisoformat(body["from"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(body["to"].replace("Z", "+00:00"))
    assert end - start == timedelta(days=30)
    # only `from` given: `to` is now
    older = await api.get("/analytics/events", params={"from": long_ago})
    assert older.json()["data"] == [{"type": "session", "count": 1}, {"type": "support", "count": 1}]


async def test_no_events_is_an_empty_list(api: Api) -> None:
    response = await api.get("/analytics/events", params=RANGE)
    assert response.status_code == 200
    assert response.json()["data"] == []


@pytest.mark.parametrize(
    ("params", "path", "code"),
    [
        ({"groupBy": "week"}, "groupBy", "invalid_group_by"),
        ({"groupBy": "type,type"}, "groupBy", "invalid_group_by"),
        ({"groupBy": ""}, "groupBy", "invalid_group_by"),
        ({"groupBy": "currency"}, "groupBy", "invalid_group_by"),
        ({"from": TO, "to": FROM}, "from", "invalid_range"),
        ({"from": FROM, "to": FROM}, "from", "invalid_range"),
        ({"from": "2020-01-01T00:00:00Z", "to": TO}, "to", "range_too_large"),
        ({"from": "2026-03-01T00:00:00"}, "from", "invalid_timestamp"),
        ({"to": "yesterday"}, "to", "invalid_timestamp"),
    ],
)
async def test_bad_event_parameters_are_422(api: Api, params: dict[str, str], path: str, code: str) -> None:
    assert_invalid(await api.get("/analytics/events", params=params), code, path)


# --- transactions -----------------------------------------------------------------------------


async def sums(api: Api, group_by: str, **params: str) -> list[dict[str, Any]]:
    response = await api.get("/analytics/transactions", params={**RANGE, "groupBy": group_by, **params})
    assert response.status_code == 200, response.text
    assert response.json()["from"] == "2026-03-01T00:00:00.000000Z"
    return list(response.json()["data"])


async def test_sums_are_exact_decimals(api: Api) -> None:
    p = await player(api)
    await transaction(api, p, "0.1")
    await transaction(api, p, "0.2")
    await transaction(api, p, "12345678901234567890.12", currency="USD")
    await transaction(api, p, "1", currency="USD")
    assert await sums(api, "currency") == [
        {"currency": "EUR", "count": 2, "sum": "0.3"},
        {"currency": "USD", "count": 2, "sum": "12345678901234567891.12"},
    ]


async def test_sum_keeps_the_largest_scale_like_numeric(api: Api) -> None:
    p = await player(api)
    await transaction(api, p, "0.30")
    await transaction(api, p, "0.2")
    await transaction(api, p, "5", currency="GBP")
    await transaction(api, p, "-5.000", currency="GBP", kind="refund")
    await transaction(api, p, "-0.00000001", currency="BTC", kind="adjustment")
    assert await sums(api, "currency") == [
        {"currency": "BTC", "count": 1, "sum": "-0.00000001"},
        {"currency": "EUR", "count": 2, "sum": "0.50"},
        {"currency": "GBP", "count": 2, "sum": "0.000"},
    ]


async def test_sums_by_type_and_by_currency_and_type(api: Api) -> None:
    p = await player(api)
    await transaction(api, p, "10.00", kind="deposit")
    await transaction(api, p, "2.50", kind="bet")
    await transaction(api, p, "20", currency="USD", kind="deposit")
    await transaction(api, p, "99", at="2026-04-01T00:00:00Z")  # outside the range
    await event(api, p, "bonus", FROM, amount="1000", currency="EUR")  # not a transaction
    assert await sums(api, "type") == [
        {"type": "bet", "count": 1, "sum": "2.50"},
        {"type": "deposit", "count": 2, "sum": "30.00"},
    ]
    assert await sums(api, "currency,type") == [
        {"currency": "EUR", "type": "bet", "count": 1, "sum": "2.50"},
        {"currency": "EUR", "type": "deposit", "count": 1, "sum": "10.00"},
        {"currency": "USD", "type": "deposit", "count": 1, "sum": "20"},
    ]
    assert await sums(api, "type,currency") == await sums(api, "currency,type")


async def test_numbers_sent_as_json_numbers_are_summed_exactly(api: Api) -> None:
    p = await player(api)
    for amount in ("0.1", "0.2"):
        created = await api.post(
            f"/entities/{p}/events",
            content=f'{{"type": "transaction", "timestamp": "{FROM}", '
            f'"data": {{"type": "win", "amount": {amount}, "currency": "EUR"}}}}',
            headers={"Content-Type": "application/json"},
        )
        assert created.status_code == 201, created.text
    assert await sums(api, "currency") == [{"currency": "EUR", "count": 2, "sum": "0.3"}]


async def test_transaction_without_amount_is_not_summed(api: Api) -> None:
    p = await player(api)
    await transaction(api, p, "7.25")
    response = await api.post(
        f"/entities/{p}/events",
        json={"type": "transaction", "timestamp": FROM, "data": {"type": "deposit", "currency": "EUR"}},
    )
    if response.status_code == 201:  # the template may only warn about a missing amount
        assert await sums(api, "currency") == [{"currency": "EUR", "count": 1, "sum": "7.25"}]
    else:
        assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("params", "path", "code"),
    [
        ({"groupBy": "type,day"}, "groupBy", "invalid_group_by"),
        ({"groupBy": "amount"}, "groupBy", "invalid_group_by"),
        ({"from": TO, "to": FROM}, "from", "invalid_range"),
        ({"from": "2025-01-01T00:00:00Z", "to": TO}, "to", "range_too_large"),
        ({"from": "not a time"}, "from", "invalid_timestamp"),
    ],
)
async def test_bad_transaction_parameters_are_422(
    api: Api, params: dict[str, str], path: str, code: str
) -> None:
    assert_invalid(await api.get("/analytics/transactions", params=params), code, path)


# --- entities ---------------------------------------------------------------------------------


async def entity_counts(api: Api, group_by: str) -> list[dict[str, Any]]:
    response = await api.get("/analytics/entities", params={"groupBy": group_by})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def test_entity_counts_by_type(api: Api) -> None:
    await player(api, country="MT")
    await player(api, country="DE")
    game = await api.post("/entities", json={"externalId": f"g-{uid()}", "type": "game", "attributes": {}})
    assert game.status_code == 201
    assert await entity_counts(api, "type") == [{"type": "game", "count": 1}, {"type": "player", "count": 2}]
    default = await api.get("/analytics/entities")
    assert default.json()["data"] == await entity_counts(api, "type")


async def test_entity_counts_by_attribute_keep_json_values_apart(api: Api) -> None:
    await player(api, country="MT", vip=True)
    await player(api, country="MT", vip=False)
    await player(api, country="DE", vip=True)
    await player(api)  # no country
    assert await entity_counts(api, "country") == [
        {"country": None, "count": 1},
        {"country": "DE", "count": 1},
        {"country": "MT", "count": 2},
    ]
    assert await entity_counts(api, "vip") == [
        {"vip": None, "count": 1},
        {"vip": False, "count": 1},
        {"vip": True, "count": 2},
    ]
    game = {"type": "game", "attributes": {"rtp": 96.5}}
    assert (await api.post("/entities", json={"externalId": f"g-{uid()}", **game})).status_code == 201
    rtp = await entity_counts(api, "rtp")
    assert {"rtp": 96.5, "count": 1} in rtp
    assert {"rtp": None, "count": 4} in rtp


@pytest.mark.parametrize("field", ["email", "first_name", "last_name", "date_of_birth", "phone", "username"])
async def test_grouping_by_a_pii_field_is_refused(api: Api, field: str) -> None:
    await player(api, email="someone@example.com", first_name="Ada", username="ada")
    response = await api.get("/analytics/entities", params={"groupBy": field})
    assert_invalid(response, "pii_not_aggregatable")
    assert "someone@example.com" not in response.text


async def test_pii_is_refused_even_without_a_template(bare_api: Api) -> None:
    assert_invalid(
        await bare_api.get("/analytics/entities", params={"groupBy": "email"}), "pii_not_aggregatable"
    )
    assert (await bare_api.get("/analytics/entities")).json() == {"data": []}


@pytest.mark.parametrize(
    "group_by", ["", "a.b", "country'--", "x y", "$.country", "1abc", "count", "country,type", "é"]
)
async def test_attribute_names_are_checked_not_injected(api: Api, group_by: str) -> None:
    await player(api, country="MT")
    assert_invalid(await api.get("/analytics/entities", params={"groupBy": group_by}), "invalid_group_by")
    assert await entity_counts(api, "country") == [{"country": "MT", "count": 1}]


async def test_overlong_group_by_is_422(api: Api) -> None:
    response = await api.get("/analytics/entities", params={"groupBy": "a" * 65})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["path"] == "groupBy"


# --- deleted entities never count ---------------------------------------------------------------


async def test_deleted_entities_and_their_data_never_count(api: Api) -> None:
    kept = await player(api, country="MT")
    gone = await player(api, country="MT")
    for p in (kept, gone):
        await transaction(api, p, "1.10")
        await event(api, p, "session", FROM, action="login")
    assert (await api.delete(f"/entities/{gone}")).status_code == 200
    assert await sums(api, "currency") == [{"currency": "EUR", "count": 1, "sum": "1.10"}]
    events = await api.get("/analytics/events", params=RANGE)
    assert events.json()["data"] == [{"type": "session", "count": 1}, {"type": "transaction", "count": 1}]
    assert await entity_counts(api, "type") == [{"type": "player", "count": 1}]
    assert await entity_counts(api, "country") == [{"country": "MT", "count": 1}]


# --- isolation and documentation ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/analytics/events", "/analytics/transactions", "/analytics/entities"])
async def test_analytics_need_a_key(api: Api, path: str) -> None:
    response = await api.as_key(None).get(path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_analytics_routes_are_documented(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    for route in ("events", "transactions", "entities"):
        operation = doc["paths"][f"/operator-data-api/analytics/{route}"]["get"]
        assert "422" in operation["responses"]
        assert "groupBy" in [p["name"] for p in operation["parameters"]]
