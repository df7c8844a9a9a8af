"""Validation of entity, event and state writes against tpl_igaming (CONTRACT.md, "Validation rules")."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from onehazel.domain.errors import ValidationFailed
from onehazel.domain.json_text import parse_json
from onehazel.domain.templates import TPL_IGAMING
from onehazel.domain.validation import (
    EntityWrite,
    EventWrite,
    StateWrite,
    bind_path,
    validate_entity,
    validate_event,
    validate_state,
)


def make_entity(**overrides: Any) -> dict[str, Any]:
    return {"externalId": "p-1", "type": "player", "attributes": {"country": "MT"}, **overrides}


def make_event(**overrides: Any) -> dict[str, Any]:
    body = {
        "externalId": "p-1",
        "type": "transaction",
        "data": {"type": "deposit", "amount": "25.00", "currency": "EUR"},
    }
    return {**body, **overrides}


def make_state(**overrides: Any) -> dict[str, Any]:
    return {"externalId": "p-1", "key": "balance", "value": "10.00", **overrides}


def entity(body: Any) -> EntityWrite:
    return validate_entity(TPL_IGAMING, body)


def event(body: Any) -> EventWrite:
    return validate_event(TPL_IGAMING, body)


def state(body: Any) -> StateWrite:
    return validate_state(TPL_IGAMING, body)


def problems(validate: Any, body: Any) -> dict[str, str]:
    """{path: code} of every problem ``validate`` reports for ``body``."""
    with pytest.raises(ValidationFailed) as info:
        validate(TPL_IGAMING, body)
    error = info.value
    assert error.status == 422
    assert error.code == "validation_error"
    return {d.path: d.code for d in error.details}


# --- entities ---------------------------------------------------------------------------------


def test_entity_splits_pii_from_plain_attributes() -> None:
    write = entity(
        make_entity(
            attributes={
                "email": "alice@example.com",
                "first_name": "Alice",
                "phone": "+356 2100 0000",
                "address": {"city": "Valletta"},
                "country": "MT",
                "vip": True,
                "registration_date": "2026-01-02T03:04:05+01:00",
            }
        )
    )
    assert write.external_id == "p-1"
    assert write.type == "player"
    assert write.pii == {
        "email": "alice@example.com",
        "first_name": "Alice",
        "phone": "+356 2100 0000",
        "address": {"city": "Valletta"},
    }
    assert write.plain == {"country": "MT", "vip": True, "registration_date": "2026-01-02T03:04:05+01:00"}
    assert write.warnings == []


def test_entity_undeclared_attributes_are_kept_as_plain_data() -> None:
    write = entity(make_entity(attributes={"favourite_colour": "green", "email": "a@example.com"}))
    assert write.plain == {"favourite_colour": "green"}
    assert write.pii == {"email": "a@example.com"}


def test_entity_null_attribute_is_kept_as_a_removal() -> None:
    write = entity(make_entity(attributes={"email": None, "country": None}))
    assert write.pii == {"email": None}
    assert write.plain == {"country": None}


def test_entity_without_attributes_is_valid() -> None:
    write = entity({"externalId": "g-1", "type": "game"})
    assert (write.plain, write.pii) == ({}, {})


def test_unknown_entity_type() -> None:
    assert problems(validate_entity, make_entity(type="spaceship")) == {"type": "unknown_entity_type"}


def test_entity_wrong_field_types_are_reported_with_precise_paths() -> None:
    body = make_entity(
        attributes={"email": 42, "vip": "yes", "registration_date": "2026-01-02T03:04:05", "country": "MT"}
    )
    assert problems(validate_entity, body) == {
        "attributes.email": "invalid_field_type",
        "attributes.vip": "invalid_field_type",
        "attributes.registration_date": "invalid_timestamp",
    }


def test_game_decimal_and_number_fields() -> None:
    write = entity(
        {"externalId": "g-1", "type": "game", "attributes": {"min_bet": Decimal("0.10"), "rtp": 96}}
    )
    assert write.plain == {"min_bet": "0.10", "rtp": 96}
    assert problems(
        validate_entity, {"externalId": "g-1", "type": "game", "attributes": {"min_bet": "ten", "rtp": "96"}}
    ) == {"attributes.min_bet": "invalid_field_type", "attributes.rtp": "invalid_field_type"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"type": "player"}, {"externalId": "missing_field"}, id="no-external-id"),
        pytest.param(make_entity(externalId=""), {"externalId": "invalid_identifier"}, id="empty-id"),
        pytest.param(make_entity(externalId="x" * 257), {"externalId": "invalid_identifier"}, id="long-id"),
        pytest.param(make_entity(externalId="a\nb"), {"externalId": "invalid_identifier"}, id="control-id"),
        pytest.param(make_entity(externalId=7), {"externalId": "invalid_field_type"}, id="numeric-id"),
        pytest.param({"externalId": "p-1"}, {"type": "missing_field"}, id="no-type"),
        pytest.param(make_entity(type=["player"]), {"type": "invalid_field_type"}, id="list-type"),
        pytest.param(make_entity(attributes=[1]), {"attributes": "invalid_field_type"}, id="list-attributes"),
        pytest.param(make_entity(extra=1), {"extra": "unknown_field"}, id="unknown-member"),
    ],
)
def test_entity_envelope_problems(body: dict[str, Any], expected: dict[str, str]) -> None:
    assert problems(validate_entity, body) == expected


def test_entity_reports_every_problem_at_once() -> None:
    body = {"externalId": "", "type": "player", "attributes": {"email": 1, "phone": 2}, "bogus": True}
    assert problems(validate_entity, body) == {
        "bogus": "unknown_field",
        "externalId": "invalid_identifier",
        "attributes.email": "invalid_field_type",
        "attributes.phone": "invalid_field_type",
    }


@pytest.mark.parametrize("body", [None, [], "player", 1, True])
def test_entity_body_must_be_an_object(body: Any) -> None:
    assert problems(validate_entity, body) == {"": "invalid_type"}


def test_wrong_typed_pii_value_is_never_echoed() -> None:
    canary = 4155550123987
    with pytest.raises(ValidationFailed) as info:
        entity(make_entity(attributes={"phone": canary, "first_name": ["Canarina"]}))
    rendered = json.dumps(info.value.body("req_1"))
    assert str(canary) not in rendered
    assert "Canarina" not in rendered
    assert str(canary) not in str(info.value)


# --- events -----------------------------------------------------------------------------------


def test_transaction_event_normalises_money_to_exact_strings() -> None:
    write = event(make_event(data={"type": "deposit", "amount": Decimal("25.10"), "currency": "EUR"}))
    assert write.plain == {"type": "deposit", "amount": "25.10", "currency": "EUR"}
    assert write.pii == {}
    assert write.warnings == []
    assert write.event_id is None
    assert (write.timestamp, write.ts) == (None, None)


def test_event_with_id_and_timestamp() -> None:
    write = event(make_event(eventId="evt-42", timestamp="2026-11-27T12:00:00+02:00"))
    assert write.event_id == "evt-42"
    assert write.timestamp == "2026-11-27T12:00:00+02:00"
    assert write.ts == 1_795_773_600_000_000


def test_session_event_ip_address_is_pii() -> None:
    write = event(
        make_event(type="session", data={"action": "login", "ip_address": "203.0.113.7", "device": "ios"})
    )
    assert write.pii == {"ip_address": "203.0.113.7"}
    assert write.plain == {"action": "login", "device": "ios"}


@pytest.mark.parametrize(
    ("data", "missing"),
    [
        pytest.param({}, ["type", "amount", "currency"], id="empty"),
        pytest.param({"type": "deposit", "amount": "1"}, ["currency"], id="no-currency"),
        pytest.param({"type": "deposit", "amount": None, "currency": "EUR"}, ["amount"], id="null-amount"),
    ],
)
def test_missing_required_fields_are_warnings_not_errors(data: dict[str, Any], missing: list[str]) -> None:
    write = event(make_event(data=data))
    assert [(w.code, w.field) for w in write.warnings] == [("missing_required_field", m) for m in missing]
    for warning in write.warnings:
        assert warning.field in warning.message
        assert warning.to_wire()["code"] == "missing_required_field"


def test_game_activity_required_fields() -> None:
    write = event(make_event(type="game_activity", data={"game_id": "g-1"}))
    assert [w.field for w in write.warnings] == ["bet_amount"]


def test_event_without_data_has_only_warnings() -> None:
    write = event({"externalId": "p-1", "type": "transaction"})
    assert {w.field for w in write.warnings} == {"type", "amount", "currency"}
    assert write.plain == {}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(make_event(type="teleport"), {"type": "unknown_event_type"}, id="unknown-type"),
        pytest.param(
            make_event(data={"type": "deposit", "amount": "lots", "currency": "EUR"}),
            {"data.amount": "invalid_field_type"},
            id="bad-amount",
        ),
        pytest.param(
            make_event(data={"type": "deposit", "amount": True, "currency": "EUR"}),
            {"data.amount": "invalid_field_type"},
            id="bool-amount",
        ),
        pytest.param(
            make_event(data={"type": "deposit", "amount": "1e5", "currency": "EUR"}),
            {"data.amount": "invalid_field_type"},
            id="exponent-string-amount",
        ),
        pytest.param(
            make_event(data={"type": "deposit", "amount": "1", "currency": 978}),
            {"data.currency": "invalid_field_type"},
            id="numeric-currency",
        ),
        pytest.param(
            make_event(data={"type": "teleport", "amount": "1", "currency": "EUR"}),
            {"data.type": "invalid_field_value"},
            id="enum",
        ),
        pytest.param(
            make_event(type="session", data={"duration_seconds": 1.5}),
            {"data.duration_seconds": "invalid_field_type"},
            id="float-integer",
        ),
        pytest.param(
            make_event(type="session", data={"duration_seconds": True}),
            {"data.duration_seconds": "invalid_field_type"},
            id="bool-integer",
        ),
        pytest.param(
            make_event(type="block", data={"until": "tomorrow"}),
            {"data.until": "invalid_timestamp"},
            id="bad-timestamp-field",
        ),
        pytest.param(make_event(data="deposit"), {"data": "invalid_field_type"}, id="string-data"),
        pytest.param(
            make_event(timestamp="2026-11-27T10:00:00"), {"timestamp": "invalid_timestamp"}, id="no-offset"
        ),
        pytest.param(make_event(timestamp=1764237600), {"timestamp": "invalid_timestamp"}, id="epoch-number"),
        pytest.param(make_event(eventId=""), {"eventId": "invalid_identifier"}, id="empty-event-id"),
        pytest.param(make_event(eventId="e" * 257), {"eventId": "invalid_identifier"}, id="long-event-id"),
        pytest.param(make_event(eventId=12), {"eventId": "invalid_field_type"}, id="numeric-event-id"),
        pytest.param(make_event(receivedAt="x"), {"receivedAt": "unknown_field"}, id="unknown-member"),
        pytest.param({"type": "transaction"}, {"externalId": "missing_field"}, id="no-external-id"),
    ],
)
def test_event_problems(body: dict[str, Any], expected: dict[str, str]) -> None:
    assert problems(validate_event, body) == expected


def test_event_problem_messages_name_the_path() -> None:
    with pytest.raises(ValidationFailed) as info:
        event(make_event(data={"type": "deposit", "amount": "lots", "currency": "EUR"}))
    (detail,) = info.value.details
    assert detail.message.startswith("data.amount")
    assert "lots" not in detail.message


def test_wrong_typed_pii_event_field_is_not_echoed() -> None:
    with pytest.raises(ValidationFailed) as info:
        event(make_event(type="session", data={"ip_address": ["198.51.100.23"]}))
    assert {d.path: d.code for d in info.value.details} == {"data.ip_address": "invalid_field_type"}
    assert "198.51.100.23" not in json.dumps(info.value.body("req_1"))


def test_event_fingerprint_source_covers_pii_and_timestamp() -> None:
    base = event(make_event(type="session", data={"ip_address": "203.0.113.7"}))
    same = event(make_event(type="session", data={"ip_address": "203.0.113.7"}))
    other_ip = event(make_event(type="session", data={"ip_address": "203.0.113.8"}))
    other_ts = event(
        make_event(type="session", data={"ip_address": "203.0.113.7"}, timestamp="2026-01-01T00:00:00Z")
    )
    assert base.fingerprint_source() == same.fingerprint_source()
    assert base.fingerprint_source() != other_ip.fingerprint_source()
    assert base.fingerprint_source() != other_ts.fingerprint_source()


# Storable text: no NUL and no lone surrogates (the server refuses both, keys included).
safe_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10
)

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10)
)
json_safe = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(safe_text, children, max_size=3),
    max_leaves=10,
)
SUPPORT_FIELDS = set(TPL_IGAMING.event_types["support"].fields)


@settings(max_examples=150, deadline=None)
@example(undeclared={"big": -100000000000000001, "max": 2**63 - 1, "min": -(2**63), "f": 0.1})
@given(
    undeclared=st.dictionaries(
        safe_text.filter(lambda k: k != "" and k not in SUPPORT_FIELDS), json_safe, max_size=6
    )
)
def test_undeclared_event_fields_are_kept_unchanged(undeclared: dict[str, Any]) -> None:
    wire = json.dumps({"externalId": "p-1", "type": "support", "data": {"channel": "chat", **undeclared}})
    write = event(parse_json(wire.encode()))
    assert write.plain == {"channel": "chat", **json.loads(wire)["data"]}
    assert write.plain == {"channel": "chat", **undeclared}
    assert write.pii == {}
    assert write.warnings == []


# --- states -----------------------------------------------------------------------------------


def test_balance_state_is_an_exact_decimal() -> None:
    write = state(make_state(value=Decimal("10.50"), timestamp="2026-11-27T10:00:00Z"))
    assert (write.external_id, write.key, write.value) == ("p-1", "balance", "10.50")
    assert write.timestamp == "2026-11-27T10:00:00Z"
    assert write.ts is not None


def test_state_values_of_each_key() -> None:
    assert state(make_state(key="kyc_status", value="verified")).value == "verified"
    assert state(make_state(key="risk_score", value=Decimal("0.25"))).value == 0.25
    assert state(make_state(key="loyalty_tier", value="gold")).value == "gold"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(make_state(key="mood"), {"key": "unknown_state_key"}, id="unknown-key"),
        pytest.param(make_state(key=None), {"key": "unknown_state_key"}, id="no-key"),
        pytest.param(make_state(value="ten"), {"value": "invalid_field_type"}, id="bad-balance"),
        pytest.param(make_state(value=None), {"value": "missing_field"}, id="null-value"),
        pytest.param({"externalId": "p-1", "key": "balance"}, {"value": "missing_field"}, id="no-value"),
        pytest.param(
            make_state(key="kyc_status", value="maybe"), {"value": "invalid_field_value"}, id="bad-enum"
        ),
        pytest.param(
            make_state(key="risk_score", value="high"), {"value": "invalid_field_type"}, id="bad-num"
        ),
        pytest.param(
            make_state(timestamp="2026-11-27 10:00"), {"timestamp": "invalid_timestamp"}, id="bad-timestamp"
        ),
        pytest.param(make_state(applied=True), {"applied": "unknown_field"}, id="unknown-member"),
    ],
)
def test_state_problems(body: dict[str, Any], expected: dict[str, str]) -> None:
    assert problems(validate_state, body) == expected


# --- path binding -----------------------------------------------------------------------------


def test_bind_path_adds_and_checks_url_ids() -> None:
    assert bind_path({"value": 1}, externalId="p-1", key="balance") == {
        "value": 1,
        "externalId": "p-1",
        "key": "balance",
    }
    assert bind_path({"externalId": "p-1"}, externalId="p-1") == {"externalId": "p-1"}
    with pytest.raises(ValidationFailed) as info:
        bind_path({"externalId": "p-2"}, externalId="p-1")
    assert [(d.path, d.code) for d in info.value.details] == [("externalId", "path_mismatch")]
    assert bind_path([1], externalId="p-1") == [1]
