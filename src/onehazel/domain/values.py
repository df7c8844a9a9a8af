"""Wire values: RFC 3339 timestamps, exact decimals, identifiers and JSON hygiene.

Timestamps are kept twice: the string exactly as the client sent it (returned
unchanged) and integer microseconds since the epoch in UTC (for ordering and
filtering, identical on SQLite and PostgreSQL). Money never passes through a
float: bodies are parsed with ``parse_float=Decimal`` and decimal fields are
stored as canonical strings.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

MAX_ID_LENGTH = 256
MAX_DEPTH = 32
MAX_DECIMAL_DIGITS = 40

# RFC 3339 date-time with a mandatory offset ("Z" or +hh:mm), in ASCII digits.
_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)
_DECIMAL_STRING = re.compile(r"^[+-]?([0-9]+)(\.([0-9]+))?$")  # ASCII digits: "١٠" is not money
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Control characters, surrogates and the 66 non-characters (U+FDD0-U+FDEF, the last two of every plane).
_ID_FORBIDDEN = "\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef" + "".join(
    chr(plane << 16 | last) for plane in range(17) for last in (0xFFFE, 0xFFFF)
)
_BAD_ID_CHAR = re.compile(f"[{_ID_FORBIDDEN}]")
# What check_identifier accepts, as one pattern for fullmatch (validation's fast path).
VALID_IDENTIFIER = re.compile(f"[^{_ID_FORBIDDEN}]{{1,{MAX_ID_LENGTH}}}")
# A character no stored string may hold (NUL: PostgreSQL; lone surrogates: UTF-8).
UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")
_MICROSECOND = timedelta(microseconds=1)
_PLAIN_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_EPOCH_ORDINAL = _EPOCH.toordinal()
# Instants representable in UTC (years 1-9999): "0001-01-01T00:00:00+23:59" is not.
_MIN_MICROS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _MICROSECOND
_MAX_MICROS = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // _MICROSECOND


class ValueProblem(ValueError):
    """A value that breaks a rule; ``code`` is the contract's detail code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_READ_TIMESTAMPS: dict[str, int] = {}
"""Timestamps read lately (never errors): a batch's events mostly share a few. With the fast path's
memory of valid externalIds, a 5000-event chunk's check runs ~10% fewer instructions (callgrind)."""
_READ_TIMESTAMPS_MAX = 4096


def parse_timestamp(raw: object) -> int:
    """Return microseconds since the epoch for an RFC 3339 string with an offset."""
    if type(raw) is not str:
        return _parse_timestamp(raw)  # the precise error
    micros = _READ_TIMESTAMPS.get(raw)
    if micros is None:
        micros = _read_timestamp(raw)
        if len(_READ_TIMESTAMPS) >= _READ_TIMESTAMPS_MAX:
            _READ_TIMESTAMPS.clear()
        _READ_TIMESTAMPS[raw] = micros
    return micros


def _read_timestamp(raw: str) -> int:
    if (
        len(raw) == 20
        and _PLAIN_UTC.fullmatch(raw) is not None
        and raw[11:13] < "24"  # Python 3.14's fromisoformat reads T24:00:00 as the next midnight
        and raw[17] < "6"
    ):
        # The most common shape, whole seconds in UTC, without the general path's steps
        # (it gives the same answer, and the precise error for a date that does not exist).
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:
            seconds = moment.hour * 3600 + moment.minute * 60 + moment.second
            return ((moment.toordinal() - _EPOCH_ORDINAL) * 86_400 + seconds) * 1_000_000
    return _parse_timestamp(raw)


def _parse_timestamp(raw: object) -> int:
    if not isinstance(raw, str):
        raise ValueProblem("invalid_timestamp", "expected an RFC 3339 timestamp string")
    m = _TIMESTAMP.fullmatch(raw)  # not .match: "$" would let a trailing newline through
    if m is None:
        raise ValueProblem(
            "invalid_timestamp",
            "expected an RFC 3339 timestamp with an offset, e.g. 2026-11-27T10:00:00Z",
        )
    offset = m.group(8)
    plain_offset = offset == "Z" or (offset[1:3] <= "23" and offset[4:6] <= "59")
    if raw[10] == "T" and plain_offset and m.group(6) != "60" and len(m.group(7) or "") <= 7:
        try:  # the C parser covers the common shapes; the rules above already held
            micros = (datetime.fromisoformat(raw) - _EPOCH) // _MICROSECOND
        except (ValueError, OverflowError):
            micros = None  # fall through for the precise error
        if micros is not None and _MIN_MICROS <= micros <= _MAX_MICROS:
            return micros
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac, offset = m.group(7), m.group(8)
    micros = int((frac[1:] + "000000")[:6]) if frac else 0
    if second > 60:  # 60 is a leap second, read as :59
        raise ValueProblem("invalid_timestamp", "timestamp seconds are out of range")
    try:
        naive = datetime(year, month, day, hour, minute, min(second, 59), micros)
    except ValueError:
        raise ValueProblem("invalid_timestamp", "timestamp is not a real calendar date") from None
    if offset in ("Z", "z"):
        delta = timedelta(0)
    else:
        sign = 1 if offset[0] == "+" else -1
        oh, om = int(offset[1:3]), int(offset[4:6])
        if oh > 23 or om > 59:
            raise ValueProblem("invalid_timestamp", "timestamp offset is out of range")
        delta = sign * timedelta(hours=oh, minutes=om)
    try:
        moment = naive.replace(tzinfo=UTC) - delta
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
        raise ValueProblem("invalid_timestamp", "timestamp is out of range in UTC") from None
    return (moment - _EPOCH) // timedelta(microseconds=1)


