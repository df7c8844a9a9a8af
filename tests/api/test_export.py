"""GET /entities/{externalId}/export: the subject-access export, on SQLite and PostgreSQL.

What a data subject (through the operator) receives: the entity, every event and
every state, PII decrypted and money exact, as NDJSON that the server streams
page by page, never building the whole body, and never holding a transaction
open while the client reads.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import httpx
import orjson

from onehazel.api.app import BASE, create_app
from onehazel.jobs.worker import Worker
from onehazel.services.container import Services
from tests.conftest import Api
from tests.helpers import http_scope

PLAYER = {
    "email": "ada@example.com",
    "first_name": "Ada",
    "date_of_birth": "1990-02-03",
    "country": "MT",
    "segment": "vip",
}
EXACT = "12345678901234567890.123456789"


def at(second: int) -> str:
    return f"2026-11-27T10:{second // 60:02d}:{second % 60:02d}Z"


def ndjson(body: bytes) -> list[dict[str, Any]]:
    assert body.endswith(b"\n")
    return [orjson.loads(line) for line in body.split(b"\n")[:-1]]


def error_of(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code, response.text


async def player(api: Api, external_id: str = "p-1", **attributes: Any) -> None:
    body = {"externalId": external_id, "type": "player", "attributes": {**PLAYER, **attributes}}
    response = await api.post("/entities", json=body)
    assert response.status_code == 201, response.text


async def post_event(api: Api, external_id: str, body: dict[str, Any]) -> None:
    response = await api.post(f"/entities/{external_id}/events", json=body)
    assert response.status_code == 201, response.text


async def export(api: Api, external_id: str = "p-1") -> list[dict[str, Any]]:
    response = await api.get(f"/entities/{external_id}/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    return ndjson(response.content)


async def as_read_through_the_api(api: Api, external_id: str = "p-1") -> dict[str, Any]:
    entity = await api.get(f"/entities/{external_id}")
    events = await api.get(f"/entities/{external_id}/events", params={"order": "asc", "limit": 1000})
    states = await api.get(f"/entities/{external_id}/state")
    assert {entity.status_code, events.status_code, states.status_code} == {200}
    assert events.json()["nextCursor"] is None
    return {"entity": entity.json(), "events": events.json()["data"], "states": states.json()["states"]}


def split(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The lines by kind, checking they come in the documented order."""
    kinds = [line["kind"] for line in lines]
    order = {"entity": 0, "event": 1, "state": 2, "end": 3, "error": 3}
    assert kinds == sorted(kinds, key=order.__getitem__), kinds
    assert kinds[0] == "entity"
    assert kinds.count("entity") == 1
    by_kind: dict[str, Any] = {kind: [] for kind in order}
    for line in lines:
        by_kind[line.pop("kind")].append(line)
    return by_kind


async def mixed_history(api: Api, count: int, external_id: str = "p-1") -> None:
    """``count`` events posted out of timestamp order: transactions, and sessions with PII."""
    for i in reversed(range(count)):
        if i % 3 == 0:
            body = {"type": "session", "data": {"ip_address": f"10.0.0.{i}", "device": "ios"}}
        else:
            body = {
                "type": "transaction",
                "data": {"type": "deposit", "amount": f"{i}.10", "currency": "EUR"},
            }
        await post_event(api, external_id, {**body, "eventId": f"e-{i:03d}", "timestamp": at(i)})


# --- content ------------------------------------------------------------------------------------


async def test_export_holds_the_entity_every_event_and_state_pii_decrypted(
    api: Api, services: Services
) -> None:
    services.exports.page_size = 4  # 23 events: six internal pages
    await player(api)
    await mixed_history(api, 23)
    await post_event(
        api,
        "p-1",
        {
            "eventId": "e-exact",
            "type": "transaction",
            "data": {"type": "withdrawal", "amount": EXACT, "currency": "BTC"},
            "timestamp": at(500),
        },
    )
    for key, value in (("balance", "1234.5600"), ("kyc_status", "verified"), ("risk_score", 17)):
        response = await api.put(f"/entities/p-1/state/{key}", json={"value": value, "timestamp": at(1)})
        assert response.status_code == 200, response.text

    lines = await export(api)

    parts = split(lines)
    expected = await as_read_through_the_api(api)
    assert parts["entity"] == [expected["entity"]]
    assert parts["entity"][0]["attributes"] == PLAYER  # PII in plain text: it is the subject's own
    assert parts["event"] == expected["events"]
    assert [e["eventId"] for e in parts["event"]] == [f"e-{i:03d}" for i in range(23)] + ["e-exact"]
    assert parts["event"][0]["data"] == {"ip_address": "10.0.0.0", "device": "ios"}
    assert parts["event"][-1]["data"]["amount"] == EXACT
    assert parts["state"] == [{"key": k, **v} for k, v in sorted(expected["states"].items())]
    assert {s["key"]: s["value"] for s in parts["state"]} == {
        "balance": "1234.5600",
        "kyc_status": "verified",
        "risk_score": 17,
    }
    (end,) = parts["end"]
    assert (end["externalId"], end["events"], end["states"]) == ("p-1", 24, 3)
    assert end["exportedAt"].endswith("Z")
    assert parts["error"] == []


