"""The error shape, request ids, auth and body hygiene, through the ASGI app on both databases."""

from __future__ import annotations

import gzip
import json
import logging
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from onehazel.services.auth import CreatedOperator
from onehazel.services.container import Services
from onehazel.storage.tables import entities, events, jobs
from tests.conftest import Api
from tests.helpers import assert_error_shape, error_of, http_scope

MIB = 1024 * 1024


async def nothing_stored(api: Api) -> None:
    listing = await api.get("/entities")
    assert listing.status_code == 200
    assert listing.json()["data"] == []


async def post_raw(api: Api, content: bytes, **headers: str) -> httpx.Response:
    return await api.post(
        "/entities", content=content, headers={"Content-Type": "application/json", **headers}
    )


ENTITY = {"externalId": "p-1", "type": "player", "attributes": {"country": "MT"}}
ENTITY_BYTES = json.dumps(ENTITY).encode()


# --- error shape and request ids ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/entities/ghost", None, 404),
        ("POST", "/entities", {"externalId": "p-1", "type": "croupier"}, 422),
        ("GET", "/entities", {"limit": "0"}, 422),
        ("GET", "/nope", None, 404),
        ("DELETE", "/settings", None, 405),
        ("GET", "/templates/tpl_nope", None, 404),
        ("PUT", "/entities/ghost/state/balance", {"value": "1"}, 404),
    ],
)
async def test_every_error_has_the_contract_shape(
    api: Api, method: str, path: str, body: dict[str, Any] | None, status: int
) -> None:
    if method == "GET" and body:
        response = await api.get(path, params=body)
    else:
        response = await api.request(method, path, json=body)
    assert response.status_code == status
    assert_error_shape(response)


async def test_validation_error_lists_details(api: Api) -> None:
    response = await api.post(
        "/entities", json={"externalId": "p-1", "type": "player", "attributes": {"vip": 1, "email": 2}}
    )
    error = error_of(response, 422, "validation_error")
    assert {d["path"] for d in error["details"]} == {"attributes.vip", "attributes.email"}
    assert error["message"].startswith("2 problems")


async def test_request_id_on_every_response(api: Api) -> None:
    responses = [
        await api.get("/healthz"),
        await api.get("/metrics"),
        await api.get("/settings"),
        await api.get("/entities/ghost"),
        await api.as_key(None).get("/settings"),
        await api.get("/nowhere"),
        await api.post("/entities", json=ENTITY),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)


async def test_client_request_id_is_echoed(api: Api) -> None:
    ok = await api.get("/settings", headers={"X-Request-Id": "client-abc.123"})
    assert ok.headers["x-request-id"] == "client-abc.123"
    bad = await api.get("/entities/ghost", headers={"X-Request-Id": "trace-42"})
    assert bad.headers["x-request-id"] == "trace-42"
    assert bad.json()["error"]["requestId"] == "trace-42"


async def test_client_request_ids_from_tracing_systems_are_echoed(api: Api) -> None:
    for incoming in ("trace/123", "a.b_c~d", "span=7+8@host:1", "x" * 128):
        response = await api.get("/settings", headers={"X-Request-Id": incoming})
        assert response.headers["x-request-id"] == incoming


async def test_unsafe_client_request_id_is_replaced(api: Api) -> None:
    response = await api.get("/settings", headers={"X-Request-Id": "bad id <script>"})
    assert response.headers["x-request-id"] != "bad id <script>"
    assert response.headers["x-request-id"]


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "oh_live_" + "a" * 43,
        "Bearer oh_live_short",
        "Bearer oh_prod_" + "a" * 43,
        "Bearer oh_live_" + "a" * 43,
        "Bearer oh_test_" + "b" * 43,
        "Bearer oh_live_" + "a" * 43 + "x",
    ],
)
async def test_missing_malformed_or_unknown_key_is_401(api: Api, authorization: str | None) -> None:
    anonymous = api.as_key(None)
    headers = {} if authorization is None else {"Authorization": authorization}
    for response in (
        await anonymous.get("/settings", headers=headers),
        await anonymous.get("/entities", headers=headers),
        await anonymous.post("/entities", json=ENTITY, headers=headers),
        await anonymous.get("/entities/p-1", headers=headers),
    ):
        error_of(response, 401, "unauthorized")
    await nothing_stored(api)


