"""Wire values: RFC 3339 timestamps, exact decimals, identifiers and JSON hygiene."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onehazel.domain import values
from onehazel.domain.values import (
    MAX_DEPTH,
    ValueProblem,
    check_identifier,
    format_timestamp,
    json_problem,
    now_micros,
    parse_decimal,
    parse_timestamp,
)
from onehazel.domain.values import _parse_timestamp as general_parse_timestamp


def micros(*args: int) -> int:
    moment = datetime(*args, tzinfo=UTC)  # type: ignore[misc]
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T10:00:00Z", micros(2026, 11, 27, 10)),
        ("2026-11-27t10:00:00z", micros(2026, 11, 27, 10)),
        ("2026-11-27 10:00:00Z", micros(2026, 11, 27, 10)),
        ("2026-11-27T12:00:00+02:00", micros(2026, 11, 27, 10)),
        ("2026-11-27T05:30:00-04:30", micros(2026, 11, 27, 10)),
        ("2026-11-27T10:00:00+00:00", micros(2026, 11, 27, 10)),
        ("2026-11-27T10:00:00-00:00", micros(2026, 11, 27, 10)),
        ("2026-11-28T00:30:00+14:30", micros(2026, 11, 27, 10)),
        ("2026-11-27T10:00:00.5Z", micros(2026, 11, 27, 10) + 500_000),
        ("2026-11-27T10:00:00.123456Z", micros(2026, 11, 27, 10) + 123_456),
        ("2026-11-27T10:00:00.123456789Z", micros(2026, 11, 27, 10) + 123_456),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59Z", -1_000_000),
        ("2024-02-29T00:00:00Z", micros(2024, 2, 29)),
    ],
)
def test_valid_timestamps(text: str, expected: int) -> None:
    assert parse_timestamp(text) == expected


def test_leap_second_is_accepted_as_the_last_second_of_the_minute() -> None:
    assert parse_timestamp("2016-12-31T23:59:60Z") == parse_timestamp("2016-12-31T23:59:59Z")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2026-11-27T10:00:00", id="missing-offset"),
        pytest.param("2026-11-27T10:00:00.123", id="missing-offset-fraction"),
        pytest.param("2026-11-27", id="date-only"),
        pytest.param("2026-02-30T10:00:00Z", id="feb-30"),
        pytest.param("2025-02-29T10:00:00Z", id="not-a-leap-year"),
        pytest.param("2026-13-01T10:00:00Z", id="month-13"),
        pytest.param("2026-00-10T10:00:00Z", id="month-0"),
        pytest.param("2026-11-27T24:00:00Z", id="hour-24"),
        pytest.param("2026-11-27T10:60:00Z", id="minute-60"),
        pytest.param("2026-11-27T10:00:61Z", id="second-61"),
        pytest.param("2026-11-27T10:00:00+24:00", id="offset-hour-24"),
        pytest.param("2026-11-27T10:00:00+02:60", id="offset-minute-60"),
        pytest.param("2026-11-27T10:00:00+0200", id="offset-without-colon"),
        pytest.param("2026-11-27T10:00:00.Z", id="empty-fraction"),
        pytest.param("2026-11-27T10:00:00.1234567890Z", id="ten-fraction-digits"),
        pytest.param("2026-11-27T10:00Z", id="no-seconds"),
        pytest.param("26-11-27T10:00:00Z", id="two-digit-year"),
        pytest.param(" 2026-11-27T10:00:00Z", id="leading-space"),
        pytest.param("2026-11-27T10:00:00Z\n", id="trailing-newline"),
        pytest.param("", id="empty"),
        pytest.param("yesterday", id="words"),
        pytest.param("2026-11-27T10:00:00 UTC", id="named-zone"),
        pytest.param("\u0662\u0660\u0662\u0666-11-27T10:00:00Z", id="arabic-indic-digits"),
        pytest.param("2026-11-27T10:00:00+\uff10\uff12:00", id="fullwidth-digits"),
    ],
)
def test_invalid_timestamps(text: str) -> None:
    with pytest.raises(ValueProblem) as info:
        parse_timestamp(text)
    assert info.value.code == "invalid_timestamp"


@pytest.mark.parametrize("value", [1764237600, 1764237600.0, None, True, ["2026-11-27T10:00:00Z"]])
def test_non_string_timestamps_are_invalid(value: object) -> None:
    with pytest.raises(ValueProblem) as info:
        parse_timestamp(value)
    assert info.value.code == "invalid_timestamp"


def test_timestamp_error_message_does_not_echo_the_value() -> None:
    with pytest.raises(ValueProblem) as info:
        parse_timestamp("secret-canary-value")
    assert "secret-canary-value" not in info.value.message


@settings(max_examples=200, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
)
def test_format_then_parse_round_trips(moment: datetime) -> None:
    value = parse_timestamp(moment.isoformat().replace("+00:00", "Z"))
    text = format_timestamp(value)
    assert text.endswith("Z")
    assert parse_timestamp(text) == value


def _either(parse: Any, text: str) -> object:
    try:
        return parse(text)
    except ValueProblem as problem:
        return (problem.code, problem.message)


@settings(max_examples=500, deadline=None)
@given(text=st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", fullmatch=True))
def test_the_whole_seconds_utc_shortcut_answers_like_the_general_parser(text: str) -> None:
    """Any text of the shortcut's shape, real date or not (month 13, Feb 30, second 60, year 0)."""
    assert _either(parse_timestamp, text) == _either(general_parse_timestamp, text)


