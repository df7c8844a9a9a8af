"""An in-memory stand-in for the batch API behind ``httpx.MockTransport``, with scripted failures.

It keeps what a client must not get wrong observable: every request as sent, the
events stored by ``eventId`` (a replay is a duplicate, never a second copy), and
jobs per ``Idempotency-Key`` (a replay returns the same job). ``fail(prefix, ...)``
queues answers (responses, exceptions, or callables) that the next requests to a
path take before the normal handling.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx

BASE = "/operator-data-api"
Outcome = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def error(status: int, code: str, message: str = "it went wrong", **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"code": code, "message": message, "requestId": "req_fake1"}
    headers = extra.pop("headers", {})
    body.update(extra)
    return httpx.Response(status, json={"error": body}, headers=headers)


class FakeApi:
    def __init__(self, *, max_items: int = 5000, page_size: int = 2) -> None:
        self.requests: list[httpx.Request] = []
        self.events: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, list[dict[str, Any]]] = {}
        self.by_key: dict[str, tuple[str, str]] = {}
        self.max_items = max_items
        self.page_size = page_size
        self.reject_types = {"bad"}
        self.too_large_types = {"huge"}
        self.pending_polls = 0
        self.job_status = "completed"
        self.batch_seen = threading.Event()
        self._scripted: list[tuple[str, Outcome]] = []
        self._lock = threading.Lock()

    # -- test controls --------------------------------------------------------------------------

    def fail(self, prefix: str, *outcomes: Outcome) -> None:
        """The next requests whose path starts with ``prefix`` get these answers, in order."""
        self._scripted += [(prefix, outcome) for outcome in outcomes]

    def sent(self, prefix: str, method: str | None = None) -> list[httpx.Request]:
        return [
            r for r in self.requests if _path(r).startswith(prefix) and (method is None or r.method == method)
        ]

    def batches(self) -> list[list[dict[str, Any]]]:
        """The items of every POST /batch/events request, in order (including retried ones)."""
        return [json.loads(r.content)["events"] for r in self.sent("/batch/events", "POST")]

    # -- the transport --------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            path = _path(request)
            for number, (prefix, outcome) in enumerate(self._scripted):
                if path.startswith(prefix):
                    del self._scripted[number]
                    if isinstance(outcome, Exception):
                        raise outcome
                    return outcome(request) if callable(outcome) else outcome
            return self.handle(request)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = _path(request)
        if request.method == "POST" and path.startswith("/batch/"):
            return self._submit(request, path.removeprefix("/batch/"))
        if path.startswith("/batch/jobs/") and path.endswith("/items"):
            return self._items(request, path.split("/")[3])
        if path.startswith("/batch/jobs/"):
            return self._job(path.split("/")[3])
        if request.method == "GET" and path.endswith("/events"):
            return self._events(request, path.split("/")[2])
        return httpx.Response(200, json={"ok": True})

    def _submit(self, request: httpx.Request, kind: str) -> httpx.Response:
        items = json.loads(request.content)[kind]
        if len(items) > self.max_items:
            return error(413, "batch_too_large", f"at most {self.max_items} items")
        if any(item.get("type") in self.too_large_types for item in items):
            return error(413, "payload_too_large", "the request body is over the limit")
        if request.url.params.get("dryRun") == "true":
            return httpx.Response(200, json={"results": [{"index": i} for i in range(len(items))]})
        key = request.headers.get("Idempotency-Key")
        digest = hashlib.sha256(request.content).hexdigest()
        if key in self.by_key:
            job_id, earlier = self.by_key[key]
            if earlier != digest:
                return error(409, "idempotency_conflict", "key reused")
            return httpx.Response(202, json=self._accepted(job_id))
        job_id = f"job_{len(self.jobs) + 1}"
        if key:
            self.by_key[key] = (job_id, digest)
        self.jobs[job_id] = {"jobId": job_id, "kind": kind, "polls": 0, "total": len(items)}
        self.outcomes[job_id] = [self._apply(index, item) for index, item in enumerate(items)]
        self.batch_seen.set()
        return httpx.Response(202, json=self._accepted(job_id))

    def _accepted(self, job_id: str) -> dict[str, Any]:
        return {"jobId": job_id, "status": "queued", "total": self.jobs[job_id]["total"]}

    def _apply(self, index: int, item: dict[str, Any]) -> dict[str, Any]:
        outcome: dict[str, Any] = {"index": index, "externalId": item.get("externalId")}
        if item.get("type") in self.reject_types:
            error = {"code": "unknown_event_type", "message": "type: not in the template", "path": "type"}
            return {**outcome, "status": "failed", "error": error}
        event_id = item.get("eventId")
        if event_id in self.events:
            return {**outcome, "status": "duplicate", "eventId": event_id}
        if event_id is not None:
            self.events[event_id] = item
        return {**outcome, "status": "succeeded", "eventId": event_id}

    def _job(self, job_id: str) -> httpx.Response:
        if job_id not in self.jobs:
            return error(404, "job_not_found", "no such job")
        job = self.jobs[job_id]
        job["polls"] += 1
        outcomes = self.outcomes[job_id]
        done = job["polls"] > self.pending_polls
        failed = sum(1 for o in outcomes if o["status"] == "failed")
        body = {
            "jobId": job_id,
            "kind": job["kind"],
            "status": self.job_status if done else "processing",
            "total": job["total"],
            "processed": job["total"] if done and self.job_status == "completed" else 0,
            "succeeded": sum(1 for o in outcomes if o["status"] == "succeeded"),
            "failed": failed,
            "duplicates": sum(1 for o in outcomes if o["status"] == "duplicate"),
            "errors": [{"index": None, "code": "job_unreadable", "message": "gone"}]
            if self.job_status == "failed"
            else [],
            "warnings": [],
        }
        return httpx.Response(200, json=body)

    def _items(self, request: httpx.Request, job_id: str) -> httpx.Response:
        status = request.url.params.get("status")
        rows = [o for o in self.outcomes[job_id] if status is None or o["status"] == status]
        return _page(rows, request.url.params.get("cursor"), self.page_size)

    def _events(self, request: httpx.Request, external_id: str) -> httpx.Response:
        rows = [e for e in self.events.values() if e["externalId"] == external_id]
        return _page(rows, request.url.params.get("cursor"), self.page_size)


def _page(rows: list[dict[str, Any]], cursor: str | None, size: int) -> httpx.Response:
    start = int(cursor or 0)
    end = start + size
    next_cursor = str(end) if end < len(rows) else None
    return httpx.Response(200, json={"data": rows[start:end], "nextCursor": next_cursor})


def _path(request: httpx.Request) -> str:
    return request.url.path.removeprefix(BASE)
