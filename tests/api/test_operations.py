"""Health, readiness, Prometheus metrics and the OpenAPI document, on both databases."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families

from onehazel.api.app import BASE, create_app
from onehazel.services.container import Services
from tests.conftest import Api

WRITE_METHODS = {"post", "put", "patch"}
HTTP_METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, keyed by (name, sorted labels)."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(page: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


async def metrics_page(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def openapi(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


async def _no_services() -> Services:
    raise AssertionError("the OpenAPI document needs no services")


# --- health -------------------------------------------------------------------------------------


async def test_healthz(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


async def test_readyz_when_the_database_answers(http: httpx.AsyncClient) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_operations_need_no_key(http: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert (await http.get(path)).status_code == 200, path


# --- metrics ------------------------------------------------------------------------------------


async def test_metrics_count_requests_by_route_and_status(api: Api) -> None:
    before = await metrics_page(api)
    route = BASE + "/entities/{externalId}"
    base_404 = value(before, "onehazel_http_requests_total", method="GET", route=route, status="404")
    for _ in range(3):
        assert (await api.get("/entities/ghost")).status_code == 404
    assert (await api.post("/entities", json={"externalId": "p-1", "type": "player"})).status_code == 201
    assert (await api.get("/entities/p-1")).status_code == 200
    after = await metrics_page(api)
    assert (
        value(after, "onehazel_http_requests_total", method="GET", route=route, status="404") == base_404 + 3
    )
    assert value(after, "onehazel_http_requests_total", method="GET", route=route, status="200") >= 1
    created = value(
        after, "onehazel_http_requests_total", method="POST", route=BASE + "/entities", status="201"
    )
    assert created >= 1
    # routes are labelled by template, never by the raw path (no ids, no PII in labels)
    labels = {dict(key[1]).get("route", "") for key in after}
    assert not any("ghost" in label or "p-1" in label for label in labels)


async def test_metrics_have_a_latency_histogram(api: Api) -> None:
    await api.get("/settings")
    page = await metrics_page(api)
    route = BASE + "/settings"
    count = value(page, "onehazel_http_request_duration_seconds_count", method="GET", route=route)
    assert count >= 1
    buckets = {
        dict(labels)["le"]: v
        for (name, labels), v in page.items()
        if name == "onehazel_http_request_duration_seconds_bucket"
        and dict(labels).get("route") == route
        and dict(labels).get("method") == "GET"
    }
    assert "+Inf" in buckets
    assert buckets["+Inf"] == count
    ordered = sorted(buckets.items(), key=lambda kv: float(kv[0]))
    assert [v for _, v in ordered] == sorted(v for _, v in ordered)  # cumulative


async def test_ingested_items_counter_increases_by_kind(api: Api) -> None:
    before = await metrics_page(api)
    kinds = ("entities", "events", "states")
    start = {k: value(before, "onehazel_ingested_items_total", kind=k) for k in kinds}
    assert (await api.post("/entities", json={"externalId": "p-1", "type": "player"})).status_code == 201
    assert (await api.post("/entities", json={"externalId": "p-2", "type": "player"})).status_code == 201
    event = {"type": "session", "data": {}, "eventId": "e-1"}
    assert (await api.post("/entities/p-1/events", json=event)).status_code == 201
    state = {"value": "gold", "timestamp": "2026-01-01T00:00:00Z"}
    assert (await api.put("/entities/p-1/state/loyalty_tier", json=state)).status_code == 200
    mid = await metrics_page(api)
    assert value(mid, "onehazel_ingested_items_total", kind="entities") == start["entities"] + 2
    assert value(mid, "onehazel_ingested_items_total", kind="events") == start["events"] + 1
    assert value(mid, "onehazel_ingested_items_total", kind="states") == start["states"] + 1
    # rejected writes, exact replays and stale states store nothing and count nothing
    assert (await api.post("/entities", json={"externalId": "x", "type": "croupier"})).status_code == 422
    assert (await api.post("/entities/p-1/events", json=event)).status_code == 200
    stale = {"value": "bronze", "timestamp": "2025-01-01T00:00:00Z"}
    assert (await api.put("/entities/p-1/state/loyalty_tier", json=stale)).json()["applied"] is False
    after = await metrics_page(api)
    for kind in kinds:
        assert value(after, "onehazel_ingested_items_total", kind=kind) == value(
            mid, "onehazel_ingested_items_total", kind=kind
        )


async def test_metrics_text_has_help_and_type_lines(http: httpx.AsyncClient) -> None:
    text = (await http.get("/metrics")).text
    for name, kind in (
        ("onehazel_http_requests_total", "counter"),
        ("onehazel_http_request_duration_seconds", "histogram"),
        ("onehazel_ingested_items_total", "counter"),
    ):
        assert re.search(rf"^# TYPE {name} {kind}$", text, re.MULTILINE), name
        assert f"# HELP {name} " in text


# --- OpenAPI ------------------------------------------------------------------------------------


def served_routes(routes: list[Any]) -> Iterator[tuple[str, set[str], bool]]:
    """(path template, methods, include_in_schema) of every route the app serves.

    FastAPI up to 0.15x lists included routes flat in ``app.routes``; newer versions
    list one node per included router, which expands to the effective routes.
    """
    for route in routes:
        expand = getattr(route, "effective_route_contexts", None)
        if expand is not None:
            for context in expand():
                yield context.path, set(context.methods), context.include_in_schema
        elif isinstance(route, APIRoute):
            yield route.path, set(route.methods), route.include_in_schema
        else:
            yield route.path, set(getattr(route, "methods", None) or ()), False


async def test_openapi_documents_every_route(http: httpx.AsyncClient) -> None:
    app = create_app(_no_services)
    documented = {(path, method) for path, ops in (await openapi(http))["paths"].items() for method in ops}
    routed: set[tuple[str, str]] = set()
    for path, methods, in_schema in served_routes(app.routes):
        if not in_schema:
            # the only undocumented routes are the documentation's own
            assert path in ("/openapi.json", "/docs", "/docs/oauth2-redirect"), path
            continue
        routed |= {(path, m.lower()) for m in methods if m.lower() in HTTP_METHODS}
    assert routed == documented
    paths = {p for p, _ in routed}
    for expected in (
        "/healthz",
        "/readyz",
        "/metrics",
        BASE + "/settings",
        BASE + "/templates",
        BASE + "/templates/{templateId}",
        BASE + "/entities",
        BASE + "/entities/{externalId}",
        BASE + "/entities/{externalId}/events",
        BASE + "/entities/{externalId}/state",
        BASE + "/entities/{externalId}/state/{key}",
    ):
        assert expected in paths


async def test_openapi_write_routes_have_a_request_body_schema(http: httpx.AsyncClient) -> None:
    doc = await openapi(http)
    schemas = doc["components"]["schemas"]
    writes = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method not in WRITE_METHODS:
                continue
            writes += 1
            body = op.get("requestBody")
            assert body, f"{method} {path} has no requestBody"
            schema = body["content"]["application/json"]["schema"]
            ref = schema.get("$ref", "")
            assert ref.startswith("#/components/schemas/"), (path, schema)
            target = schemas[ref.rsplit("/", 1)[1]]
            assert target.get("properties"), (path, ref)
    assert writes >= 4
    entity_in = schemas[
        doc["paths"][BASE + "/entities"]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "$ref"
        ].rsplit("/", 1)[1]
    ]
    assert {"externalId", "type", "attributes"} <= set(entity_in["properties"])


async def test_openapi_bearer_security_on_base_path_routes(http: httpx.AsyncClient) -> None:
    doc = await openapi(http)
    scheme = doc["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path.startswith(BASE):
                assert op.get("security") == [{"bearer": []}], (method, path)
                assert "401" in op["responses"], (method, path)
            else:
                assert not op.get("security"), (method, path)


async def test_openapi_errors_reference_error_body(http: httpx.AsyncClient) -> None:
    doc = await openapi(http)
    schemas = doc["components"]["schemas"]
    assert "ErrorBody" in schemas
    assert "HTTPValidationError" not in schemas
    error_info = schemas[schemas["ErrorBody"]["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
    assert {"code", "message", "requestId"} <= set(error_info["required"])
    assert "details" in error_info["properties"]
    error_responses = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if not status.startswith(("4", "5")) or not path.startswith(BASE):
                    continue
                error_responses += 1
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert error_responses > 20


async def test_openapi_documents_the_headers_answers_carry(api: Api) -> None:
    """What /openapi.json says an answer's headers are is what the server sends."""
    doc = (await api.get("/openapi.json")).json()
    watched = ("x-request-id", "ratelimit", "ratelimit-policy")
    await api.put("/settings", json={"templateId": "tpl_igaming"})
    calls = [
        ("PUT", "/settings", {"json": {"templateId": "tpl_igaming"}}, "/settings"),
        ("POST", "/entities", {"json": {"externalId": "h-1", "type": "player"}}, "/entities"),
        ("GET", "/entities/h-1", {}, "/entities/{externalId}"),
        ("GET", "/entities/nobody", {}, "/entities/{externalId}"),
        ("POST", "/entities/h-1/events", {"json": {"type": "login"}}, "/entities/{externalId}/events"),
        ("GET", "/batch/jobs/job_missing", {}, "/batch/jobs/{jobId}"),
        ("GET", "/healthz", {}, None),
    ]
    for method, path, kwargs, template in calls:
        response = await api.request(method, path, **kwargs)
        documented_path = "/healthz" if template is None else BASE + template
        answer = doc["paths"][documented_path][method.lower()]["responses"][str(response.status_code)]
        documented = {name.lower() for name in answer.get("headers", {})}
        sent = {name for name in watched if name in response.headers}
        assert sent == documented & set(watched), (method, path, response.status_code, sent, documented)
    unauthorized = await api.as_key(None).get("/settings")
    answer = doc["paths"][BASE + "/settings"]["get"]["responses"]["401"]
    assert (
        {name.lower() for name in answer["headers"]}
        == {"x-request-id"}
        == {name for name in watched if name in unauthorized.headers}
    )


async def test_openapi_documents_query_parameters(http: httpx.AsyncClient) -> None:
    doc = await openapi(http)
    listing = doc["paths"][BASE + "/entities"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert {"type", "updatedSince", "limit", "cursor"} <= names
    events = doc["paths"][BASE + "/entities/{externalId}/events"]["get"]
    names = {p["name"] for p in events["parameters"]}
    assert {"externalId", "type", "from", "to", "order", "limit", "cursor"} <= names


async def test_docs_page_is_html(http: httpx.AsyncClient) -> None:
    response = await http.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
