"""Concurrent single event writes share group-commit flushes: every answer is still its own.

Writes arriving while a flush runs are inserted together by the next one (on PostgreSQL one
statement over arrays, prepared once per connection, so after its first runs PostgreSQL may
plan it generically). A flush can mix live, unknown and deleted entities, replays and
conflicting eventIds; each request must get the answer it would get alone, and the rows
and analytics must hold exactly the events answered 201.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx

from tests.conftest import Api

ROUNDS = 8  # enough flushes per connection for PostgreSQL to consider a generic plan
LIVE = [f"gc-{n}" for n in range(6)]


def deposit(amount: str) -> dict[str, Any]:
    return {
        "type": "transaction",
        "data": {"type": "deposit", "amount": amount, "currency": "EUR"},
        "timestamp": "2026-11-27T10:00:00Z",
    }


async def test_mixed_concurrent_writes_each_get_their_own_answer(api: Api) -> None:
    for external_id in [*LIVE, "gc-deleted"]:
        response = await api.post("/entities", json={"externalId": external_id, "type": "player"})
        assert response.status_code == 201, response.text
    assert (await api.delete("/entities/gc-deleted")).status_code in (200, 204)

    expected_rows: dict[str, int] = dict.fromkeys(LIVE, 0)
    total = Decimal(0)
    for round_ in range(ROUNDS):
        requests: list[tuple[str, str, dict[str, Any]]] = []  # (what, externalId, body)
        for n, external_id in enumerate(LIVE):
            requests.append(("new", external_id, deposit(f"{round_}.{n:02d}")))
            requests.append(("new", external_id, {**deposit("1.00"), "eventId": f"r{round_}-{n}"}))
        same = {**deposit("2.50"), "eventId": f"twice-{round_}"}
        requests += [("same", LIVE[0], same), ("same", LIVE[0], same)]
        requests += [
            ("clash", LIVE[1], {**deposit("3.00"), "eventId": f"clash-{round_}"}),
            ("clash", LIVE[1], {**deposit("4.00"), "eventId": f"clash-{round_}"}),
        ]
        requests += [("ghost", "gc-ghost", deposit("5.00")), ("deleted", "gc-deleted", deposit("6.00"))]
        if round_:  # an eventId stored by the previous round, sent again unchanged
            requests.append(("replay", LIVE[2], {**deposit("1.00"), "eventId": f"r{round_ - 1}-2"}))

        answers: list[httpx.Response] = await asyncio.gather(
            *(api.post(f"/entities/{external_id}/events", json=body) for _, external_id, body in requests)
        )
        by_kind: dict[str, list[int]] = {}
        for (kind, external_id, body), answer in zip(requests, answers, strict=True):
            by_kind.setdefault(kind, []).append(answer.status_code)
            if answer.status_code == 201:
                expected_rows[external_id] += 1
                total += Decimal(body["data"]["amount"])
                assert answer.json()["data"] == body["data"], answer.text
                if "eventId" in body:
                    assert answer.json()["eventId"] == body["eventId"]
        assert by_kind["new"] == [201] * 2 * len(LIVE)
        assert sorted(by_kind["same"]) == [200, 201]
        assert sorted(by_kind["clash"]) == [201, 409]
        assert by_kind["ghost"] == [404]
        assert by_kind["deleted"] == [410]
        if round_:
            assert by_kind["replay"] == [200]

    for external_id, count in expected_rows.items():
        response = await api.get(f"/entities/{external_id}/events", params={"limit": 1000})
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == count, external_id
    summary = await api.get(
        "/analytics/transactions",
        params={"from": "2026-11-27T00:00:00Z", "to": "2026-11-28T00:00:00Z", "groupBy": "currency"},
    )
    assert summary.status_code == 200, summary.text
    assert summary.json()["data"] == [
        {"currency": "EUR", "count": sum(expected_rows.values()), "sum": str(total)}
    ]
