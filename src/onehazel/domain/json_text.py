"""Parsing JSON text the way every body and stored batch is parsed.

Numbers with a fraction or exponent become ``Decimal`` (money never touches a
float), ``NaN``/``Infinity`` are refused, and every failure is the contract's
400 ``invalid_json`` with a position, never the offending text.
"""

from __future__ import annotations

import decimal
import json
import re
import sys
from decimal import Decimal
from typing import Any

import orjson
import simdjson

from onehazel.domain.errors import InvalidJson

# A JSON escape that can put NUL or half of a surrogate pair into a string. Raw
# bytes cannot: control characters must be escaped in JSON strings, and strict
# UTF-8 has no surrogates. An escaped backslash before "u0000" also matches,
# which only costs the shortcut.
_RISKY_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def strings_are_clean(raw: bytes) -> bool:
    """True when no string in the JSON document ``raw`` can hold NUL or a lone
    surrogate, so validation may skip searching every string for them."""
    return b"\\u" not in raw or _RISKY_ESCAPE.search(raw) is None


# simdjson (``envelope``) and orjson read documents nested up to 1024 levels; json.loads
# (``parse_json``) on Python 3.11 stops at the interpreter's recursion limit (1000 less the
# caller's own depth), from 3.12 on at a C-level limit of its own, past 1024. A batch accepted
# by the first is read again by the second when its job runs, so on 3.11 the limit is raised
# once, for the process, to 2000: an item nested 1000 levels deep then fails alone (too deep
# for an item: a field may nest 30 levels), instead of its whole job failing as unreadable.
# Documents deeper than json.loads reads are refused (400 invalid_json).
_RECURSION_LIMIT = 2000
if sys.getrecursionlimit() < _RECURSION_LIMIT:
    sys.setrecursionlimit(_RECURSION_LIMIT)

# A JSON string (the document is known valid): what it holds is no structure.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def values_over(raw: bytes, limit: int) -> bool:
    """Does the valid JSON document ``raw`` hold more than ``limit`` values (array elements
    and member values, at any depth, plus the document)?

    Counted as commas + opening brackets + 1, an upper bound that is exact unless a
    container is empty. Three byte counts answer it for the usual document; only past the
    limit are the strings (whose commas and brackets are text) taken out and it is
    counted again."""

    def bound(text: bytes) -> int:
        return text.count(b",") + text.count(b"[") + text.count(b"{") + 1

    return bound(raw) > limit and bound(_JSON_STRING.sub(b"", raw)) > limit


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_int(text: str) -> int | Decimal:
    """Integers past 64 bits stay exact as Decimal: fine for decimal fields, refused elsewhere."""
    if len(text) < 19:
        return int(text)
    value = Decimal(text)  # 19-20 digit literals may still fit in 64 bits: keep those ints
    return int(value) if -(2**63) <= value < 2**63 else value


def parse_envelope(raw: bytes) -> Any:
    """A fast parse for when only the document's shape matters (a batch's item count).

    orjson is several times faster than the Decimal-exact parser; anything it
    refuses (huge integers, lone surrogates, invalid JSON) goes through
    ``parse_json``, which accepts it or gives the precise error. Values from here
    must not be stored: floats are not exact.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return parse_json(raw)


def envelope(raw: bytes) -> dict[str, int | None] | None:
    """The shape of a batch body, without building it: for a JSON object, each member's
    array length (None for a member that is not an array); None for any other JSON value.
    Raises ``parse_json``'s error for a document that is not JSON.

    simdjson validates the whole document (UTF-8, structure, strings, numbers) in ~1 ms
    for a 5000-event batch, against ~11 ms for orjson to build and free it. A document it
    refuses (a lone surrogate escape, an integer past 64 bits, deep nesting, or not JSON
    at all), or one with a member name repeated (``parse_json`` keeps the last) or
    holding NUL, is read by ``parse_envelope``, which gives the answer or the precise
    error. Property tests hold the two paths equal.
    """
    try:
        document = simdjson.Parser().parse(raw)  # a parser per call: its values must not outlive it
    except (ValueError, RuntimeError):  # simdjson's errors (UnicodeDecodeError is a ValueError)
        return shape_of(parse_envelope(raw))
    if not isinstance(document, simdjson.Object):
        return None
    names = list(document.keys())
    if len(set(names)) != len(names) or any("\x00" in name for name in names):
        return shape_of(parse_envelope(raw))  # simdjson cannot look a name with NUL up
    shape: dict[str, int | None] = {}
    for name in names:
        value = document[name]
        shape[name] = len(value) if isinstance(value, simdjson.Array) else None
    return shape


def shape_of(document: Any) -> dict[str, int | None] | None:
    """``envelope``'s answer for a parsed document."""
    if not isinstance(document, dict):
        return None
    return {name: len(value) if isinstance(value, list) else None for name, value in document.items()}


def parse_exact(raw: bytes) -> Any:
    """``parse_json``'s answer (the same value, or the same error), faster for the usual
    body: orjson parses it, and a document orjson reads differently (a float, which
    ``parse_json`` keeps as an exact Decimal; an integer past 64 bits) or refuses (any
    error, a BOM) is parsed again by ``parse_json``. A property test holds the two equal.
    """
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return parse_json(raw)
    return document if _orjson_exact(document) else parse_json(raw)


_I64 = range(-(2**63), 2**63)


def _orjson_exact(document: Any) -> bool:
    """Does this orjson result hold only what ``parse_json`` gives too (no float, no
    integer outside 64 bits, which ``parse_json`` keeps as Decimal)?"""
    stack = [document]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is dict:
            stack.extend(node.values())
        elif kind is list:
            stack.extend(node)
        elif kind is float or (kind is int and node not in _I64):
            return False
    return True


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise InvalidJson("the request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(
            text.removeprefix("\ufeff"),
            parse_float=Decimal,
            parse_int=_parse_int,
            parse_constant=_reject_constant,
        )
    except json.JSONDecodeError as exc:
        raise InvalidJson(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise InvalidJson(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidJson("the request body is nested too deeply") from None
    except decimal.InvalidOperation:  # an exponent past what Decimal holds, e.g. 1e99999999999999999999
        raise InvalidJson("the request body is not valid JSON: a number is out of range") from None
