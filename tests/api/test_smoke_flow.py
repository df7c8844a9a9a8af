"""The seed's flow end to end through the ASGI app, on both databases."""

from __future__ import annotations

from tests.conftest import Api


async def test_seed_flow(api: Api) -> None:
    created = await api.post(
        "/entities",
        json={"externalId": "p-1", "type": "player", "attributes": {"email": "alice@example.com"}},
    )
    assert created.status_code == 201
    deposit = await api.post(
        "/entities/p-1/events",
        json={"type": "transaction", "data": {"type": "deposit", "amount": "25.00", "currency": "EUR"}},
    )
    assert deposit.status_code == 201
    balance = await api.put("/entities/p-1/state/balance", json={"value": "25.00"})
    assert balance.json()["applied"] is True
    entity = (await api.get("/entities/p-1")).json()
    assert entity["attributes"]["email"] == "alice@example.com"
    events = (await api.get("/entities/p-1/events")).json()["data"]
    assert [e["data"]["amount"] for e in events] == ["25.00"]
    state = (await api.get("/entities/p-1/state/balance")).json()
    assert state["value"] == "25.00"
