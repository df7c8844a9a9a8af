"""The client's own logic against ``httpx.MockTransport``: retries, splitting, the track() buffer.

Sleeps go through a recording hook (no test waits for a backoff), and the fake API
(``fake_api.FakeApi``) stores events by eventId and jobs by Idempotency-Key, so
"nothing twice" is checked on what reached the server, not on the client's word.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

import onehazel.client as oh
from onehazel.client import AsyncClient, Client
from tests.client.fake_api import FakeApi, error

URL = "http://oh.test"
KEY = "oh_test_secret"
HANG = 30.0  # only catches a hang: waiting for the flush thread never takes this long


class Recorder:
    """Collects on_error/on_drop calls and sleeps."""

    def __init__(self) -> None:
        self.errors: list[tuple[list[dict[str, Any]], str]] = []
        self.drops: list[tuple[list[dict[str, Any]], str]] = []
        self.sleeps: list[float] = []

    def on_error(self, items: list[dict[str, Any]], reason: str) -> None:
        self.errors.append((items, reason))

    def on_drop(self, items: list[dict[str, Any]], reason: str) -> None:
        self.drops.append((items, reason))

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.fixture
def fake() -> FakeApi:
    return FakeApi()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def make(fake: FakeApi, rec: Recorder) -> Iterator[Any]:
    """Build Clients on the fake API; every one is closed after the test."""
    made: list[Client] = []

    def build(**options: Any) -> Client:
        defaults: dict[str, Any] = {
            "transport": httpx.MockTransport(fake),
            "sleep": rec.sleep,
            "flush_interval": 3600.0,
            "on_error": rec.on_error,
            "on_drop": rec.on_drop,
        }
        client = Client(KEY, URL, **{**defaults, **options})
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


@pytest.fixture
async def amake(fake: FakeApi, rec: Recorder) -> Any:
    made: list[AsyncClient] = []

    def build(**options: Any) -> AsyncClient:
        defaults: dict[str, Any] = {
            "transport": httpx.MockTransport(fake),
            "sleep": rec.asleep,
            "flush_interval": 3600.0,
            "on_error": rec.on_error,
            "on_drop": rec.on_drop,
        }
        client = AsyncClient(KEY, URL, **{**defaults, **options})
        made.append(client)
        return client

    yield build
    for client in made:
        await client.close()


# -- configuration ------------------------------------------------------------------------------


def test_api_key_and_url_default_to_the_environment(monkeypatch: pytest.MonkeyPatch, fake: FakeApi) -> None:
    monkeypatch.setenv("ONEHAZEL_API_KEY", "oh_live_fromenv")
    monkeypatch.setenv("ONEHAZEL_API_URL", "http://env.example:9999/")
    with Client(transport=httpx.MockTransport(fake)) as client:
        client.settings()
    (request,) = fake.requests
    assert str(request.url) == "http://env.example:9999/operator-data-api/settings"
    assert request.headers["Authorization"] == "Bearer oh_live_fromenv"


def test_url_defaults_to_the_local_server_and_base_path_is_added_once(
    monkeypatch: pytest.MonkeyPatch, fake: FakeApi
) -> None:
    monkeypatch.delenv("ONEHAZEL_API_URL", raising=False)
    with Client(KEY, transport=httpx.MockTransport(fake)) as client:
        client.settings()
    with Client(KEY, "http://h:1/operator-data-api", transport=httpx.MockTransport(fake)) as client:
        client.settings()
    assert [str(r.url) for r in fake.requests] == [
        "http://127.0.0.1:8080/operator-data-api/settings",
        "http://h:1/operator-data-api/settings",
    ]


def test_a_missing_api_key_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONEHAZEL_API_KEY", raising=False)
    with pytest.raises(oh.ConfigurationError, match="ONEHAZEL_API_KEY"):
        Client()
    with pytest.raises(oh.ConfigurationError, match="ONEHAZEL_API_KEY"):
        AsyncClient(base_url=URL)


def test_a_base_url_without_scheme_is_refused() -> None:
    with pytest.raises(oh.ConfigurationError, match="http"):
        Client(KEY, "127.0.0.1:8080")


def test_the_public_names_are_pinned() -> None:
    assert oh.__all__ == sorted(oh.__all__)
    assert set(oh.__all__) == {
        "APIError", "AsyncClient", "BadRequest", "BatchTooLarge", "Client", "ClientClosed",
        "ConfigurationError", "Conflict", "EntityDeleted", "EntityNotFound", "EntityTypeConflict",
        "EventIdConflict", "IdempotencyConflict", "JobNotFound", "MethodNotAllowed", "NotFound",
        "OneHazelError", "PayloadTooLarge", "PiiUnreadable", "RateLimited", "ServerError",
        "StateNotFound", "TemplateNotConfigured", "TemplateNotFound", "TransportError",
        "Unauthorized", "Unavailable", "UnsupportedMediaType", "ValidationError", "WaitTimeout",
    }  # fmt: skip


def test_the_client_imports_nothing_from_the_server() -> None:
    script = (
        "import sys, onehazel.client; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('onehazel', 'fastapi', 'starlette', 'sqlalchemy', 'pydantic', 'cryptography', 'orjson')))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)  # a printed list of module names
    assert [m for m in loaded if not m.startswith("onehazel.client")] == ["onehazel"]


# -- requests -----------------------------------------------------------------------------------


def test_each_method_sends_the_contracts_request(make: Any, fake: FakeApi) -> None:
    client = make()
    client.upsert_entity("p/1 x", "player", {"email": "a@example.com", "credit": Decimal("10.50")})
    client.get_entity("p/1 x")
    client.delete_entity("p/1 x")
    client.set_state("p1", "balance", Decimal("1E+2"), timestamp="2026-11-27T10:00:00Z")
    client.get_state("p1")
    client.get_state("p1", "balance")
    client.update_settings(template_id="tpl_igaming", retention={"eventsDays": 30})
    client.settings()
    with pytest.raises(oh.JobNotFound):
        client.get_job("job_1")
    sent = [
        (r.method, r.url.raw_path.decode(), json.loads(r.content) if r.content else None)
        for r in fake.requests
    ]
    assert sent == [
        ("POST", "/operator-data-api/entities",
         {"externalId": "p/1 x", "type": "player",
          "attributes": {"email": "a@example.com", "credit": "10.50"}}),
        ("GET", "/operator-data-api/entities/p%2F1%20x", None),
        ("DELETE", "/operator-data-api/entities/p%2F1%20x", None),
        ("PUT", "/operator-data-api/entities/p1/state/balance",
         {"value": "100", "timestamp": "2026-11-27T10:00:00Z"}),
        ("GET", "/operator-data-api/entities/p1/state", None),
        ("GET", "/operator-data-api/entities/p1/state/balance", None),
        ("PUT", "/operator-data-api/settings",
         {"templateId": "tpl_igaming", "retention": {"eventsDays": 30}}),
        ("GET", "/operator-data-api/settings", None),
        ("GET", "/operator-data-api/batch/jobs/job_1", None),
    ]  # fmt: skip
    assert all(r.headers["Authorization"] == f"Bearer {KEY}" for r in fake.requests)


def test_decimals_are_sent_as_exact_strings_and_nan_is_refused(make: Any, fake: FakeApi) -> None:
    client = make()
    client.track("p1", "transaction", {"amount": Decimal("12345678901234567890.12"), "currency": "EUR"})
    client.flush()
    (batch,) = fake.batches()
    assert batch[0]["data"]["amount"] == "12345678901234567890.12"
    with pytest.raises(ValueError, match="Out of range float"):
        client.upsert_entity("p1", "player", {"score": float("nan")})


def test_naive_timestamps_are_refused_before_sending(make: Any, fake: FakeApi) -> None:
    import datetime as dt

    client = make()
    with pytest.raises(ValueError, match="timezone"):
        client.track("p1", "session", timestamp=dt.datetime(2026, 1, 1))
    client.track("p1", "session", timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    client.flush()
    assert fake.batches()[0][0]["timestamp"] == "2026-01-01T00:00:00Z"


def test_list_events_follows_cursors_to_the_end(make: Any, fake: FakeApi) -> None:
    client = make()
    for n in range(5):
        client.track("p1", "session", {"n": n})
    client.flush()
    events = list(client.list_events("p1", type="session", from_="2026-01-01T00:00:00Z", limit=2))
    assert [e["data"]["n"] for e in events] == [0, 1, 2, 3, 4]
    pages = fake.sent("/entities/p1/events")
    assert len(pages) == 3
    assert dict(pages[0].url.params) == {
        "type": "session",
        "order": "asc",
        "limit": "2",
        "from": "2026-01-01T00:00:00Z",
    }
    assert pages[1].url.params["cursor"] == "2"


def test_job_items_follows_cursors_and_filters(make: Any, fake: FakeApi) -> None:
    client = make()
    (job,) = client.submit_batch("events", [{"externalId": "p", "type": "bad"} for _ in range(5)])
    assert [i["index"] for i in client.job_items(job["jobId"], status="failed")] == [0, 1, 2, 3, 4]
    assert all(r.url.params["status"] == "failed" for r in fake.sent(f"/batch/jobs/{job['jobId']}/items"))


def test_templates_returns_the_list(make: Any, fake: FakeApi) -> None:
    fake.fail("/templates", httpx.Response(200, json={"data": [{"id": "tpl_igaming"}]}))
    assert make().templates() == [{"id": "tpl_igaming"}]


# -- errors -------------------------------------------------------------------------------------

ERRORS = [
    (400, "invalid_json", oh.BadRequest),
    (401, "unauthorized", oh.Unauthorized),
    (404, "not_found", oh.NotFound),
    (404, "entity_not_found", oh.EntityNotFound),
    (404, "state_not_found", oh.StateNotFound),
    (404, "job_not_found", oh.JobNotFound),
    (404, "template_not_found", oh.TemplateNotFound),
    (404, "some_new_code", oh.NotFound),
    (405, "method_not_allowed", oh.MethodNotAllowed),
    (409, "template_not_configured", oh.TemplateNotConfigured),
    (409, "entity_type_conflict", oh.EntityTypeConflict),
    (409, "event_id_conflict", oh.EventIdConflict),
    (409, "idempotency_conflict", oh.IdempotencyConflict),
    (409, "pii_unreadable", oh.PiiUnreadable),
    (410, "entity_deleted", oh.EntityDeleted),
    (413, "payload_too_large", oh.PayloadTooLarge),
    (413, "batch_too_large", oh.BatchTooLarge),
    (415, "unsupported_media_type", oh.UnsupportedMediaType),
    (422, "validation_error", oh.ValidationError),
    (429, "rate_limited", oh.RateLimited),
    (500, "internal_error", oh.ServerError),
    (503, "unavailable", oh.Unavailable),
]


@pytest.mark.parametrize(("status", "code", "cls"), ERRORS)
def test_every_error_code_maps_to_its_exception(
    make: Any, fake: FakeApi, status: int, code: str, cls: type[oh.APIError]
) -> None:
    details = [{"path": "data.amount", "code": "invalid_field_type", "message": "expected a number"}]
    fake.fail("/entities", error(status, code, "what happened", details=details))
    with pytest.raises(cls) as caught:
        make(max_retries=0).get_entity("p1")
    exc = caught.value
    assert type(exc) is cls
    assert isinstance(exc, oh.APIError)
    assert isinstance(exc, oh.OneHazelError)
    assert (exc.status, exc.code, exc.message, exc.request_id) == (status, code, "what happened", "req_fake1")
    assert exc.details == details
    assert str(exc) == f"{status} {code}: what happened (request req_fake1)"


def test_a_non_json_error_page_still_maps_by_status(make: Any, fake: FakeApi) -> None:
    fake.fail(
        "/entities", httpx.Response(502, text="<html>bad gateway</html>", headers={"X-Request-Id": "req_9"})
    )
    with pytest.raises(oh.ServerError) as caught:
        make(max_retries=0).get_entity("p1")
    assert caught.value.status == 502
    assert caught.value.request_id == "req_9"


def test_the_error_tree_is_drawn_in_one_docstring() -> None:
    doc = oh.errors.__doc__ or ""
    for name in oh.__all__:
        if name not in ("Client", "AsyncClient"):
            assert name in doc, name


# -- retries ------------------------------------------------------------------------------------


def test_5xx_is_retried_with_growing_jittered_backoff(make: Any, fake: FakeApi, rec: Recorder) -> None:
    fake.fail("/settings", error(503, "unavailable"), error(500, "internal_error"), error(502, "bad_gateway"))
    assert make().settings() == {"ok": True}
    assert len(fake.requests) == 4
    assert len(rec.sleeps) == 3
    for attempt, delay in enumerate(rec.sleeps):
        assert 0 <= delay <= 0.5 * 2**attempt


def test_retry_after_is_honoured_in_seconds_and_as_a_date(make: Any, fake: FakeApi, rec: Recorder) -> None:
    fake.fail(
        "/settings",
        error(429, "rate_limited", headers={"Retry-After": "7"}),
        error(503, "unavailable", headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
    )
    make().settings()
    assert rec.sleeps[0] == 7.0
    assert 0 <= rec.sleeps[1] <= 1.0  # a date in the past: no extra wait beyond the backoff


def test_connection_errors_are_retried(make: Any, fake: FakeApi, rec: Recorder) -> None:
    fake.fail("/settings", httpx.ConnectError("refused"), httpx.ReadTimeout("slow"))
    assert make().settings() == {"ok": True}
    assert len(fake.requests) == 3


def test_retries_stop_after_max_retries(make: Any, fake: FakeApi, rec: Recorder) -> None:
    fake.fail("/settings", *[httpx.ConnectError("refused")] * 4)
    with pytest.raises(oh.TransportError, match="ConnectError"):
        make(max_retries=3).settings()
    assert len(fake.requests) == 4
    assert len(rec.sleeps) == 3


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "invalid_json"), (401, "unauthorized"), (404, "entity_not_found"), (409, "event_id_conflict"),
     (410, "entity_deleted"), (422, "validation_error")],
)  # fmt: skip
def test_other_4xx_are_never_retried(make: Any, fake: FakeApi, rec: Recorder, status: int, code: str) -> None:
    fake.fail("/entities", error(status, code))
    with pytest.raises(oh.APIError):
        make().upsert_entity("p1", "player")
    assert len(fake.requests) == 1
    assert rec.sleeps == []


async def test_async_client_retries_the_same_way(amake: Any, fake: FakeApi, rec: Recorder) -> None:
    fake.fail("/settings", error(429, "rate_limited", headers={"Retry-After": "3"}), httpx.ConnectError("x"))
    assert await amake().settings() == {"ok": True}
    assert len(fake.requests) == 3
    assert rec.sleeps[0] == 3.0
    fake.fail("/entities", error(422, "validation_error"))
    with pytest.raises(oh.ValidationError):
        await amake().upsert_entity("p1", "player")
    assert len(fake.requests) == 4


# -- submit_batch -------------------------------------------------------------------------------


def _events(count: int, **data: Any) -> list[dict[str, Any]]:
    return [
        {"externalId": "p1", "type": "session", "eventId": f"e{n}", "data": {"n": n, **data}}
        for n in range(count)
    ]


def test_batches_are_cut_under_the_item_limit_with_derived_keys(make: Any, fake: FakeApi) -> None:
    jobs = make().submit_batch("events", _events(12_000), idempotency_key="imp-1")
    assert [j["total"] for j in jobs] == [5000, 5000, 2000]
    assert [r.headers["Idempotency-Key"] for r in fake.sent("/batch/events")] == [
        "imp-1.0",
        "imp-1.1",
        "imp-1.2",
    ]
    assert len(fake.events) == 12_000


def test_one_request_uses_the_callers_key_as_is_and_a_rerun_makes_no_new_job(
    make: Any, fake: FakeApi
) -> None:
    client = make()
    first = client.submit_batch("events", _events(3), idempotency_key="imp-2")
    again = client.submit_batch("events", _events(3), idempotency_key="imp-2")
    assert first == again
    assert len(fake.jobs) == 1
    assert fake.sent("/batch/events")[0].headers["Idempotency-Key"] == "imp-2"


def test_a_413_splits_the_batch_in_halves_recursively(make: Any, fake: FakeApi) -> None:
    fake.max_items = 2
    jobs = make().submit_batch("events", _events(5), idempotency_key="k")
    assert [j["total"] for j in jobs] == [2, 1, 2]
    accepted = [r for r in fake.sent("/batch/events") if len(json.loads(r.content)["events"]) <= 2]
    assert [r.headers["Idempotency-Key"] for r in accepted] == ["k.a", "k.b.a", "k.b.b"]
    assert [e["eventId"] for r in accepted for e in json.loads(r.content)["events"]] == [
        f"e{n}" for n in range(5)
    ]


def test_a_single_item_over_the_limit_raises_with_what_was_accepted(make: Any, fake: FakeApi) -> None:
    items = _events(3)
    items[1]["type"] = "huge"
    with pytest.raises(oh.PayloadTooLarge) as caught:
        make().submit_batch("events", items)
    assert caught.value.index == 1
    assert [j["total"] for j in caught.value.jobs] == [1]
    assert list(fake.events) == ["e0"]


def test_every_retry_of_a_batch_resends_the_same_key_and_body(make: Any, fake: FakeApi) -> None:
    def stored_then_timed_out(request: httpx.Request) -> httpx.Response:
        fake.handle(request)  # the server stored it, but the answer never arrived
        raise httpx.ReadTimeout("lost answer")

    fake.fail("/batch/events", error(503, "unavailable"), stored_then_timed_out)
    jobs = make().submit_batch("events", _events(3))
    posts = fake.sent("/batch/events")
    assert len(posts) == 3
    assert len({r.headers["Idempotency-Key"] for r in posts}) == 1
    assert len({r.content for r in posts}) == 1
    assert len(fake.jobs) == 1
    assert jobs == [{"jobId": "job_1", "status": "queued", "total": 3}]


def test_requests_without_a_key_each_get_their_own(make: Any, fake: FakeApi) -> None:
    client = make()
    client.submit_batch("events", _events(3))
    client.submit_batch("events", _events(3))
    keys = [r.headers["Idempotency-Key"] for r in fake.sent("/batch/events")]
    assert len(set(keys)) == 2
    assert len(fake.events) == 3


def test_dry_run_sends_no_key_and_returns_the_results(make: Any, fake: FakeApi) -> None:
    (result,) = make().submit_batch(
        "states", [{"externalId": "p", "key": "balance", "value": 1}], dry_run=True
    )
    assert result == {"results": [{"index": 0}]}
    (request,) = fake.requests
    assert request.url.params["dryRun"] == "true"
    assert "Idempotency-Key" not in request.headers


def test_an_unknown_kind_is_refused(make: Any) -> None:
    with pytest.raises(ValueError, match="kind"):
        make().submit_batch("players", [])


def test_wait_for_job_polls_until_done_and_times_out(make: Any, fake: FakeApi, rec: Recorder) -> None:
    client = make()
    (job,) = client.submit_batch("events", _events(1))
    fake.pending_polls = 2
    assert client.wait_for_job(job["jobId"], poll_interval=0.25)["status"] == "completed"
    assert rec.sleeps == [0.25, 0.25]
    fake.pending_polls = 10**6
    with pytest.raises(TimeoutError):
        client.wait_for_job(job["jobId"], timeout=0)
    with pytest.raises(oh.WaitTimeout):
        client.wait_for_job(job["jobId"], timeout=0)


async def test_async_submit_batch_splits_and_waits(amake: Any, fake: FakeApi) -> None:
    fake.max_items = 2
    client = amake()
    jobs = await client.submit_batch("events", _events(5))
    assert [j["total"] for j in jobs] == [2, 1, 2]
    assert (await client.wait_for_job(jobs[0]["jobId"]))["status"] == "completed"
    assert [i["index"] async for i in client.job_items(jobs[0]["jobId"])] == [0, 1]


# -- track(): the buffer ------------------------------------------------------------------------


def test_track_returns_an_event_id_fixed_at_queue_time(make: Any, fake: FakeApi) -> None:
    client = make()
    generated = client.track("p1", "session")
    given = client.track("p1", "session", {"ip_address": "1.2.3.4"}, event_id="mine-1")
    client.flush()
    assert generated.startswith("evt_")
    assert len(generated) == 4 + 32
    assert given == "mine-1"
    assert fake.batches() == [
        [
            {"externalId": "p1", "type": "session", "data": {}, "eventId": generated},
            {"externalId": "p1", "type": "session", "data": {"ip_address": "1.2.3.4"}, "eventId": "mine-1"},
        ]
    ]


def test_a_full_count_sends_a_batch_without_waiting_for_the_interval(make: Any, fake: FakeApi) -> None:
    client = make(max_buffer_events=3)
    ids = [client.track("p1", "session") for _ in range(4)]
    assert fake.batch_seen.wait(HANG)
    client.flush()
    assert [[e["eventId"] for e in b] for b in fake.batches()] == [ids[:3], ids[3:]]


def test_a_byte_limit_sends_a_batch_before_the_body_would_pass_it(make: Any, fake: FakeApi) -> None:
    client = make(max_buffer_bytes=600)
    for n in range(4):
        client.track("p1", "session", {"pad": "x" * 80, "n": n})  # about 150 bytes each
    assert fake.batch_seen.wait(HANG)
    client.flush()
    sizes = [len(r.content) for r in fake.sent("/batch/events")]
    assert [len(b) for b in fake.batches()] == [3, 1]
    assert max(sizes) <= 600 + len('{"events":[]}')


def test_the_interval_sends_whatever_is_queued(make: Any, fake: FakeApi) -> None:
    client = make(flush_interval=0.05)
    event_id = client.track("p1", "session")
    assert fake.batch_seen.wait(HANG)
    assert list(fake.events) == [event_id]


def test_close_sends_the_rest_and_reads_the_jobs(make: Any, fake: FakeApi) -> None:
    with make() as client:
        event_id = client.track("p1", "session")
    assert list(fake.events) == [event_id]
    assert fake.sent("/batch/jobs/job_1", "GET")
    with pytest.raises(oh.ClientClosed):
        client.track("p1", "session")


def test_flush_waits_until_the_jobs_are_finished(make: Any, fake: FakeApi, rec: Recorder) -> None:
    client = make()
    fake.pending_polls = 3
    client.track("p1", "bad")
    client.flush()
    assert len(fake.sent("/batch/jobs/job_1", "GET")) >= 4
    assert len(rec.errors) == 1  # the outcome was read only once the job finished


def test_rejected_items_go_to_on_error_with_their_error(make: Any, fake: FakeApi, rec: Recorder) -> None:
    client = make()
    client.track("p1", "session")
    bad = client.track("p2", "bad", {"x": 1})
    client.flush()
    ((failures, reason),) = rec.errors
    assert reason == "rejected"
    assert failures == [
        {
            "item": {"externalId": "p2", "type": "bad", "data": {"x": 1}, "eventId": bad},
            "error": {"code": "unknown_event_type", "message": "type: not in the template", "path": "type"},
        }
    ]


def test_a_failed_job_reports_every_item_it_did_not_apply(make: Any, fake: FakeApi, rec: Recorder) -> None:
    client = make()
    fake.job_status = "failed"
    ids = [client.track("p1", "session") for _ in range(2)]
    client.flush()
    ((failures, reason),) = rec.errors
    assert reason == "job_failed"
    assert [f["item"]["eventId"] for f in failures] == ids
    assert failures[0]["error"]["code"] == "job_unreadable"


def test_a_refused_batch_goes_to_on_error_with_the_code(make: Any, fake: FakeApi, rec: Recorder) -> None:
    client = make()
    fake.fail("/batch/events", error(409, "template_not_configured"))
    ids = [client.track("p1", "session") for _ in range(2)]
    client.flush()
    ((failures, reason),) = rec.errors
    assert reason == "template_not_configured"
    assert [f["item"]["eventId"] for f in failures] == ids
    assert len(fake.sent("/batch/events")) == 1  # never retried


def test_an_event_too_large_alone_is_reported_and_the_rest_are_sent(
    make: Any, fake: FakeApi, rec: Recorder
) -> None:
    client = make()
    ids = [client.track("p1", "huge" if n == 2 else "session") for n in range(5)]
    client.flush()
    ((failures, reason),) = rec.errors
    assert reason == "payload_too_large"
    assert [f["item"]["eventId"] for f in failures] == [ids[2]]
    assert sorted(fake.events) == sorted(ids[:2] + ids[3:])


def test_event_ids_and_keys_are_stable_when_a_flush_fails_and_is_retried(
    make: Any, fake: FakeApi, rec: Recorder
) -> None:
    client = make(max_retries=1)
    fake.fail("/batch/events", error(503, "unavailable"), httpx.ConnectError("down"))
    ids = [client.track("p1", "session") for _ in range(3)]
    with pytest.raises(oh.TransportError):
        client.flush()
    assert fake.events == {}
    client.flush()  # the events stayed queued
    posts = fake.sent("/batch/events")
    assert len(posts) == 3
    assert len({r.content for r in posts}) == 1
    assert len({r.headers["Idempotency-Key"] for r in posts}) == 1
    assert list(fake.events) == ids
    assert rec.errors == rec.drops == []


def test_flush_gives_up_at_its_timeout_instead_of_waiting_out_a_retry_after(
    make: Any, fake: FakeApi, rec: Recorder
) -> None:
    client = make()
    fake.fail("/batch/events", error(503, "unavailable", headers={"Retry-After": "100"}))
    event_id = client.track("p1", "session")
    with pytest.raises(oh.Unavailable):
        client.flush(timeout=5)
    assert rec.sleeps == []
    client.flush()
    assert list(fake.events) == [event_id]


def test_a_lost_answer_never_stores_an_event_twice(make: Any, fake: FakeApi, rec: Recorder) -> None:
    def stored_then_timed_out(request: httpx.Request) -> httpx.Response:
        fake.handle(request)
        raise httpx.ReadTimeout("lost answer")

    client = make()
    fake.fail("/batch/events", stored_then_timed_out)
    ids = [client.track("p1", "session") for _ in range(3)]
    client.flush()
    assert list(fake.events) == ids
    assert len(fake.jobs) == 1
    assert rec.errors == []


def test_a_full_buffer_drops_to_on_drop(make: Any, fake: FakeApi, rec: Recorder) -> None:
    started, release = threading.Event(), threading.Event()

    def slow_server(request: httpx.Request) -> httpx.Response:
        started.set()
        release.wait(HANG)
        return fake.handle(request)

    fake.fail("/batch/events", slow_server)
    client = make(max_buffer_events=3, max_queue_events=3)
    ids = [client.track("p1", "session", {"n": n}) for n in range(3)]
    assert started.wait(HANG)  # the flush thread took those three and is waiting for the server
    ids += [client.track("p1", "session", {"n": n}) for n in range(3, 7)]
    assert rec.drops == [
        ([{"externalId": "p1", "type": "session", "data": {"n": 6}, "eventId": ids[6]}], "buffer_full")
    ]
    release.set()
    client.flush()
    assert list(fake.events) == ids[:6]


def test_events_unsent_at_close_go_to_on_drop(make: Any, fake: FakeApi, rec: Recorder) -> None:
    client = make(max_retries=0)
    fake.fail("/batch/events", error(503, "unavailable"))
    event_id = client.track("p1", "session")
    client.close()
    ((items, reason),) = rec.drops
    assert reason == "unsent_at_close"
    assert [i["eventId"] for i in items] == [event_id]


def test_without_callbacks_a_warning_with_counts_but_no_data_is_logged(
    fake: FakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="onehazel.client")
    transport = httpx.MockTransport(fake)
    with Client(KEY, URL, transport=transport, flush_interval=3600, max_retries=0) as client:
        client.track("alice@example.com", "bad", {"email": "alice@example.com"})
        client.flush()
        client.track("alice@example.com", "session", {"email": "alice@example.com"})
        fake.fail("/batch/events", error(503, "unavailable"))
    messages = [r.getMessage() for r in caplog.records if r.name == "onehazel.client"]
    assert any("1 tracked events were dropped (unsent_at_close)" in m for m in messages)
    assert any("1 tracked events were rejected (rejected; unknown_event_type: 1)" in m for m in messages)
    assert "alice" not in caplog.text


def test_a_failing_callback_does_not_stop_the_client(
    make: Any, fake: FakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(items: list[dict[str, Any]], reason: str) -> None:
        raise RuntimeError("callback bug")

    client = make(on_error=broken)
    client.track("p1", "bad")
    good = client.track("p1", "session")
    client.flush()
    assert list(fake.events) == [good]
    assert "callback raised" in caplog.text


async def test_async_track_buffers_flushes_and_reports(amake: Any, fake: FakeApi, rec: Recorder) -> None:
    client = amake(max_buffer_events=5, max_queue_events=5)
    ids = [await client.track("p1", "bad" if n == 0 else "session") for n in range(6)]
    assert [[i["eventId"] for i in items] for items, _ in rec.drops] == [[ids[5]]]
    await client.flush()
    assert list(fake.events) == ids[1:5]
    ((failures, reason),) = rec.errors
    assert (reason, failures[0]["item"]["eventId"]) == ("rejected", ids[0])
    assert [e["eventId"] async for e in client.list_events("p1")] == ids[1:5]


async def test_async_count_trigger_and_close(amake: Any, fake: FakeApi) -> None:
    client = amake(max_buffer_events=2)
    first = [await client.track("p1", "session") for _ in range(2)]
    await _until_sent(fake)  # the background task sends the full batch
    last = await client.track("p1", "session")
    await client.close()
    assert [[e["eventId"] for e in b] for b in fake.batches()] == [first, [last]]
    with pytest.raises(oh.ClientClosed):
        await client.track("p1", "session")


async def test_async_interval_sends_whatever_is_queued(amake: Any, fake: FakeApi) -> None:
    client = amake(flush_interval=0.05)
    event_id = await client.track("p1", "session")
    await _until_sent(fake)
    assert list(fake.events) == [event_id]


async def _until_sent(fake: FakeApi) -> None:
    """Let the loop run until the client's task has sent a batch (the bound only catches a hang)."""
    for _ in range(int(HANG / 0.01)):
        if fake.batch_seen.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the flush task never sent a batch")


