"""``parse_exact`` (orjson first) gives exactly what ``parse_json`` gives, error or value."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onehazel.domain.errors import InvalidJson
from onehazel.domain.json_text import parse_exact, parse_json

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
    """The value with every leaf's type beside it (1 == 1.0 == True in Python)."""
    if isinstance(value, dict):
        return ("dict", [(k, _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, repr(value))


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
    ],
)
def test_edge_documents_parse_alike(raw: bytes) -> None:
    assert _outcome(parse_exact, raw) == _outcome(parse_json, raw)


def test_money_stays_exact() -> None:
    assert parse_exact(b'{"amount": 12345678901234567890.12}') == {
        "amount": Decimal("12345678901234567890.12")
    }