async def test_revoked_key_is_401(api: Api, services: Services, operator: CreatedOperator) -> None:
    key_id, key = await services.auth.create_key(operator.operator_id, "live")
    extra = api.as_key(key)
    assert (await extra.post("/entities", json=ENTITY)).status_code == 201
    await services.auth.revoke_key(key_id)
    error_of(await extra.get("/entities/p-1"), 401, "unauthorized")
    error_of(await extra.post("/entities", json={**ENTITY, "externalId": "p-2"}), 401, "unauthorized")
    # the operator's other key still works and sees no p-2
    assert (await api.get("/entities/p-1")).status_code == 200
    error_of(await api.get("/entities/p-2"), 404, "entity_not_found")


async def test_bearer_scheme_is_case_insensitive(api: Api, operator: CreatedOperator) -> None:
    response = await api.as_key(None).get(
        "/settings", headers={"Authorization": f"bearer {operator.live_key}"}
    )
    assert response.status_code == 200


async def test_test_key_sees_separate_data(api: Api, operator: CreatedOperator) -> None:
    assert (await api.post("/entities", json=ENTITY)).status_code == 201
    test_mode = api.as_key(operator.test_key)
    error_of(await test_mode.post("/entities", json=ENTITY), 409, "template_not_configured")
    assert (await test_mode.put("/settings", json={"templateId": "tpl_igaming"})).status_code == 200
    error_of(await test_mode.get("/entities/p-1"), 404, "entity_not_found")
    assert (await test_mode.post("/entities", json={**ENTITY, "type": "game"})).status_code == 201
    assert (await api.get("/entities/p-1")).json()["type"] == "player"


# --- bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b'{"externalId": "p-1",}',
        b"not json",
        b"{'a': 1}",
        b'{"a": 1} trailing',
        b'"unterminated',
        b'{"externalId": "p-1", "n": 1e99999999999999999999}',
    ],
)
async def test_malformed_json_is_400(api: Api, content: bytes) -> None:
    error_of(await post_raw(api, content), 400, "invalid_json")
    await nothing_stored(api)


@pytest.mark.parametrize("content", [b"", b"   ", b"\n"])
async def test_empty_body_is_400(api: Api, content: bytes) -> None:
    error_of(await post_raw(api, content), 400, "invalid_json")
    await nothing_stored(api)


@pytest.mark.parametrize(
    "content",
    [
        b'{"externalId": "p-\xff", "type": "player"}',
        b'{"externalId": "p-\xc3", "type": "player"}',
        b'{"externalId": "p-\xed\xa0\x80", "type": "player"}',  # an encoded surrogate is not UTF-8
    ],
)
async def test_invalid_utf8_is_400(api: Api, content: bytes) -> None:
    error_of(await post_raw(api, content), 400, "invalid_json")
    await nothing_stored(api)


async def test_utf8_bom_and_charset_are_accepted(api: Api) -> None:
    response = await post_raw(
        api, b"\xef\xbb\xbf" + ENTITY_BYTES, **{"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json; charset=latin-1",
    ],
)
async def test_non_json_content_type_is_415(api: Api, content_type: str) -> None:
    response = await api.post("/entities", content=ENTITY_BYTES, headers={"Content-Type": content_type})
    error_of(response, 415, "unsupported_media_type")
    await nothing_stored(api)


async def test_missing_content_type_is_read_as_json(api: Api) -> None:
    request = api.client.build_request(
        "POST",
        "/operator-data-api/entities",
        content=ENTITY_BYTES,
        headers={"Authorization": f"Bearer {api.key}"},
    )
    assert "content-type" not in request.headers
    response = await api.client.send(request)
    assert response.status_code == 201, response.text
    assert (await api.get("/entities/p-1")).json()["attributes"] == {"country": "MT"}