@pytest.mark.parametrize(
    "text",
    [
        "0000-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-27T24:00:00Z",
        "2026-11-27T10:60:00Z",
        "2026-11-27T10:00:60Z",
        "2026-11-27T10:00:61Z",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "2024-02-29T12:00:00Z",
    ],
)
def test_the_shortcut_edges_answer_like_the_general_parser(text: str) -> None:
    assert _either(parse_timestamp, text) == _either(general_parse_timestamp, text)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.sampled_from(["2026-11-27T10:00:00Z", "2026-02-30T00:00:00Z"]) | st.text()))
def test_a_timestamp_read_again_answers_as_the_first_time(texts: list[str]) -> None:
    """Read timestamps are remembered (a batch repeats them): a second read, valid or not,
    answers exactly what the general parser answers."""
    for text in texts + texts:
        assert _either(parse_timestamp, text) == _either(general_parse_timestamp, text)


def test_remembered_timestamps_stay_bounded() -> None:
    base = parse_timestamp("2026-01-01T00:00:00Z")
    for n in range(3 * values._READ_TIMESTAMPS_MAX):
        text = f"2026-01-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
        assert parse_timestamp(text) == base + (n % 86_400) * 1_000_000
        assert len(values._READ_TIMESTAMPS) <= values._READ_TIMESTAMPS_MAX


def test_format_timestamp_shape() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00.000000Z"
    assert format_timestamp(micros(2026, 11, 27, 10) + 5) == "2026-11-27T10:00:00.000005Z"
    assert format_timestamp(-1) == "1969-12-31T23:59:59.999999Z"
    assert format_timestamp(-1_000_000) == "1969-12-31T23:59:59.000000Z"


