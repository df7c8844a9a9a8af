"""``POST /entities/{externalId}/events`` answered by ``api.hot_path`` equals the route's answer.

The hot path skips FastAPI's routing and dependency resolution for the most
frequent operation. A query string sends the same request through the route
(``?dryRun=false`` is a real write there), so every case below is sent both ways,
to twin entities, and the answers must match: status, error code and message,
the event as returned, and the headers a client reads.
"""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import pytest

from onehazel.services.container import Services
from tests.conftest import Api

DEPOSIT = {"type": "deposit", "amount": "12345678901234567890.12", "currency": "EUR"}
COMPARED_HEADERS = ("content-type", "ratelimit-policy", "retry-after", "allow")


def through(path: str, route: bool) -> str:
    return f"{path}?dryRun=false" if route else path


def comparable(response: httpx.Response) -> dict[str, Any]:
    """What a client sees, without what differs on every request (ids, clocks, budgets)."""
    body = response.json()
    if "error" in body:
        body["error"].pop("requestId")
    else:
        if body["timestamp"] == body["receivedAt"]:
            body.pop("timestamp")  # server-assigned: the moment it arrived
        body.pop("receivedAt")
        if body["eventId"].startswith("fixed-"):
            body["eventId"] = "fixed"
        else:
            body.pop("eventId")
        body["externalId"] = body["externalId"].removesuffix("-route").removesuffix("-hot")
    headers = {name: response.headers.get(name) for name in COMPARED_HEADERS}
    assert response.headers["x-request-id"]
    assert ("ratelimit" in response.headers) == (response.status_code != 401)
    return {"status": response.status_code, "body": body, "headers": headers}


async def both(api: Api, make: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    hot = comparable(await make(api, "hot", False))
    route = comparable(await make(api, "route", True))
    return hot, route


async def twins(api: Api, *names: str) -> None:
    for name in names:
        for suffix in ("hot", "route"):
            response = await api.post("/entities", json={"externalId": f"{name}-{suffix}", "type": "player"})
            assert response.status_code == 201


def post_event(external_id: str, body: Any = None, *, key: str | None = "", **kwargs: Any) -> Any:
    """A request maker; ``key`` other than "" replaces the operator's key (None: no header)."""

    async def make(api: Api, suffix: str, route: bool) -> httpx.Response:
        if key != "":
            api = api.as_key(key)
        path = through(f"/entities/{external_id}-{suffix}/events", route)
        if body is not None:
            kwargs["json"] = body(suffix) if callable(body) else body
        return await api.post(path, **kwargs)

    return make


CASES = {
    "stored": post_event("p", {"type": "transaction", "data": DEPOSIT}),
    "client-id-and-timestamp": post_event(
        "p", lambda s: {"type": "session", "eventId": f"fixed-{s}", "timestamp": "2026-11-27T10:00:00+02:00"}
    ),
    "missing-required-field-warns": post_event("p", {"type": "transaction", "data": {"type": "deposit"}}),
    "pii-field": post_event("p", {"type": "session", "data": {"ip_address": "10.1.2.3"}}),
    "unknown-type": post_event("p", {"type": "jackpot"}),
    "wrong-field-type": post_event("p", {"type": "transaction", "data": {"amount": [1]}}),
    "unknown-entity": post_event("nobody", {"type": "session"}),
    "deleted-entity": post_event("gone", {"type": "session"}),
    "malformed-json": post_event("p", content=b'{"type": ', headers={"content-type": "application/json"}),
    "wrong-content-type": post_event("p", content=b"type=session", headers={"content-type": "text/plain"}),
    "invalid-utf8": post_event("p", content=b'{"type": "\xff"}'),
    "too-large": post_event("p", content=b'{"type": "session", "x": "' + b"a" * (1024 * 1024) + b'"}'),
    "gzip": post_event(
        "p", content=gzip.compress(b'{"type": "session"}'), headers={"content-encoding": "gzip"}
    ),
    "control-character-in-id": post_event("p%01x", {"type": "session"}),
    "slash-in-id": post_event("a%2Fb", {"type": "session"}),
    "no-key": post_event("p", {"type": "session"}, key=None),
    "unknown-key": post_event("p", {"type": "session"}, key="oh_live_nope"),
}


EXPECTED = {
    "stored": 201,
    "client-id-and-timestamp": 201,
    "missing-required-field-warns": 201,
    "pii-field": 201,
    "unknown-type": 422,
    "wrong-field-type": 422,
    "unknown-entity": 404,
    "deleted-entity": 410,
    "malformed-json": 400,
    "wrong-content-type": 415,
    "invalid-utf8": 400,
    "too-large": 413,
    "gzip": 201,
    "control-character-in-id": 422,
    "slash-in-id": 201,
    "no-key": 401,
    "unknown-key": 401,
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_the_hot_path_answers_as_the_route_does(api: Api, case: str) -> None:
    await twins(api, "p", "gone", "a/b")
    for suffix in ("hot", "route"):
        assert (await api.delete(f"/entities/gone-{suffix}")).status_code == 200
    hot, route = await both(api, CASES[case])
    assert hot == route
    assert hot["status"] == EXPECTED[case]


async def test_replays_and_conflicts_answer_alike(api: Api) -> None:
    await twins(api, "p")
    first = post_event("p", lambda s: {"type": "session", "eventId": f"fixed-{s}"})
    replay = first
    conflict = post_event("p", lambda s: {"type": "support", "eventId": f"fixed-{s}"})
    for make, status in ((first, 201), (replay, 200), (conflict, 409)):
        hot, route = await both(api, make)
        assert hot == route
        assert hot["status"] == status


async def test_hot_path_writes_are_counted_under_the_route_template(api: Api) -> None:
    await twins(api, "p")
    assert (await api.post("/entities/p-hot/events", json={"type": "session"})).status_code == 201
    metrics = (await api.get("/metrics")).text
    route = "/operator-data-api/entities/{externalId}/events"
    assert f'onehazel_http_requests_total{{method="POST",route="{route}",status="201"}}' in metrics
    assert 'onehazel_ingested_items_total{kind="events"}' in metrics


async def test_an_unexpected_error_is_the_contracts_500_on_both_paths(
    api: Api, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path runs in front of FastAPI's own error layer: its own guard must give the
    same 500 body as the route's (no text page, no detail of the failure)."""
    await twins(api, "p")

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom: player@example.com")

    monkeypatch.setattr(services.events, "record", broken)
    hot, route = await both(api, post_event("p", {"type": "session"}))
    assert hot == route
    assert hot["status"] == 500
    assert hot["body"]["error"]["code"] == "internal_error"
    assert "example.com" not in str(hot)
