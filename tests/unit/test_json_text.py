"""``parse_exact`` (orjson first) gives exactly what ``parse_json`` gives, error or value;
``envelope`` (simdjson first) gives the shape of what ``parse_json`` gives, or its error."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onehazel.domain.errors import InvalidJson
from onehazel.domain.json_text import envelope, parse_exact, parse_json, shape_of, values_over

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # past 64 bits both ways
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.text(),  # lone surrogates included
)
_documents = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _encode(value: Any, ensure_ascii: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ensure_ascii, default=str)  # Decimals as strings
    return text.encode("utf-8", errors="surrogatepass")


def _outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    try:
        value = parse(raw)
    except InvalidJson as error:
        return "error", str(error)
    return "value", _typed(value)


def _typed(value: Any) -> Any:
    """The value with every leaf's type beside it (1 == 1.0 == True in Python). Built without
    recursion: from Python 3.13 on json.loads reads documents nested deeper than the
    interpreter's recursion limit lets a Python function walk."""
    typed: dict[int, Any] = {}  # by id: each container json.loads made, once its children are done

    def of(node: Any) -> Any:
        if isinstance(node, dict | list):
            return typed.pop(id(node))
        return (type(node).__name__, repr(node))

    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, dict | list):
            continue
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in (node.values() if isinstance(node, dict) else node))
        elif isinstance(node, dict):
            typed[id(node)] = ("dict", [(k, of(v)) for k, v in node.items()])
        else:
            typed[id(node)] = ("list", [of(v) for v in node])
    return of(value)


@settings(max_examples=400, deadline=None)
@given(_documents, st.booleans())
def test_parse_exact_equals_parse_json(value: Any, ensure_ascii: bool) -> None:
    raw = _encode(value, ensure_ascii)
    assert _outcome(parse_exact, raw) == _outcome(parse_json, raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"amount": 12345678901234567890.12}',
        b'{"n": 9223372036854775807, "m": -9223372036854775808}',
        b'{"n": 9223372036854775808}',
        b'{"n": 18446744073709551616}',
        b'{"n": 1e3, "m": -0.0, "k": -0}',
        b'{"a": 1, "a": 2}',
        b"\xef\xbb\xbf{}",
        b'{"s": "\\ud800"}',
        b'{"s": "\\u0000"}',
        b'{"s": "\xff"}',
        b"[NaN]",
        b"[Infinity]",
        b"",
        b"   ",
        b"{",
        b'{"a": [' * 3 + b"]}" * 3,
        b"[" * 2000 + b"]" * 2000,
        b'"just a string"',
        b"1.5",
        b'{"n": 1e99999999999999999999}',  # past Decimal's exponent range: a 400, not a 500
    ],
)
def test_edge_documents_parse_alike(raw: bytes) -> None:
    assert _outcome(parse_exact, raw) == _outcome(parse_json, raw)


def test_money_stays_exact() -> None:
    assert parse_exact(b'{"amount": 12345678901234567890.12}') == {
        "amount": Decimal("12345678901234567890.12")
    }


def _shape_outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "value", parse(raw)
    except InvalidJson as error:
        return "error", str(error)


def _reference_shape(raw: bytes) -> Any:
    return shape_of(parse_json(raw))


_bodies = st.one_of(
    _documents,
    st.dictionaries(st.sampled_from(["events", "entities", "x", "é"]), _documents, max_size=3),
    st.dictionaries(st.just("events"), st.lists(_documents, max_size=6), min_size=1),
)


@settings(max_examples=400, deadline=None)
@given(_bodies, st.booleans())
def test_envelope_gives_the_shape_parse_json_gives(value: Any, ensure_ascii: bool) -> None:
    raw = _encode(value, ensure_ascii)
    assert _shape_outcome(envelope, raw) == _shape_outcome(_reference_shape, raw)


@settings(max_examples=400, deadline=None)
@given(_bodies, st.data())
def test_envelope_of_damaged_bytes_fails_or_reads_like_parse_json(value: Any, data: st.DataObject) -> None:
    """One byte replaced, cut short or doubled: either both accept it, alike, or both give
    the same error (simdjson must never accept what the worker's exact parse refuses)."""
    raw = bytearray(_encode(value, False))
    if raw:
        at = data.draw(st.integers(0, len(raw) - 1))
        how = data.draw(st.sampled_from(["replace", "cut", "double"]))
        if how == "replace":
            raw[at] = data.draw(st.integers(0, 255))
        elif how == "cut":
            del raw[at:]
        else:
            raw[at:at] = raw[at : at + 1]
    assert _shape_outcome(envelope, bytes(raw)) == _shape_outcome(_reference_shape, bytes(raw))


@pytest.mark.parametrize(
    ("raw", "shape"),
    [
        (b'{"events": [1, 2, 3]}', {"events": 3}),
        (b'{"events": [1], "events": [1, 2]}', {"events": 2}),  # the last, as parse_json keeps
        (b'{"events": [123456789012345678901234567890]}', {"events": 1}),
        (b'{"events": ["\\ud800"], "n": 1}', {"events": 1, "n": None}),
        (b'\xef\xbb\xbf{"events": []}', {"events": 0}),
        (b'{"a": 1, "a\\u0000b": [1, 2]}', {"a": None, "a\x00b": 2}),
        (b"[1, 2]", None),
        (b'"events"', None),
    ],
)
def test_envelope_edge_documents(raw: bytes, shape: Any) -> None:
    assert envelope(raw) == shape == _reference_shape(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"events": [1.]}',
        b'{"events": []} x',
        b'{"events": ["\xff"]}',
        b"[NaN]",
        b'{"events": [1e99999999999999999999]}',
    ],
)
def test_envelope_refuses_what_parse_json_refuses_with_its_message(raw: bytes) -> None:
    with pytest.raises(InvalidJson) as refused:
        envelope(raw)
    with pytest.raises(InvalidJson) as reference:
        parse_json(raw)
    assert str(refused.value) == str(reference.value)


def _values(value: Any) -> tuple[int, int]:
    """(JSON values in ``value``, itself included; its empty arrays and objects)."""
    if isinstance(value, dict | list):
        children = list(value.values()) if isinstance(value, dict) else value
        counts = [_values(child) for child in children]
        return 1 + sum(c[0] for c in counts), (not children) + sum(c[1] for c in counts)
    return 1, 0


@settings(max_examples=400, deadline=None)
@given(_documents, st.booleans(), st.booleans())
def test_values_over_never_undercounts_and_is_exact_without_empty_containers(
    value: Any, ensure_ascii: bool, indent: bool
) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii, default=str, indent=1 if indent else None)
    raw = text.encode("utf-8", errors="surrogatepass")
    values, empty = _values(value)
    # every limit takes both paths: the byte counts alone, then the count without strings
    assert values_over(raw, values - 1)
    assert not values_over(raw, values + empty)
    if empty == 0:
        assert not values_over(raw, values)