def _reference_format(micros: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_REPRESENTABLE = st.integers(min_value=micros(1, 1, 1), max_value=micros(9999, 12, 31) + 86_399_999_999)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            _REPRESENTABLE,
            st.integers(min_value=-3_000_000, max_value=3_000_000),  # around the epoch
            st.integers(
                min_value=micros(2026, 11, 27, 10) - 2_000_000, max_value=micros(2026, 11, 27, 10) + 2_000_000
            ),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_format_timestamp_matches_the_reference_in_any_order(values: list[int]) -> None:
    # Runs of calls: the cached second must never leak into the next value.
    for value in values:
        assert format_timestamp(value) == _reference_format(value)


def test_now_micros_is_the_current_utc_time() -> None:
    before = datetime.now(UTC)
    value = now_micros()
    after = datetime.now(UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert (
        (before - epoch) // timedelta(microseconds=1) - 1
        <= value
        <= (after - epoch) // timedelta(microseconds=1) + 1
    )


# --- decimals ---------------------------------------------------------------------------------


@st.composite
def decimals_up_to_30_digits(draw: st.DrawFn) -> Decimal:
    """Any finite decimal whose plain ("f") rendering has at most 30 digits."""
    places = draw(st.integers(min_value=0, max_value=29))
    unscaled = draw(st.integers(min_value=-(10**30) + 1, max_value=10**30 - 1))
    return Decimal(f"{unscaled}E-{places}")  # the constructor is exact (scaleb would round to 28)


@settings(max_examples=300, deadline=None)
@given(value=decimals_up_to_30_digits())
def test_decimal_round_trips_exactly_as_decimal_or_string(value: Decimal) -> None:
    text = format(value, "f")
    assert parse_decimal(value) == text
    assert parse_decimal(text) == text
    assert Decimal(parse_decimal(text)) == value
    assert Decimal(parse_decimal(text)).as_tuple().exponent == value.as_tuple().exponent


@settings(max_examples=200, deadline=None)
@given(value=st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_any_finite_decimal_is_exact_or_refused(value: Decimal) -> None:
    if sum(ch.isdigit() for ch in format(value, "f")) > 40:
        with pytest.raises(ValueProblem) as info:
            parse_decimal(value)
        assert info.value.code == "invalid_field_type"
    else:
        assert Decimal(parse_decimal(value)) == value


@settings(max_examples=200, deadline=None)
@given(value=st.integers(min_value=-(10**30) + 1, max_value=10**30 - 1))
def test_integers_round_trip(value: int) -> None:
    assert parse_decimal(value) == str(value)
    assert parse_decimal(str(value)) == str(value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10.50", "10.50"),
        ("+10.50", "10.50"),
        ("-0.01", "-0.01"),
        ("007", "007"),
        ("  12.5 ", "12.5"),
        (Decimal("1E+3"), "1000"),
        (Decimal("1.0E-3"), "0.0010"),
        (Decimal("25.00"), "25.00"),
        (0, "0"),
        (0.1, "0.1"),
        ("0.1000000000000000055511151231257827", "0.1000000000000000055511151231257827"),
    ],
)
def test_decimal_canonical_text(raw: object, expected: str) -> None:
    assert parse_decimal(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        True,
        False,
        None,
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        float("nan"),
        float("inf"),
        "NaN",
        "Infinity",
        "1e5",
        "1E5",
        "abc",
        "",
        "1.",
        ".5",
        "1,5",
        "1 000",
        "0x10",
        "--1",
        "1" * 41,
        "\u0661\u0660",  # Arabic-Indic "10": Python's Decimal reads it, money must not
        "\uff11.5",  # fullwidth 1
        "1.\u0665",
        [1],
        {"amount": 1},
    ],
)
def test_invalid_decimals_rejected(raw: object) -> None:
    with pytest.raises(ValueProblem) as info:
        parse_decimal(raw)
    assert info.value.code == "invalid_field_type"


def test_forty_digits_is_the_limit() -> None:
    assert parse_decimal("9" * 40) == "9" * 40
    assert parse_decimal("-" + "9" * 20 + "." + "9" * 20) == "-" + "9" * 20 + "." + "9" * 20
    with pytest.raises(ValueProblem):
        parse_decimal("9" * 20 + "." + "9" * 21)


# --- identifiers ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["p-1", "x", "a" * 256, "ünïcödé-玩家", "with space", "a/b?c#d%20", "😀"])
def test_valid_identifiers(text: str) -> None:
    assert check_identifier(text, what="externalId") == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 257, id="257-chars"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\nb", id="newline"),
        pytest.param("a\tb", id="tab"),
        pytest.param("\x1f", id="unit-separator"),
        pytest.param("a\x7fb", id="del"),
        pytest.param("a\x85b", id="c1-control"),
        pytest.param("a\ud800b", id="lone-surrogate"),
        pytest.param("a\uffffb", id="non-character-ffff"),
        pytest.param("a\ufffeb", id="non-character-fffe"),
        pytest.param("a\ufdd0b", id="non-character-fdd0"),
        pytest.param("a\ufdefb", id="non-character-fdef"),
        pytest.param("a\U0001fffeb", id="non-character-1fffe"),
        pytest.param("\U0010ffff", id="non-character-10ffff"),
    ],
)
def test_invalid_identifiers(text: str) -> None:
    with pytest.raises(ValueProblem) as info:
        check_identifier(text, what="externalId")
    assert info.value.code == "invalid_identifier"
    assert "externalId" in info.value.message


@pytest.mark.parametrize("value", [None, 1, 1.5, True, ["p-1"], {"id": "p-1"}])
def test_non_string_identifier_is_a_type_error(value: object) -> None:
    with pytest.raises(ValueProblem) as info:
        check_identifier(value, what="eventId")
    assert info.value.code == "invalid_field_type"


# --- JSON hygiene -----------------------------------------------------------------------------


def nested(depth: int) -> Any:
    doc: Any = "leaf"
    for i in range(depth):
        doc = {"k": doc} if i % 2 else [doc]
    return doc


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        "text",
        2**63 - 1,
        -(2**63),
        1.5,
        Decimal("1e400"),
        {"a": [1, {"b": "ünï"}], "emoji": "😀"},
        nested(MAX_DEPTH),
    ],
)
def test_storable_json(value: Any) -> None:
    assert json_problem(value) is None


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        pytest.param(nested(MAX_DEPTH + 1), "nested deeper", id="too-deep"),
        pytest.param(nested(100_000), "nested deeper", id="hostile-depth"),
        pytest.param({"a": "x\x00y"}, "NUL", id="nul-in-value"),
        pytest.param({"x\x00": 1}, "NUL", id="nul-in-key"),
        pytest.param(["\ud83d"], "surrogate", id="lone-surrogate-value"),
        pytest.param({"\udc00": 1}, "surrogate", id="lone-surrogate-key"),
        pytest.param({"n": 2**63}, "64 bits", id="int-too-big"),
        pytest.param([-(2**63) - 1], "64 bits", id="int-too-small"),
    ],
)
def test_unstorable_json(value: Any, needle: str) -> None:
    problem = json_problem(value)
    assert problem is not None
    assert needle in problem


def test_json_problem_depth_is_configurable() -> None:
    assert json_problem(nested(3), max_depth=3) is None
    assert json_problem(nested(4), max_depth=3) is not None