# -- interpreter exit -----------------------------------------------------------------------------

EXIT_SCRIPT = """
import asyncio, json, httpx
from onehazel.client import AsyncClient, Client

def handler(request):
    if request.method == "POST":
        print("sent", len(json.loads(request.content)["events"]), flush=True)
        return httpx.Response(202, json={"jobId": "job_1", "status": "queued", "total": 2})
    return httpx.Response(200, json={"jobId": "job_1", "status": "completed", "failed": 0, "processed": 2})

def dropped(items, reason):
    print("dropped", len(items), reason, flush=True)

transport = httpx.MockTransport(handler)
{body}
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "c = Client('k', 'http://x', transport=transport, flush_interval=3600)\n"
            "c.track('p', 'session'); c.track('p', 'session')",
            "sent 2",
        ),
        (
            "async def main():\n"
            "    c = AsyncClient('k', 'http://x', transport=transport, flush_interval=60, on_drop=dropped)\n"
            "    await c.track('p', 'session'); await c.track('p', 'session')\n"
            "asyncio.run(main())",
            "dropped 2 not_closed",
        ),
    ],
    ids=["client-flushes", "async-custom-transport-reports"],
)
def test_interpreter_exit_flushes_or_reports(body: str, expected: str) -> None:
    script = textwrap.dedent(EXIT_SCRIPT).replace("{body}", body)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [expected], result.stderr