async def test_gzip_body_is_accepted(api: Api) -> None:
    response = await post_raw(api, gzip.compress(ENTITY_BYTES), **{"Content-Encoding": "gzip"})
    assert response.status_code == 201, response.text
    assert (await api.get("/entities/p-1")).json()["attributes"] == {"country": "MT"}


async def test_a_gzip_body_of_several_members_is_read_whole(api: Api) -> None:
    half = len(ENTITY_BYTES) // 2
    members = gzip.compress(ENTITY_BYTES[:half]) + gzip.compress(ENTITY_BYTES[half:])  # as `cat a.gz b.gz`
    response = await post_raw(api, members + b"\x00" * 8, **{"Content-Encoding": "gzip"})  # zero padding too
    assert response.status_code == 201, response.text
    assert (await api.get("/entities/p-1")).json()["attributes"] == {"country": "MT"}


async def test_a_split_gzip_bomb_is_still_413(api: Api) -> None:
    member = gzip.compress(padded_entity(MIB // 2 + 1)[: MIB // 2 + 1], compresslevel=9)
    error_of(await post_raw(api, member * 2, **{"Content-Encoding": "gzip"}), 413, "payload_too_large")
    await nothing_stored(api)


async def test_broken_gzip_is_4xx(api: Api) -> None:
    whole, empty = gzip.compress(ENTITY_BYTES), gzip.compress(b"")
    for content in (
        b"not gzip at all",
        whole[:-10],
        whole + b"trailing bytes",
        whole + whole[:-10],
        empty * 16 + whole,  # past the 16 members a body may have
    ):
        response = await post_raw(api, content, **{"Content-Encoding": "gzip"})
        assert 400 <= response.status_code < 500, response.text
        assert_error_shape(response)
    await nothing_stored(api)


async def test_unknown_content_encoding_is_415(api: Api) -> None:
    response = await post_raw(api, ENTITY_BYTES, **{"Content-Encoding": "br"})
    error_of(response, 415, "unsupported_media_type")
    await nothing_stored(api)


def padded_entity(size: int) -> bytes:
    """A valid entity body of exactly ``size`` bytes (padded with JSON whitespace: the item itself
    stays under the 32 KiB per-item limit, so only the body limit is tested)."""
    head = b'{"externalId": "p-1", "type": "player", "attributes": {"note": "x"}'
    tail = b"}"
    return head + b" " * (size - len(head) - len(tail)) + tail


async def test_body_at_the_limit_is_accepted(api: Api) -> None:
    response = await post_raw(api, padded_entity(MIB))
    assert response.status_code == 201, response.text[:300]


async def test_body_over_1_mib_is_413(api: Api) -> None:
    error = error_of(await post_raw(api, padded_entity(MIB + 1)), 413, "payload_too_large")
    assert "1 MiB" in error["message"]
    await nothing_stored(api)


async def test_body_over_the_limit_without_content_length_is_413(api: Api) -> None:
    async def chunks() -> Any:
        body = padded_entity(2 * MIB)
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = await api.post("/entities", content=chunks(), headers={"Content-Type": "application/json"})
    error = error_of(response, 413, "payload_too_large")
    assert "1 MiB" in error["message"]
    await nothing_stored(api)


async def test_gzip_that_inflates_past_1_mib_is_413(api: Api) -> None:
    for size in (MIB + 1, 64 * MIB):
        bomb = gzip.compress(padded_entity(size), compresslevel=9)
        assert len(bomb) < MIB
        error = error_of(await post_raw(api, bomb, **{"Content-Encoding": "gzip"}), 413, "payload_too_large")
        assert "1 MiB" in error["message"]
    await nothing_stored(api)


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 10_000,
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"externalId": "p-1", "type": "player", "attributes": {"deep": ' + b"[" * 100 + b"]" * 100 + b"}}",
    ],
)
async def test_deep_nesting_is_4xx(api: Api, content: bytes) -> None:
    response = await post_raw(api, content)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert_error_shape(response)
    await nothing_stored(api)


@pytest.mark.parametrize(
    "content",
    [
        b'{"externalId": "p-1", "type": "player", "attributes": {"country": "M\\u0000T"}}',
        b'{"externalId": "p-1", "type": "player", "attributes": {"email": "a\\u0000@example.com"}}',
        b'{"externalId": "p-1", "type": "player", "attributes": {"country": "\\ud800"}}',
        b'{"externalId": "p-1", "type": "player", "attributes": {"k\\u0000": 1}}',
        b'{"externalId": "p-1", "type": "player", "attributes": {"\\udfff": 1}}',
        b'{"externalId": "p-\\ud800", "type": "player"}',
        b'{"externalId": "p-1", "type": "player", "attributes": {"tags": ["ok", "\\ud83d"]}}',
    ],
)
async def test_nul_and_lone_surrogates_are_422_and_not_stored(api: Api, content: bytes) -> None:
    error_of(await post_raw(api, content), 422, "validation_error")
    await nothing_stored(api)
    error_of(await api.get("/entities/p-1"), 404, "entity_not_found")


async def test_paired_surrogate_escapes_are_fine(api: Api) -> None:
    content = b'{"externalId": "p-1", "type": "player", "attributes": {"nick": "\\ud83d\\ude00"}}'
    assert (await post_raw(api, content)).status_code == 201
    assert (await api.get("/entities/p-1")).json()["attributes"] == {"nick": "\U0001f600"}


async def test_nul_in_an_event_or_state_is_422_and_not_stored(api: Api) -> None:
    assert (await api.post("/entities", json=ENTITY)).status_code == 201
    event = await api.post(
        "/entities/p-1/events",
        content=b'{"type": "support", "data": {"topic": "a\\u0000b"}}',
        headers={"Content-Type": "application/json"},
    )
    error_of(event, 422, "validation_error")
    assert (await api.get("/entities/p-1/events")).json()["data"] == []
    state = await api.put(
        "/entities/p-1/state/loyalty_tier",
        content=b'{"value": "\\ud800"}',
        headers={"Content-Type": "application/json"},
    )
    error_of(state, 422, "validation_error")
    error_of(await api.get("/entities/p-1/state/loyalty_tier"), 404, "state_not_found")


@pytest.mark.parametrize("body", [[ENTITY], "p-1", 42, None, True])
async def test_body_that_is_not_an_object_is_422(api: Api, body: Any) -> None:
    error_of(await post_raw(api, json.dumps(body).encode()), 422, "validation_error")
    await nothing_stored(api)


async def test_non_object_bodies_on_other_writes_are_422(api: Api) -> None:
    assert (await api.post("/entities", json=ENTITY)).status_code == 201
    error_of(await api.post("/entities/p-1/events", json=[{"type": "session"}]), 422, "validation_error")
    error_of(await api.put("/entities/p-1/state/balance", json=["1"]), 422, "validation_error")
    error_of(await api.put("/settings", json=[]), 422, "validation_error")
    assert (await api.get("/entities/p-1/events")).json()["data"] == []


async def test_unknown_body_members_are_422(api: Api) -> None:
    error_of(await api.post("/entities", json={**ENTITY, "atributes": {}}), 422, "validation_error")
    await nothing_stored(api)


# --- routes and methods -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/nope", "/operator-data-api", "/operator-data-api/", "/operator-data-api/entitys", "/entities"]
)
async def test_unknown_route_is_404(api: Api, path: str) -> None:
    response = await api.client.get(path, headers={"Authorization": f"Bearer {api.key}"})
    error_of(response, 404, "not_found")


