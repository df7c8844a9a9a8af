"""The one core under ``Client`` and ``AsyncClient``: everything but the I/O.

It resolves configuration, builds every request (path quoting, auth header,
JSON with exact decimals), maps error responses to typed exceptions, decides
retries, and plans batches. The two clients only move bytes and sleep, so they
cannot drift apart in behaviour.

Why retrying a POST is safe here: every event carries an ``eventId`` fixed when
it is created (the server stores an ``eventId`` once and answers a replay as a
duplicate), and every batch request carries an ``Idempotency-Key`` generated
once per batch and re-sent unchanged by every retry (the server answers a replay
with the job it already accepted). Entity upserts and state writes converge to
the same result when applied twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from onehazel.client.errors import (
    APIError,
    ConfigurationError,
    RateLimited,
    ServerError,
    TransportError,
    error_class,
)

API_PATH = "/operator-data-api"
DEFAULT_BASE_URL = "http://127.0.0.1:8080"
USER_AGENT = "onehazel-python/0.1"
KINDS = ("entities", "events", "states")
# The server's limits (CONTRACT.md): items per batch and bytes per batch body.
MAX_BATCH_ITEMS = {"entities": 1000, "events": 5000, "states": 1000}
MAX_BATCH_BYTES = 16 * 1024 * 1024
MAX_KEY_LENGTH = 256
DONE = ("completed", "failed")


def resolve_api_key(api_key: str | None) -> str:
    key = api_key if api_key is not None else os.environ.get("ONEHAZEL_API_KEY")
    if not key:
        raise ConfigurationError("no API key: pass api_key=... or set ONEHAZEL_API_KEY")
    return key


def resolve_base_url(base_url: str | None) -> str:
    """The API root, ``scheme://host[:port]`` plus the contract's base path (added once)."""
    url = (base_url or os.environ.get("ONEHAZEL_API_URL") or DEFAULT_BASE_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must start with http:// or https://, got {url!r}")
    return url if url.endswith(API_PATH) else url + API_PATH


# -- JSON ---------------------------------------------------------------------------------------


def format_timestamp(value: str | dt.datetime) -> str:
    """RFC 3339 with an offset; a naive datetime is refused here rather than by the server."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamps need a timezone (e.g. datetime.now(timezone.utc))")
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Money travels as a string with exactly its digits: never through a float.
        return format(value, "f") if value.is_finite() else str(value)
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(value: Any) -> bytes:
    """Compact UTF-8 JSON; Decimal as its exact string, NaN/Infinity floats refused."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default)
    return text.encode("utf-8")


def batch_body(kind: str, parts: list[bytes]) -> bytes:
    """``{"<kind>": [item, ...]}`` from items encoded once (so splitting never re-encodes)."""
    return b'{"' + kind.encode() + b'":[' + b",".join(parts) + b"]}"


def body_size(kind: str, sizes: int, count: int) -> int:
    """The size of ``batch_body(kind, parts)`` given the parts' total size and count."""
    return len(kind) + 6 + sizes + max(count - 1, 0)


def plan_chunks(kind: str, parts: list[bytes], *, max_items: int, max_bytes: int) -> list[tuple[int, int]]:
    """Greedy (start, end) slices of ``parts`` under both limits; an oversize item goes alone."""
    chunks: list[tuple[int, int]] = []
    start, size = 0, 0
    for index, part in enumerate(parts):
        count = index - start
        if count and (count >= max_items or body_size(kind, size + len(part), count + 1) > max_bytes):
            chunks.append((start, index))
            start, size = index, 0
        size += len(part)
    if start < len(parts):
        chunks.append((start, len(parts)))
    return chunks


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


def new_idempotency_key() -> str:
    return "ohc_" + uuid.uuid4().hex


def derive_key(key: str | None, suffix: str) -> str | None:
    """A stable key for part of a batch: re-running the same split re-sends the same keys."""
    if key is None:
        return None
    derived = f"{key}.{suffix}"
    if len(derived) <= MAX_KEY_LENGTH:
        return derived
    return "ohc_" + hashlib.sha256(derived.encode()).hexdigest()


def event_item(
    external_id: str,
    type: str,
    data: Mapping[str, Any] | None,
    event_id: str | None,
    timestamp: str | dt.datetime | None,
) -> dict[str, Any]:
    """One ``/batch/events`` item; the eventId is fixed now, so every retry re-sends the same one."""
    item: dict[str, Any] = {
        "externalId": external_id,
        "type": type,
        "data": dict(data) if data is not None else {},
        "eventId": event_id or new_event_id(),
    }
    if timestamp is not None:
        item["timestamp"] = format_timestamp(timestamp)
    return item


# -- requests and responses ---------------------------------------------------------------------


@dataclass(frozen=True)
class RequestSpec:
    method: str
    path: str
    params: dict[str, str | int] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _path_id(value: str) -> str:
    return quote(value, safe="")


def _params(**values: str | int | None) -> dict[str, str | int]:
    return {name: value for name, value in values.items() if value is not None}


def _json(method: str, path: str, body: Any, **params: str | int | None) -> RequestSpec:
    return RequestSpec(method, path, _params(**params), encode(body), {"Content-Type": "application/json"})


_SETTINGS_NAMES = {"template_id": "templateId"}


class Core:
    """Configuration plus pure functions from calls to ``RequestSpec`` and from responses to data."""

    def __init__(
        self, api_key: str | None, base_url: str | None, *, timeout: float, max_retries: int
    ) -> None:
        self.api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries=max_retries)
        self.headers = {
            "Authorization": f"Bearer {self.api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }

    # entities, events, states
    def upsert_entity(self, external_id: str, type: str, attributes: Mapping[str, Any] | None) -> RequestSpec:
        body = {"externalId": external_id, "type": type, "attributes": dict(attributes or {})}
        return _json("POST", "/entities", body)

    def get_entity(self, external_id: str) -> RequestSpec:
        return RequestSpec("GET", f"/entities/{_path_id(external_id)}")

    def delete_entity(self, external_id: str) -> RequestSpec:
        return RequestSpec("DELETE", f"/entities/{_path_id(external_id)}")

    def set_state(
        self, external_id: str, key: str, value: Any, timestamp: str | dt.datetime | None
    ) -> RequestSpec:
        body: dict[str, Any] = {"value": value}
        if timestamp is not None:
            body["timestamp"] = format_timestamp(timestamp)
        return _json("PUT", f"/entities/{_path_id(external_id)}/state/{_path_id(key)}", body)

    def get_state(self, external_id: str, key: str | None) -> RequestSpec:
        path = f"/entities/{_path_id(external_id)}/state"
        return RequestSpec("GET", path if key is None else f"{path}/{_path_id(key)}")

    def events_page(
        self,
        external_id: str,
        *,
        type: str | None,
        from_: str | dt.datetime | None,
        to: str | dt.datetime | None,
        order: str,
        limit: int,
        cursor: str | None,
    ) -> RequestSpec:
        params = _params(
            type=type,
            order=order,
            limit=limit,
            cursor=cursor,
            to=format_timestamp(to) if to is not None else None,
            **{"from": format_timestamp(from_) if from_ is not None else None},
        )
        return RequestSpec("GET", f"/entities/{_path_id(external_id)}/events", params)

    # settings and templates
    def settings(self) -> RequestSpec:
        return RequestSpec("GET", "/settings")

    def update_settings(self, fields: Mapping[str, Any]) -> RequestSpec:
        return _json("PUT", "/settings", {_SETTINGS_NAMES.get(k, k): v for k, v in fields.items()})

    def templates(self) -> RequestSpec:
        return RequestSpec("GET", "/templates")

    # batches and jobs
    def encode_items(self, kind: str, items: Iterable[Mapping[str, Any]]) -> list[bytes]:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        return [encode(item) for item in items]

    def plan(
        self, kind: str, parts: list[bytes], *, max_bytes: int = MAX_BATCH_BYTES
    ) -> list[tuple[int, int]]:
        return plan_chunks(kind, parts, max_items=MAX_BATCH_ITEMS[kind], max_bytes=max_bytes)

    def submit_batch(self, kind: str, parts: list[bytes], key: str | None, dry_run: bool) -> RequestSpec:
        headers = {"Content-Type": "application/json"}
        if key is not None and not dry_run:
            headers["Idempotency-Key"] = key
        params = _params(dryRun="true" if dry_run else None)
        return RequestSpec("POST", f"/batch/{kind}", params, batch_body(kind, parts), headers)

    def get_job(self, job_id: str) -> RequestSpec:
        return RequestSpec("GET", f"/batch/jobs/{_path_id(job_id)}")

    def job_items_page(self, job_id: str, *, status: str | None, cursor: str | None) -> RequestSpec:
        params = _params(status=status, limit=1000, cursor=cursor)
        return RequestSpec("GET", f"/batch/jobs/{_path_id(job_id)}/items", params)

    # responses
    def parse(self, response: httpx.Response) -> Any:
        """The JSON body of a success, or the typed ``APIError`` for anything else."""
        if response.is_success:
            return response.json() if response.content else {}
        raise api_error(response)


def api_error(response: httpx.Response) -> APIError:
    """Map an error response to its exception class (by code, then status)."""
    error: dict[str, Any] = {}
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
    except ValueError:
        pass
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = str(error.get("message") or response.reason_phrase or f"HTTP {response.status_code}")
    details = error.get("details") if isinstance(error.get("details"), list) else None
    request_id = error.get("requestId") or response.headers.get("X-Request-Id")
    cls = error_class(response.status_code, code)
    return cls(
        message,
        status=response.status_code,
        code=code or cls.code,
        request_id=request_id,
        details=details,
        retry_after=retry_after(response.headers.get("Retry-After")),
    )


def retry_after(header: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not header:
        return None
    header = header.strip()
    try:
        return max(float(header), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


def transport_error(exc: httpx.TransportError) -> TransportError:
    error = TransportError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    error.__cause__ = exc
    return error


def is_retryable(error: BaseException) -> bool:
    """429, any 5xx and connection failures; never another 4xx (retrying cannot fix it)."""
    return isinstance(error, TransportError | RateLimited | ServerError)


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter; a ``Retry-After`` is a floor (capped at ``max_retry_after``)."""

    max_retries: int = 5
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 300.0

    def delay(self, attempt: int, error: BaseException) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up now."""
        if attempt >= self.max_retries or not is_retryable(error):
            return None
        backoff = random.uniform(0.0, min(self.cap, self.base * 2**attempt))
        hint = getattr(error, "retry_after", None)
        if hint is None:
            return backoff
        return max(backoff, min(float(hint), self.max_retry_after))
