"""Opaque pagination cursors: round trip, and a clear 422 invalid_cursor for anything else."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onehazel.domain.cursors import decode_cursor, encode_cursor
from onehazel.domain.errors import ValidationFailed

ENTITY_KEY = (int, str)
EVENT_KEY = (int, int, str)

# what a listing can put in a cursor: identifiers (no control characters or surrogates)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)
micros = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def raw_cursor(doc: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def assert_invalid_cursor(kind: str, cursor: str, types: tuple[type, ...]) -> None:
    with pytest.raises(ValidationFailed) as info:
        decode_cursor(kind, cursor, types)
    error = info.value
    assert (error.status, error.code) == (422, "validation_error")
    assert [(d.path, d.code) for d in error.details] == [("cursor", "invalid_cursor")]
    assert error.body("req_1")["error"]["details"][0]["code"] == "invalid_cursor"


@settings(max_examples=200, deadline=None)
@given(updated_at=micros, external_id=texts)
def test_entity_cursor_round_trip(updated_at: int, external_id: str) -> None:
    cursor = encode_cursor("entities", [updated_at, external_id])
    assert decode_cursor("entities", cursor, ENTITY_KEY) == [updated_at, external_id]


@settings(max_examples=200, deadline=None)
@given(ts=micros, seq=st.integers(min_value=0, max_value=2**63 - 1), event_id=texts)
def test_event_cursor_round_trip(ts: int, seq: int, event_id: str) -> None:
    cursor = encode_cursor("events-desc", [ts, seq, event_id])
    assert decode_cursor("events-desc", cursor, EVENT_KEY) == [ts, seq, event_id]


@settings(max_examples=100, deadline=None)
@given(external_id=texts)
def test_cursors_are_url_safe(external_id: str) -> None:
    cursor = encode_cursor("entities", [1, external_id])
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_cursor_of_another_listing_is_rejected() -> None:
    ascending = encode_cursor("events-asc", [1, 2, "evt_1"])
    assert_invalid_cursor("events-desc", ascending, EVENT_KEY)
    assert_invalid_cursor("entities", encode_cursor("events-asc", [1, "evt_1"]), ENTITY_KEY)


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("", id="empty"),
        pytest.param("garbage", id="garbage"),
        pytest.param("!!!", id="not-base64"),
        pytest.param("a", id="one-char"),
        pytest.param(base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(), id="not-utf8"),
        pytest.param(base64.urlsafe_b64encode(b"{not json").decode(), id="not-json"),
        pytest.param(raw_cursor([1, "p-1"]), id="json-list"),
        pytest.param(raw_cursor("entities"), id="json-string"),
        pytest.param(raw_cursor(None), id="json-null"),
        pytest.param(raw_cursor({"k": "entities"}), id="no-value"),
        pytest.param(raw_cursor({"v": [1, "p-1"]}), id="no-kind"),
        pytest.param(raw_cursor({"k": "entities", "v": {"a": 1}}), id="value-object"),
        pytest.param(raw_cursor({"k": "entities", "v": [1]}), id="too-short"),
        pytest.param(raw_cursor({"k": "entities", "v": [1, "p-1", 3]}), id="too-long"),
        pytest.param(raw_cursor({"k": "entities", "v": ["1", "p-1"]}), id="string-for-int"),
        pytest.param(raw_cursor({"k": "entities", "v": [1.0, "p-1"]}), id="float-for-int"),
        pytest.param(raw_cursor({"k": "entities", "v": [True, "p-1"]}), id="bool-for-int"),
        pytest.param(raw_cursor({"k": "entities", "v": [1, 2]}), id="int-for-string"),
        pytest.param(raw_cursor({"k": "entities", "v": [1, None]}), id="null-for-string"),
        pytest.param(raw_cursor({"k": ["entities"], "v": [1, "p-1"]}), id="list-kind"),
        pytest.param(raw_cursor({"k": "entities", "v": [2**63, "p-1"]}), id="int-over-64-bits"),
        pytest.param(raw_cursor({"k": "entities", "v": [-(2**63) - 1, "p-1"]}), id="int-under-64-bits"),
        pytest.param(raw_cursor({"k": "entities", "v": [1, "p\x00"]}), id="nul-in-string"),
        pytest.param(raw_cursor({"k": "entities", "v": [1, "\ud800"]}), id="lone-surrogate"),
    ],
)
def test_damaged_cursors_are_invalid(cursor: str) -> None:
    assert_invalid_cursor("entities", cursor, ENTITY_KEY)


def test_invalid_cursor_message_does_not_echo_the_cursor() -> None:
    cursor = raw_cursor({"k": "entities", "v": ["secret-canary", "p-1"]})
    with pytest.raises(ValidationFailed) as info:
        decode_cursor("entities", cursor, ENTITY_KEY)
    assert cursor not in str(info.value)
    assert "secret-canary" not in json.dumps(info.value.body("req_1"))
