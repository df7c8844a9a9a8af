"""The JSON log line's timestamp: UTC to the millisecond, right across second boundaries."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

from onehazel.api.observability import JsonFormatter


def line(formatter: JsonFormatter, created: float) -> dict[str, object]:
    record = logging.LogRecord("onehazel", logging.INFO, __file__, 1, "request", None, None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return dict(orjson.loads(formatter.format(record)))


def expected(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def test_timestamps_follow_the_record_across_seconds_and_back() -> None:
    formatter = JsonFormatter()
    # Binary fractions, so the milliseconds are exact whichever way they are rounded.
    moments = [
        1_795_780_799.875,  # 2026-11-27T11:59:59.875Z
        1_795_780_799.9375,
        1_795_780_800.0,  # the next second (and minute, hour)
        1_795_780_800.5,
        1_795_780_799.25,  # a record from the second before, after the cache moved on
        86_399.125,  # 1970-01-01T23:59:59.125Z
    ]
    for created in moments:
        assert line(formatter, created)["ts"] == expected(created)
    assert line(formatter, 1_795_780_800.0)["ts"] == "2026-11-27T12:00:00.000Z"
    assert line(formatter, 86_399.125)["ts"] == "1970-01-01T23:59:59.125Z"
