"""Request ids, access logs, Prometheus metrics and the last-resort error guard.

One pure ASGI middleware (no BaseHTTPMiddleware overhead) wraps every request:
it assigns or echoes ``X-Request-Id``, times the request, counts it by route
template and status, writes one JSON log line (route template, never the raw
path or body, so no PII reaches logs), and turns any unexpected exception into
the contract's 500 body instead of a bare text page.

It also lets an externalId contain "/": ASGI servers decode ``%2F`` before
routing, so we re-decode the raw path with ``%2F`` mapped to U+FFFF (a
non-character that identifiers may not contain) and map it back in the path
dependency.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any
from urllib.parse import unquote

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onehazel.services.ids import random_hex

SLASH = "\uffff"
# Scope key under which the auth dependency leaves the RateLimit headers for this middleware.
RATE_LIMIT_HEADERS = "onehazel.rate_limit_headers"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/=+~@-]{1,128}")  # safe to echo and to log

log = logging.getLogger("onehazel")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "onehazel_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "onehazel_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.ingested = Counter(
            "onehazel_ingested_items_total",
            "Items stored, by kind (entities, events, states)",
            ["kind"],
            registry=self.registry,
        )
        self.ingested_events = self.ingested.labels("events")  # the single event write's, at hand
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def children(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """The request counter and latency histogram of one (method, route, status), kept at
        hand: ``labels()`` looks them up under a lock on every call. Routes are templates
        (or "unmatched") and methods those a route may have, so there are few keys; the
        cache stops growing at 10,000 all the same (any method string can be sent)."""
        key = (method, route, status)
        pair = self._children.get(key)
        if pair is None:
            pair = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            if len(self._children) < 10_000:
                self._children[key] = pair
        return pair


class JsonFormatter(logging.Formatter):
    converter = staticmethod(time.gmtime)

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text

    def _timestamp(self, record: logging.LogRecord) -> str:
        """``YYYY-MM-DDTHH:MM:SS.mmmZ``; the seconds part is formatted once per second."""
        second = int(record.created)
        if self._second[0] != second:
            self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{self._second[1]}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            doc["error"] = record.exc_info[0].__name__
            doc["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    # The JSON lines carry none of the caller's file and line, thread or process; not
    # collecting them (the logging HOWTO's "Optimization" switches) saves a walk up the
    # request's ~40 frames per access log line, about a tenth of a single write's CPU.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("onehazel")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _DropParserWarning(logging.Filter):
    """uvicorn's "Invalid HTTP request received." comes before every refusal that
    ``api.http_protocol`` logs itself, with its request id and status (and for a 431 or an
    Upgrade with a body, uvicorn's words would be wrong)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Invalid HTTP request received."


def uvicorn_log_config(level: str = "INFO") -> dict[str, Any]:
    """Uvicorn's own messages (start-up, shutdown, errors) as the same JSON lines."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "stream": "ext://sys.stderr",
        "filters": ["parser_warning"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"parser_warning": {"()": _DropParserWarning}},
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": handler},
        "loggers": {
            "uvicorn": {"handlers": ["json"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def _route_of(scope: Scope, base: str = "") -> str:
    """The matched route's template, e.g. ``/operator-data-api/entities/{externalId}``.

    Older FastAPI versions put an included router's prefix into ``route.path``;
    newer ones (0.16x) keep the router's own path there, so the base path is added back.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not path:
        return "unmatched"
    path = str(path)
    if base and str(scope.get("path", "")).startswith(base + "/") and not path.startswith(base + "/"):
        path = base + path
    return path


def _decode_path(scope: Scope) -> None:
    raw = scope.get("raw_path")
    if raw and b"%2f" in raw.lower():
        raw_text = raw.decode("latin-1").split("?", 1)[0]
        scope["path"] = unquote(re.sub("%2[fF]", "%EF%BF%BF", raw_text), errors="replace")


def incoming_request_id(scope: Scope) -> str:
    """The client's X-Request-Id when it is safe to echo and log, else a new ``req_...`` id."""
    incoming = next((v for k, v in scope.get("headers", []) if k == b"x-request-id"), b"").decode("latin-1")
    return incoming if _REQUEST_ID.fullmatch(incoming) else "req_" + random_hex(12)


class Observability:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, base: str = "") -> None:
        self.app = app
        self.metrics = metrics
        self.base = base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        _decode_path(scope)
        request_id = scope.get("request_id") or incoming_request_id(scope)  # (the protocol's, if it refused)
        scope["request_id"] = request_id
        started = time.perf_counter()
        state = {"status": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(scope.get(RATE_LIMIT_HEADERS, ()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unhandled error",
                extra={"fields": {"requestId": request_id, "route": _route_of(scope, self.base)}},
            )
            if state["status"] == 0:
                await self._internal_error(send_with_id, request_id)
            state["status"] = 500
        finally:
            self._observe(scope, state["status"], time.perf_counter() - started, request_id)

    def _observe(self, scope: Scope, status: int, elapsed: float, request_id: str) -> None:
        route, method = _route_of(scope, self.base), scope.get("method", "")
        counted, timed = self.metrics.children(method, route, status)
        counted.inc()
        timed.observe(elapsed)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "request",
                extra={
                    "fields": {
                        "requestId": request_id,
                        "method": method,
                        "route": route,
                        "status": status,
                        "durationMs": round(elapsed * 1000, 2),
                    }
                },
            )

    @staticmethod
    async def _internal_error(send: Send, request_id: str) -> None:
        body = orjson.dumps(
            {
                "error": {
                    "code": "internal_error",
                    "message": "an internal error occurred; it has been logged with this request id",
                    "requestId": request_id,
                }
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
