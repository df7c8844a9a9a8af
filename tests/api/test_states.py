"""PUT/GET /entities/{externalId}/state through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Api
from tests.helpers import detail_codes, error_of

T0 = "2026-11-27T10:00:00Z"
T1 = "2026-11-27T11:00:00Z"
T2 = "2026-11-27T12:00:00Z"


@pytest.fixture
async def player(api: Api) -> Api:
    response = await api.post("/entities", json={"externalId": "p-1", "type": "player"})
    assert response.status_code == 201, response.text
    return api


async def put_state(api: Api, key: str, value: Any, timestamp: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"value": value}
    if timestamp is not None:
        body["timestamp"] = timestamp
    return await api.put(f"/entities/p-1/state/{key}", json=body)


async def test_put_applies_and_get_returns_it(player: Api) -> None:
    response = await put_state(player, "kyc_status", "verified", T0)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["key"] == "kyc_status"
    assert body["value"] == "verified"
    assert body["timestamp"] == T0
    assert body["applied"] is True
    assert body["updatedAt"].endswith("Z")
    got = await player.get("/entities/p-1/state/kyc_status")
    assert got.status_code == 200
    assert got.json() == {k: v for k, v in body.items() if k != "applied"}


async def test_the_body_may_repeat_the_paths_ids_as_openapi_says(player: Api) -> None:
    same = {"value": "verified", "externalId": "p-1", "key": "kyc_status"}
    assert (await player.put("/entities/p-1/state/kyc_status", json=same)).status_code == 200
    for name, other in (("externalId", "p-2"), ("key", "balance")):
        response = await player.put("/entities/p-1/state/kyc_status", json={**same, name: other})
        error_of(response, 422, "validation_error")
        assert detail_codes(response) == [(name, "path_mismatch")]
    schema = (await player.get("/openapi.json")).json()["components"]["schemas"]["StateIn"]
    assert {"value", "timestamp", "externalId", "key"} <= set(schema["properties"])


async def test_timestamp_defaults_to_now(player: Api) -> None:
    body = (await put_state(player, "loyalty_tier", "gold")).json()
    assert body["applied"] is True
    assert body["timestamp"] == body["updatedAt"]
    # a later write without timestamp wins over it
    second = (await put_state(player, "loyalty_tier", "platinum")).json()
    assert second["applied"] is True
    assert (await player.get("/entities/p-1/state/loyalty_tier")).json()["value"] == "platinum"


async def test_get_all_states(player: Api) -> None:
    await put_state(player, "balance", "10.00", T0)
    await put_state(player, "kyc_status", "pending", T1)
    await put_state(player, "risk_score", 0.25, T0)
    response = await player.get("/entities/p-1/state")
    assert response.status_code == 200
    body = response.json()
    assert body["externalId"] == "p-1"
    states = body["states"]
    assert set(states) == {"balance", "kyc_status", "risk_score"}
    assert states["balance"]["value"] == "10.00"
    assert states["kyc_status"] == {
        "value": "pending",
        "timestamp": T1,
        "updatedAt": states["kyc_status"]["updatedAt"],
    }
    assert states["risk_score"]["value"] == 0.25


async def test_get_all_states_of_an_entity_without_any(player: Api) -> None:
    response = await player.get("/entities/p-1/state")
    assert response.status_code == 200
    assert response.json() == {"externalId": "p-1", "states": {}}


async def test_older_write_is_not_applied_and_the_stored_state_is_returned(player: Api) -> None:
    newer = (await put_state(player, "balance", "50.00", T1)).json()
    assert newer["applied"] is True
    late = await put_state(player, "balance", "10.00", T0)
    assert late.status_code == 200
    body = late.json()
    assert body["applied"] is False
    assert body["value"] == "50.00"
    assert body["timestamp"] == T1
    assert body["updatedAt"] == newer["updatedAt"]
    stored = (await player.get("/entities/p-1/state/balance")).json()
    assert stored["value"] == "50.00"
    assert stored["timestamp"] == T1


async def test_newer_write_applies(player: Api) -> None:
    await put_state(player, "balance", "50.00", T1)
    body = (await put_state(player, "balance", "75.00", T2)).json()
    assert body["applied"] is True
    assert body["value"] == "75.00"
    assert body["timestamp"] == T2
    assert (await player.get("/entities/p-1/state/balance")).json()["value"] == "75.00"


async def test_last_writer_compares_instants_across_offsets(player: Api) -> None:
    # 12:30+02:00 is 10:30Z, which is older than 11:00Z
    await put_state(player, "loyalty_tier", "gold", T1)
    body = (await put_state(player, "loyalty_tier", "bronze", "2026-11-27T12:30:00+02:00")).json()
    assert body["applied"] is False
    assert body["value"] == "gold"
    # 13:30+02:00 is 11:30Z: newer
    body = (await put_state(player, "loyalty_tier", "silver", "2026-11-27T13:30:00+02:00")).json()
    assert body["applied"] is True
    assert body["timestamp"] == "2026-11-27T13:30:00+02:00"


async def test_replayed_older_data_never_overwrites(player: Api) -> None:
    for ts, value in ((T0, "pending"), (T2, "verified"), (T1, "rejected"), (T0, "expired")):
        await put_state(player, "kyc_status", value, ts)
    stored = (await player.get("/entities/p-1/state/kyc_status")).json()
    assert stored["value"] == "verified"
    assert stored["timestamp"] == T2


async def test_keys_are_independent(player: Api) -> None:
    await put_state(player, "balance", "1", T2)
    assert (await put_state(player, "kyc_status", "pending", T0)).json()["applied"] is True


async def test_unknown_state_key_is_422(player: Api) -> None:
    response = await put_state(player, "favourite_colour", "green")
    error_of(response, 422, "validation_error")
    assert ("key", "unknown_state_key") in detail_codes(response)
    get = await player.get("/entities/p-1/state/favourite_colour")
    assert ("key", "unknown_state_key") in detail_codes(get)
    assert (await player.get("/entities/p-1/state")).json()["states"] == {}


@pytest.mark.parametrize(
    ("raw_value", "expected"),
    [
        (b'"12345678901234567890.12"', "12345678901234567890.12"),
        (b"12345678901234567890.12", "12345678901234567890.12"),
        (b"0.1", "0.1"),
        (b'"-5.50"', "-5.50"),
        (b"100", "100"),
    ],
)
async def test_balance_is_an_exact_decimal(player: Api, raw_value: bytes, expected: str) -> None:
    response = await player.put("/entities/p-1/state/balance", content=b'{"value": ' + raw_value + b"}")
    assert response.status_code == 200, response.text
    assert response.json()["value"] == expected
    assert (await player.get("/entities/p-1/state/balance")).json()["value"] == expected
    assert (await player.get("/entities/p-1/state")).json()["states"]["balance"]["value"] == expected


@pytest.mark.parametrize("value", ["abc", "1,5", "", True, [1], {"amount": "1"}, "NaN", "1e5"])
async def test_balance_rejects_non_decimals(player: Api, value: Any) -> None:
    response = await put_state(player, "balance", value)
    error_of(response, 422, "validation_error")
    assert ("value", "invalid_field_type") in detail_codes(response)
    error_of(await player.get("/entities/p-1/state/balance"), 404, "state_not_found")


@pytest.mark.parametrize("score", [0.25, 7, 0, -1.5, 9007199254740993, 1e-7])
async def test_numeric_state_values_round_trip(player: Api, score: float) -> None:
    response = await put_state(player, "risk_score", score, T0)
    assert response.status_code == 200, response.text
    assert response.json()["value"] == score
    single = await player.get("/entities/p-1/state/risk_score")
    assert single.status_code == 200, single.text
    assert single.json()["value"] == score
    listed = await player.get("/entities/p-1/state")
    assert listed.status_code == 200, listed.text
    assert listed.json()["states"]["risk_score"]["value"] == score


@pytest.mark.parametrize("score", ["high", True, None])
async def test_risk_score_must_be_a_number(player: Api, score: Any) -> None:
    error_of(await put_state(player, "risk_score", score), 422, "validation_error")
    error_of(await player.get("/entities/p-1/state/risk_score"), 404, "state_not_found")


async def test_kyc_status_is_an_enum(player: Api) -> None:
    assert (await put_state(player, "kyc_status", "verified", T0)).status_code == 200
    for bad in ("approved", "VERIFIED", 1):
        response = await put_state(player, "kyc_status", bad, T1)
        error_of(response, 422, "validation_error")
        assert detail_codes(response)[0][0] == "value"
    assert (await player.get("/entities/p-1/state/kyc_status")).json()["value"] == "verified"


async def test_missing_value_is_422(player: Api) -> None:
    response = await player.put("/entities/p-1/state/loyalty_tier", json={"timestamp": T0})
    error_of(response, 422, "validation_error")
    assert ("value", "missing_field") in detail_codes(response)


@pytest.mark.parametrize(
    "timestamp", ["2026-11-27T10:00:00", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "now"]
)
async def test_bad_timestamp_is_422(player: Api, timestamp: str) -> None:
    response = await put_state(player, "loyalty_tier", "gold", timestamp)
    error_of(response, 422, "validation_error")
    assert ("timestamp", "invalid_timestamp") in detail_codes(response)
    error_of(await player.get("/entities/p-1/state/loyalty_tier"), 404, "state_not_found")


async def test_extreme_but_valid_timestamps_are_ordered(player: Api) -> None:
    early = await put_state(player, "loyalty_tier", "first", "0001-01-01T00:00:00Z")
    assert early.json()["applied"] is True
    late = await put_state(player, "loyalty_tier", "last", "9999-12-31T23:59:59Z")
    assert late.json()["applied"] is True
    between = await put_state(player, "loyalty_tier", "middle", T1)
    assert between.json()["applied"] is False
    assert (await player.get("/entities/p-1/state/loyalty_tier")).json()["value"] == "last"


async def test_never_set_is_404(player: Api) -> None:
    error = error_of(await player.get("/entities/p-1/state/balance"), 404, "state_not_found")
    assert "balance" in error["message"]


async def test_unknown_entity_is_404(api: Api) -> None:
    error_of(await api.put("/entities/ghost/state/balance", json={"value": "1"}), 404, "entity_not_found")
    error_of(await api.get("/entities/ghost/state/balance"), 404, "entity_not_found")
    error_of(await api.get("/entities/ghost/state"), 404, "entity_not_found")


async def test_states_are_per_entity(player: Api) -> None:
    await player.post("/entities", json={"externalId": "p-2", "type": "player"})
    await put_state(player, "balance", "1.00", T0)
    error_of(await player.get("/entities/p-2/state/balance"), 404, "state_not_found")
    assert (await player.get("/entities/p-2/state")).json()["states"] == {}
