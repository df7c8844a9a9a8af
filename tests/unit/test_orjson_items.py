"""A job's events read by orjson are checked exactly as if read by the exact parser.

The worker parses an events payload with orjson (``worker.parse_items``), whose floats
are inexact; the validation's fast path (``event_fast``) only takes items orjson reads
exactly, and any other item is re-read exactly (``Items.exact``) before the full
validator sees it. Here random batches (floats, integers past 64 bits, decimals, nested
values, PII, bad items) are checked both ways: every outcome, row and fingerprint agrees.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from onehazel.crypto.fingerprints import Fingerprinter
from onehazel.domain.json_text import parse_json, strings_are_clean
from onehazel.domain.templates import TPL_IGAMING
from onehazel.jobs.apply import PreparedEvents, prepare_events
from onehazel.jobs.worker import parse_items
from tests.unit.test_validation_fast import bodies

FINGERPRINTS = Fingerprinter({1: b"k" * 32})
P = {"externalId": "p", "eventId": "e"}


def _encode(items: list[Any]) -> bytes:
    # Decimals as JSON numbers with a fraction: floats to orjson, exact to parse_json.
    return json.dumps({"events": items}, default=float).encode("utf-8", errors="surrogatepass")


def _summary(prepared: PreparedEvents) -> Any:
    rows = prepared.rows
    return (
        prepared.failed,
        [
            (c.offset, c.event_id, c.fingerprint, c.data, c.warnings, c.stored, c.write)
            for c in prepared.checked
        ],
        None if rows is None else (rows.columns(), rows.members, rows.counted and rows.counted.groups),
    )


def _both_ways(raw: bytes) -> tuple[Any, Any]:
    read = parse_items(raw, "events")
    by_orjson = prepare_events(TPL_IGAMING, read.items, 0, FINGERPRINTS, clean=read.clean, reread=read.reread)
    exact = parse_json(raw)["events"]
    reference = prepare_events(TPL_IGAMING, exact, 0, FINGERPRINTS, clean=strings_are_clean(raw))
    return _summary(by_orjson), _summary(reference)


@st.composite
def batches(draw: st.DrawFn) -> list[Any]:
    items = draw(st.lists(bodies(), max_size=6))
    for n, item in enumerate(items):  # server-made eventIds are random: give every item one
        if item.get("eventId") is None:
            item["eventId"] = f"e-{n}"
    return items


@settings(max_examples=600, deadline=None)
@example(items=[{**P, "type": "transaction", "data": {"amount": 2**63}}])
@example(items=[{**P, "type": "session", "data": {"duration_seconds": 2**64 - 1}}])
@example(items=[{**P, "type": "transaction", "data": {"amount": Decimal("0.1")}}])
@example(items=[{**P, "type": "bonus", "data": {"amount": 1.5, "n": [1.5]}}])
@given(items=batches())
def test_orjson_read_events_are_checked_as_the_exact_parse_checks_them(items: list[Any]) -> None:
    raw = _encode(items)
    by_orjson, reference = _both_ways(raw)
    assert by_orjson == reference


def test_an_inexact_amount_is_reread_exactly() -> None:
    raw = (
        b'{"events": [{"externalId": "p", "type": "transaction", "eventId": "e",'
        b' "data": {"type": "deposit", "amount": 12345678901234567890.12, "currency": "EUR"}}]}'
    )
    read = parse_items(raw, "events")
    assert read.items[0]["data"]["amount"] == 12345678901234567890.12  # orjson: a float
    prepared = prepare_events(TPL_IGAMING, read.items, 0, FINGERPRINTS, reread=read.reread)
    assert prepared.checked[0].write.plain["amount"] == "12345678901234567890.12"


def test_a_document_orjson_refuses_is_read_exactly() -> None:
    raw = b'{"events": [{"externalId": "p", "type": "support", "eventId": "e", "data": {"note": "\\ud800"}}]}'
    read = parse_items(raw, "events")
    assert read.reread is None  # parse_json read it: nothing to re-read
    assert read.items[0]["data"]["note"] == "\ud800"