async def test_unknown_route_under_base_path_is_404_even_without_a_key(api: Api) -> None:
    error_of(await api.as_key(None).get("/no-such-thing"), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/settings"),
        ("POST", "/settings"),
        ("PATCH", "/entities/p-1"),
        ("PUT", "/entities/p-1"),
        ("DELETE", "/templates"),
        ("POST", "/entities/p-1/state"),
        ("POST", "/healthz"),
        ("DELETE", "/metrics"),
    ],
)
async def test_wrong_method_is_405(api: Api, method: str, path: str) -> None:
    response = await api.request(method, path, json={})
    error = error_of(response, 405, "method_not_allowed")
    assert method in error["message"]
    assert response.headers.get("allow")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", "/entities", "GET, HEAD, POST"),
        ("PATCH", "/entities/p-1", "GET, HEAD, DELETE"),
        ("POST", "/settings", "GET, HEAD, PUT"),
        ("DELETE", "/entities/p-1/state/balance", "GET, HEAD, PUT"),
        ("GET", "/batch/events", "POST"),
        ("HEAD", "/batch/events", "POST"),
    ],
)
async def test_a_405_allows_every_method_the_path_takes(api: Api, method: str, path: str, allow: str) -> None:
    response = await api.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    if method != "HEAD":
        assert f"{method} is not allowed" in response.json()["error"]["message"]