_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def format_timestamp(micros: int) -> str:
    """Render microseconds since the epoch as RFC 3339 UTC with microseconds.

    Most calls render the current time, so the whole-second part of the last one is
    kept (a single entry, swapped atomically); floor division keeps instants before
    1970 right (the fraction counts up from the second before)."""
    global _last_second
    seconds, fraction = divmod(micros, 1_000_000)
    cached = _last_second
    if cached[0] != seconds:
        moment = _EPOCH + timedelta(seconds=seconds)
        cached = _last_second = (seconds, moment.replace(tzinfo=None).isoformat(timespec="seconds"))
    return f"{cached[1]}.{fraction:06d}Z"


def now_micros() -> int:
    return time.time_ns() // 1000


def parse_decimal(raw: object) -> str:
    """Return the canonical string of a decimal given as a JSON number or a string.

    The digits are kept exactly as sent ("10.50" stays "10.50"); a leading "+" and
    exponents (from JSON numbers such as 1e3) are normalised away.
    """
    if isinstance(raw, bool):
        raise ValueProblem("invalid_field_type", "expected a number or decimal string")
    if isinstance(raw, int):
        text = str(raw)
    elif isinstance(raw, Decimal | float):
        value = Decimal(str(raw)) if isinstance(raw, float) else raw
        if not value.is_finite():
            raise ValueProblem("invalid_field_type", "expected a finite decimal")
        if _fixed_point_digits(value) > MAX_DECIMAL_DIGITS:  # before format(): 1e999999999 has 1e9 digits
            raise ValueProblem("invalid_field_type", f"decimal has more than {MAX_DECIMAL_DIGITS} digits")
        text = format(value, "f")
    elif isinstance(raw, str):
        text = raw.strip()
        if _DECIMAL_STRING.match(text) is None:
            raise ValueProblem("invalid_field_type", 'expected a number or decimal string such as "12.50"')
    else:
        raise ValueProblem("invalid_field_type", "expected a number or decimal string")
    text = text.lstrip("+")
    digits = len(text) - ("." in text) - (text[:1] == "-")  # only digits, one sign, one dot remain
    if digits > MAX_DECIMAL_DIGITS:
        raise ValueProblem("invalid_field_type", f"decimal has more than {MAX_DECIMAL_DIGITS} digits")
    try:
        Decimal(text)
    except InvalidOperation:  # pragma: no cover - guarded by the regex above
        raise ValueProblem("invalid_field_type", "expected a decimal") from None
    return text


def _fixed_point_digits(value: Decimal) -> int:
    """How many digits ``format(value, "f")`` would write, computed without writing them."""
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    whole = max(value.adjusted() + 1, 1) if value else 1
    return whole + max(-exponent, 0)


def check_identifier(raw: object, *, what: str) -> str:
    """An identifier: 1-256 characters, no control or non-characters."""
    if not isinstance(raw, str):
        raise ValueProblem("invalid_field_type", f"{what} must be a string")
    if not raw:
        raise ValueProblem("invalid_identifier", f"{what} must not be empty")
    if len(raw) > MAX_ID_LENGTH:
        raise ValueProblem("invalid_identifier", f"{what} is longer than {MAX_ID_LENGTH} characters")
    bad = _BAD_ID_CHAR.search(raw)
    if bad is not None:
        raise ValueProblem(
            "invalid_identifier",
            f"{what} contains a control, surrogate or non-character (U+{ord(bad.group()):04X})",
        )
    return raw


def json_problem(value: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Return why a parsed JSON document cannot be stored, or None if it can.

    Rejects nesting deeper than ``max_depth``, lone surrogates (not encodable as
    UTF-8) and NUL characters (PostgreSQL's jsonb cannot hold them). Iterative, so
    a hostile document cannot exhaust the stack.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        kind = type(node)
        if kind is str:
            if UNSTORABLE_CHAR.search(node) is not None:
                return _string_problem(node)
        elif kind is int and not -(2**63) <= node < 2**63:
            return "integers must fit in 64 bits (send larger numbers as decimal strings)"
        elif isinstance(node, dict | list):
            if depth > max_depth:
                return f"JSON is nested deeper than {max_depth} levels"
            if isinstance(node, dict):
                for key, child in node.items():
                    if UNSTORABLE_CHAR.search(key) is not None:
                        return _string_problem(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in node)
    return None


def check_storable(value: Any) -> None:
    """Raise ValueProblem for a value ``json_problem`` would refuse (NUL, lone
    surrogates, too deep), checking only what a scalar needs: validation calls this
    per field, so items are never walked twice."""
    kind = type(value)
    if kind is str:
        if UNSTORABLE_CHAR.search(value) is not None:
            raise ValueProblem("invalid_json_value", _string_problem(value) or "unstorable string")
    elif kind is dict or kind is list:
        problem = json_problem(value, max_depth=MAX_DEPTH - 2)
        if problem is not None:
            raise ValueProblem("invalid_json_value", problem)


def safe_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced, for echoing it in messages and paths."""
    return UNSTORABLE_CHAR.sub("\ufffd", text)


def _string_problem(text: str) -> str | None:
    bad = UNSTORABLE_CHAR.search(text)
    if bad is None:
        return None
    if bad.group() == "\x00":
        return "strings may not contain the NUL character (\\u0000)"
    return "strings may not contain unpaired UTF-16 surrogates"