async def test_an_entity_without_events_or_states(api: Api) -> None:
    await player(api, "quiet")

    lines = await export(api, "quiet")

    assert [line["kind"] for line in lines] == ["entity", "end"]
    assert lines[0]["externalId"] == "quiet"
    assert (lines[1]["events"], lines[1]["states"]) == (0, 0)


async def test_an_exact_multiple_of_the_page_size(api: Api, services: Services) -> None:
    services.exports.page_size = 5
    await player(api)
    await mixed_history(api, 10)

    parts = split(await export(api))

    assert [e["eventId"] for e in parts["event"]] == [f"e-{i:03d}" for i in range(10)]
    assert parts["end"][0]["events"] == 10


async def test_export_of_an_external_id_with_a_slash(api: Api) -> None:
    await player(api, "team/ada")
    await post_event(api, "team%2Fada", {"type": "support", "data": {"topic": "limits"}})

    lines = await export(api, "team%2Fada")

    assert lines[0]["externalId"] == "team/ada"
    assert lines[1]["data"] == {"topic": "limits"}


async def test_the_response_is_not_cached(api: Api) -> None:
    await player(api)
    response = await api.get("/entities/p-1/export")
    assert response.headers["cache-control"] == "no-store"


# --- errors -------------------------------------------------------------------------------------


async def test_unknown_entity_is_404(api: Api) -> None:
    error_of(await api.get("/entities/ghost/export"), 404, "entity_not_found")


async def test_deleted_entity_is_410(api: Api) -> None:
    await player(api)
    await mixed_history(api, 3)
    assert (await api.delete("/entities/p-1")).status_code == 200

    response = await api.get("/entities/p-1/export")

    error_of(response, 410, "entity_deleted")
    assert "ada@example.com" not in response.text


async def test_another_workspace_gets_404(api: Api, services: Services) -> None:
    await player(api)
    other = await services.auth.create_operator("other")
    for intruder in (api.as_key(other.live_key), api.as_key(other.test_key)):
        response = await intruder.get("/entities/p-1/export")
        error_of(response, 404, "entity_not_found")
        assert "ada@example.com" not in response.text


async def test_no_key_is_401(api: Api) -> None:
    await player(api)
    error_of(await api.as_key(None).get("/entities/p-1/export"), 401, "unauthorized")


async def test_a_bad_external_id_is_422(api: Api) -> None:
    error_of(await api.get("/entities/" + "x" * 257 + "/export"), 422, "validation_error")


# --- streaming ----------------------------------------------------------------------------------


async def test_the_service_reads_lazily_page_by_page(api: Api, services: Services) -> None:
    """An event written after the first page was sent still appears: nothing was read ahead.

    On SQLite (one connection per process) the write would also wait for ever if
    the export held its transaction open between pages.
    """
    services.exports.page_size = 5
    await player(api)
    await mixed_history(api, 12)
    ws = await services.auth.authenticate(f"Bearer {api.key}")

    stream = await services.exports.start(ws, "p-1")
    chunks = aiter(stream)
    first = ndjson(await anext(chunks))
    page = ndjson(await anext(chunks))
    await post_event(api, "p-1", {"eventId": "late", "type": "support", "data": {}, "timestamp": at(999)})
    rest = [line for chunk in [c async for c in chunks] for line in ndjson(chunk)]

    assert [line["kind"] for line in first] == ["entity"]
    assert [line["eventId"] for line in page] == [f"e-{i:03d}" for i in range(5)]
    events = [line["eventId"] for line in rest if line["kind"] == "event"]
    assert events == [f"e-{i:03d}" for i in range(5, 12)] + ["late"]
    assert rest[-1]["kind"] == "end"
    assert (stream.events, stream.failure) == (13, None)


async def test_a_deletion_while_streaming_ends_the_stream_with_an_error_line(
    api: Api, services: Services
) -> None:
    services.exports.page_size = 5
    await player(api)
    await mixed_history(api, 12)
    ws = await services.auth.authenticate(f"Bearer {api.key}")

    stream = await services.exports.start(ws, "p-1")
    chunks = aiter(stream)
    await anext(chunks)
    await anext(chunks)
    assert (await api.delete("/entities/p-1")).status_code == 200
    rest = [line for chunk in [c async for c in chunks] for line in ndjson(chunk)]

    assert rest == [
        {"kind": "error", "error": {"code": "entity_deleted", "message": rest[0]["error"]["message"]}}
    ]
    assert stream.failure is not None
    assert stream.failure.code == "entity_deleted"
    assert stream.events == 5