async def test_head_answers_like_get_without_a_body(api: Api) -> None:
    assert (await api.put("/settings", json={"templateId": "tpl_igaming"})).status_code == 200
    created = await api.post("/entities", json={"externalId": "p-1", "type": "player", "attributes": {}})
    assert created.status_code == 201
    for path in ("/entities/p-1", "/healthz", "/entities/ghost"):
        got, head = await api.get(path), await api.request("HEAD", path)
        assert head.status_code == got.status_code, path
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == got.headers["content-length"]
    # not an export: it would decrypt the whole history, and be audited, for no body
    export = await api.request("HEAD", "/entities/p-1/export")
    assert (export.status_code, export.headers["allow"]) == (405, "GET")


@pytest.mark.parametrize("path", ["/entities/", "/settings/", "/entities/p-1/"])
async def test_a_trailing_slash_is_not_redirected(api: Api, path: str) -> None:
    response = await api.get(path, headers={"Host": "evil.example"})
    error_of(response, 404, "not_found")
    assert "location" not in response.headers


# --- numbers ------------------------------------------------------------------------------------


EXACT_DECIMAL_INTEGERS = (b"1" + b"0" * 30, b"-" + b"9" * 25, b"9223372036854775808")


@pytest.mark.parametrize(
    "literal",
    [
        b"1" + b"0" * 30,
        b"-" + b"9" * 25,
        b"9" * 5000,  # past Python's int-parsing digit limit
        b"1e999",
        b"1e999999999",
        b"1e-999999999",
        b"0e-999999999",
        b"9223372036854775808",
    ],
)
async def test_huge_numbers_are_4xx(api: Api, literal: bytes) -> None:
    assert (await api.post("/entities", json=ENTITY)).status_code == 201
    for field in (b"amount", b"duration_seconds_x"):
        content = (
            b'{"type": "transaction", "data": {"type": "deposit", "currency": "EUR", "'
            + field
            + b'": '
            + literal
            + b"}}"
        )
        response = await api.post(
            "/entities/p-1/events", content=content, headers={"Content-Type": "application/json"}
        )
        if field == b"duration_seconds_x" and literal in (b"1e-999999999", b"0e-999999999"):
            # an undeclared number that is merely tiny is a valid JSON number
            assert response.status_code in (201, 422), response.text
            continue
        if field == b"amount" and literal in EXACT_DECIMAL_INTEGERS:
            # a decimal field takes any JSON number of at most 40 digits, exactly
            assert response.status_code == 201, response.text
            assert response.json()["data"]["amount"] == literal.decode()
            continue
        assert 400 <= response.status_code < 500, response.text[:300]
        assert_error_shape(response)


