"""The fast event validator (batch hot path) agrees with the full one on everything it accepts.

``validate_event`` first tries a one-pass check of the common, valid shape and
hands anything unusual to ``validate_event_fully``. These properties hold the
shortcut to the rules: whenever it answers, the full validator accepts the same
body and produces the very same write (values, PII split, warnings, timestamps).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from onehazel.domain import validation
from onehazel.domain.errors import ValidationFailed
from onehazel.domain.json_text import parse_json, strings_are_clean
from onehazel.domain.templates import TPL_IGAMING
from onehazel.domain.validation import EventWrite, event_fast, validate_event, validate_event_fully
from onehazel.domain.values import json_problem

EVENT_TYPES = sorted(TPL_IGAMING.event_types)
FIELD_NAMES = sorted({name for t in TPL_IGAMING.event_types.values() for name in t.fields})
SPECS = [spec for t in TPL_IGAMING.event_types.values() for spec in t.fields.values()]
ENUM_VALUES = sorted({value for spec in SPECS for value in spec.enum or ()})

any_text = st.text(max_size=12)  # includes NUL, control characters and lone surrogates
ids = st.one_of(st.sampled_from(["p-1", "evt-1", "x" * 256, "x" * 257, "", "a\nb", "\ud800"]), any_text)
timestamps = st.one_of(
    st.sampled_from(
        [
            "2026-11-27T10:00:00Z",
            "2026-11-27T10:00:00.123456+02:00",
            "2026-11-27 10:00:00z",
            "2026-02-30T10:00:00Z",
            "2026-11-27T10:00:60Z",
            "2026-11-27T10:00:00",
            "0001-01-01T00:00:00+23:59",
        ]
    ),
    any_text,
    st.integers(),
)
decimals = st.sampled_from(
    ["12.50", "-0.1", "+3", " 4 ", "1e3", "١٢", "1" * 40, "1" * 41, "-" + "9" * 40, ".5", "1."]
)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
    decimals,
    timestamps,
    st.sampled_from(ENUM_VALUES),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(any_text, st.integers(), max_size=2),
)
data = st.one_of(
    st.none(),
    st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), any_text), values, max_size=8),
    st.sampled_from([[], "x", 1]),
)


@st.composite
def bodies(draw: st.DrawFn) -> Any:
    body: dict[str, Any] = {}
    if draw(st.booleans()):
        body["externalId"] = draw(ids)
    body["type"] = draw(st.one_of(st.sampled_from(EVENT_TYPES), any_text, st.integers(), st.none()))
    if draw(st.booleans()):
        body["eventId"] = draw(st.one_of(ids, st.none()))
    if draw(st.booleans()):
        body["timestamp"] = draw(st.one_of(timestamps, st.none()))
    if draw(st.booleans()):
        body["data"] = draw(data)
    if draw(st.integers(0, 9)) == 0:
        body["extra"] = 1
    return body


def fully(body: Any) -> EventWrite | None:
    try:
        return validate_event_fully(TPL_IGAMING, body)
    except ValidationFailed:
        return None


def same_write(fast: EventWrite, full: EventWrite) -> bool:
    fields = ("external_id", "type", "plain", "pii", "event_id", "timestamp", "ts", "warnings")
    return all(getattr(fast, name) == getattr(full, name) for name in fields) and all(
        type(fast.plain.get(k)) is type(full.plain.get(k)) and type(fast.pii.get(k)) is type(full.pii.get(k))
        for k in {*fast.plain, *fast.pii}
    )


@settings(max_examples=3000, deadline=None)
@example(body={"externalId": "p-1", "type": "transaction", "data": {"type": "deposit", "amount": "١٢"}})
@example(body={"externalId": "p-1", "type": "transaction", "data": {"amount": 7, "currency": "EUR"}})
@example(body={"externalId": "p-1", "type": "session", "data": {"ip_address": "1.2.3.4"}})
@example(body={"externalId": "p\x00", "type": "login"})
@given(body=bodies())
def test_the_fast_path_answers_only_what_the_full_validator_answers_the_same(body: Any) -> None:
    full = fully(body)
    for clean in (False, True):
        if clean and json_problem(body) is not None:
            continue  # the caller only says clean when no string holds NUL or a lone surrogate
        fast = event_fast(TPL_IGAMING, body, clean)
        if fast is not None:
            assert full is not None, f"the fast path accepted what the full validator refuses: {body!r}"
            assert same_write(fast, full)
            if fast.plain_text is not None:
                assert json.loads(fast.plain_text) == json.loads(json.dumps(full.plain, default=str))


def test_the_fast_path_takes_the_common_transaction() -> None:
    body = parse_json(
        b'{"externalId": "p-1", "type": "transaction", "eventId": "e-1", "timestamp": "2026-11-27T10:00:00Z",'
        b' "data": {"type": "deposit", "amount": "10.50", "currency": "EUR", "method": "card", "n": 3}}'
    )
    fast = event_fast(TPL_IGAMING, body, True)
    assert fast is not None
    assert fast.plain["amount"] == "10.50"
    assert validate_event(TPL_IGAMING, body) == fast


def test_external_ids_found_valid_are_remembered_up_to_a_bound() -> None:
    for n in range(3 * validation._VALID_EXTERNAL_IDS_MAX):
        body = {"externalId": f"player-{n}", "type": "session", "timestamp": "2026-11-27T10:00:00Z"}
        fast = event_fast(TPL_IGAMING, body, True)
        assert fast is not None
        assert fast.external_id == f"player-{n}"
        assert len(validation._VALID_EXTERNAL_IDS) <= validation._VALID_EXTERNAL_IDS_MAX
    for bad in ("", "p\x00", "x" * 257, "p\n"):  # refused every time, never remembered
        for _ in range(2):
            assert event_fast(TPL_IGAMING, {"externalId": bad, "type": "session"}, True) is None
            with pytest.raises(ValidationFailed):
                validate_event(TPL_IGAMING, {"externalId": bad, "type": "session"})


def test_unusual_values_go_to_the_full_validator() -> None:
    data = {"amount": Decimal("10.5"), "currency": "EUR"}
    body = {"externalId": "p-1", "type": "transaction", "data": data}
    assert event_fast(TPL_IGAMING, body, True) is None
    assert validate_event(TPL_IGAMING, body).plain["amount"] == "10.5"  # the full validator decides


@given(text=st.text(max_size=20))
def test_clean_means_no_string_can_hold_nul_or_a_lone_surrogate(text: str) -> None:
    raw = json.dumps({"events": [{"data": {text: text}}]}).encode()  # ASCII escapes, as clients send
    if strings_are_clean(raw):
        assert json_problem(parse_json(raw)) is None