class AsgiCapture:
    """Calls the ASGI app directly and keeps each body message the server sends.

    httpx's ASGITransport joins the body into one piece; the server's own
    messages show whether it streamed.
    """

    def __init__(self, services: Services) -> None:
        self.app = create_app(self._ready)
        self.app.state.services = services
        self.services = services
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []

    async def _ready(self) -> Services:
        return self.services

    async def get(self, path: str, key: str, *, on_chunk: Any = None) -> None:
        headers = [(b"host", b"testserver"), (b"authorization", f"Bearer {key}".encode())]
        scope = http_scope("GET", BASE + path, headers)
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # the client stays connected until the response ends
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            elif message["type"] == "http.response.body" and message.get("body"):
                self.chunks.append(message["body"])
                if on_chunk is not None:
                    await on_chunk(len(self.chunks))

        await self.app(scope, receive, send)


async def test_the_server_sends_the_body_page_by_page_while_reading(api: Api, services: Services) -> None:
    services.exports.page_size = 5
    await player(api)
    await mixed_history(api, 12)
    capture = AsgiCapture(services)

    async def write_meanwhile(sent: int) -> None:
        if sent == 2:  # the entity and the first page are out; the rest is not read yet
            await post_event(
                api, "p-1", {"eventId": "late", "type": "support", "data": {}, "timestamp": at(999)}
            )

    await capture.get("/entities/p-1/export", api.key or "", on_chunk=write_meanwhile)

    assert capture.status == 200
    assert capture.headers["content-type"] == "application/x-ndjson"
    assert "content-length" not in capture.headers
    pages = [ndjson(chunk) for chunk in capture.chunks]
    assert [len(p) for p in pages] == [1, 5, 5, 3, 1]  # entity; 13 events by 5; end
    assert pages[3][-1]["eventId"] == "late"


async def _fill_with_batches(api: Api, services: Services, external_id: str, total: int) -> None:
    """``total`` events (every fifth with PII) through the batch API, 5000 per job."""
    for start in range(0, total, 5000):
        events = []
        for i in range(start, min(start + 5000, total)):
            if i % 5 == 0:
                data: dict[str, Any] = {"ip_address": f"192.0.2.{i % 250}"}
                kind = "session"
            else:
                data, kind = {"type": "bet", "amount": f"{i}.01", "currency": "EUR"}, "transaction"
            events.append(
                {
                    "externalId": external_id,
                    "eventId": f"big-{i:06d}",
                    "type": kind,
                    "data": data,
                    "timestamp": at(i % 3600),
                }
            )
        accepted = await api.post("/batch/events", json={"events": events})
        assert accepted.status_code == 202, accepted.text
    worker = Worker(services)
    while await worker.run_once():
        pass


async def test_twenty_thousand_events_stream_in_constant_memory(api: Api, services: Services) -> None:
    total, page = 20_000, 250
    services.exports.page_size = page
    await player(api, "big")
    await _fill_with_batches(api, services, "big", total)
    ws = await services.auth.authenticate(f"Bearer {api.key}")

    async def consume() -> tuple[int, list[int], list[bytes]]:
        """Bytes sent, lines per chunk, and the last line (parsed afterwards: not traced)."""
        size, lines, last = 0, [], b""
        async for chunk in await services.exports.start(ws, "big"):
            size += len(chunk)
            lines.append(chunk.count(b"\n"))
            last = chunk.rsplit(b"\n", 2)[-2]
        return size, lines, [last]

    await consume()  # warm up: statement caches and the like are not the export's memory
    tracemalloc.start()
    try:
        size, lines, (last,) = await consume()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    end = orjson.loads(last)
    assert (end["kind"], end["events"]) == ("end", total)
    assert lines == [1] + [page] * (total // page) + [1]  # entity, pages of events, end
    # Building the whole export would hold all of it (several MB) at once; streaming holds a page.
    assert size > 3_000_000
    assert peak < size / 3, (peak, size)


# --- documentation ------------------------------------------------------------------------------


async def test_openapi_documents_the_ndjson_lines(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/openapi.json")).json()
    operation = doc["paths"][BASE + "/entities/{externalId}/export"]["get"]
    ok = operation["responses"]["200"]
    assert list(ok["content"]) == ["application/x-ndjson"]
    refs = [r["$ref"].rsplit("/", 1)[1] for r in ok["content"]["application/x-ndjson"]["schema"]["oneOf"]]
    schemas = doc["components"]["schemas"]
    kinds = {schemas[name]["properties"]["kind"]["const"] for name in refs}
    assert kinds == {"entity", "event", "state", "end", "error"}
    assert {"404", "410", "401"} <= set(operation["responses"])
    assert '"kind": "end"' in ok["description"]


async def test_export_is_read_only(api: Api) -> None:
    await player(api)
    error_of(await api.post("/entities/p-1/export", json={}), 405, "method_not_allowed")