async def test_huge_numbers_store_nothing(api: Api) -> None:
    assert (await api.post("/entities", json=ENTITY)).status_code == 201
    for literal in (b"1e999999999", b"1" + b"0" * 41):
        content = (
            b'{"type": "transaction", "data": {"type": "deposit", "currency": "EUR", "amount": '
            + literal
            + b"}}"
        )
        response = await api.post(
            "/entities/p-1/events", content=content, headers={"Content-Type": "application/json"}
        )
        error_of(response, 422, "validation_error")
    assert (await api.get("/entities/p-1/events")).json()["data"] == []


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
async def test_nan_and_infinity_are_400(api: Api, literal: bytes) -> None:
    assert (await api.post("/entities", json=ENTITY)).status_code == 201
    content = (
        b'{"type": "transaction", "data": {"type": "deposit", "currency": "EUR", "amount": ' + literal + b"}}"
    )
    response = await api.post(
        "/entities/p-1/events", content=content, headers={"Content-Type": "application/json"}
    )
    error_of(response, 400, "invalid_json")
    state = await api.put(
        "/entities/p-1/state/risk_score",
        content=b'{"value": ' + literal + b"}",
        headers={"Content-Type": "application/json"},
    )
    error_of(state, 400, "invalid_json")
    assert (await api.get("/entities/p-1/events")).json()["data"] == []
    error_of(await api.get("/entities/p-1/state/risk_score"), 404, "state_not_found")


# --- nothing half-written -----------------------------------------------------------------------


async def test_rejected_update_leaves_the_entity_unchanged(api: Api) -> None:
    assert (await api.post("/entities", json=ENTITY)).status_code == 201
    before = (await api.get("/entities/p-1")).json()
    rejected = [
        await post_raw(
            api, b'{"externalId": "p-1", "type": "player", "attributes": {"country": "DE", "vip": 3}}'
        ),
        await post_raw(
            api, b'{"externalId": "p-1", "type": "player", "attributes": {"country": "D\\u0000E"}}'
        ),
        await post_raw(api, b'{"externalId": "p-1", "type": "player", "attributes": {"country": "DE"'),
        await api.post(
            "/entities", content=ENTITY_BYTES.replace(b"MT", b"DE"), headers={"Content-Type": "text/plain"}
        ),
        await post_raw(api, padded_entity(MIB + 10)),
    ]
    assert [r.status_code for r in rejected] == [422, 422, 400, 415, 413]
    assert (await api.get("/entities/p-1")).json() == before


# --- a client that goes away mid-body -------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/entities/p-1/events", "/entities", "/batch/events"],
    ids=["hot path", "route", "batch"],
)
async def test_a_client_gone_mid_body_is_a_499_not_a_500(api: Api, services: Services, path: str) -> None:
    """Clients time out and abort uploads: that is not a server error. Nothing is stored, the
    request counts as 499 (as nginx logs it), and no error with a traceback is logged."""
    from prometheus_client import generate_latest

    from onehazel.api.app import BASE, create_app

    app = create_app(lambda: services_ready(services))
    app.state.services = services
    assert (await api.post("/entities", json={"externalId": "p-1", "type": "player"})).status_code == 201
    messages = [
        {"type": "http.request", "body": b'{"type": "login", "externalId": ', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [
        (b"authorization", f"Bearer {api.key}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", b"1000"),
    ]
    scope = http_scope("POST", BASE + path, headers)
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    logging.getLogger("onehazel").addHandler(handler)
    try:
        await app(scope, receive, send)
    finally:
        logging.getLogger("onehazel").removeHandler(handler)

    assert errors == []
    assert sent[0]["status"] == 499
    metrics = generate_latest(app.state.metrics.registry).decode()
    assert 'status="499"' in metrics
    assert 'status="500"' not in metrics
    ws_id = (await services.auth.authenticate(f"Bearer {api.key}")).id
    for table, stored in ((jobs, 0), (events, 0), (entities, 1)):  # p-1 was made above
        async with services.core.store.begin() as uow:
            query = sa.select(sa.func.count()).select_from(table).where(table.c.workspace_id == ws_id)
            assert (await uow.conn.execute(query)).scalar_one() == stored, table.name


async def services_ready(services: Services) -> Services:
    return services
