"""Validation of entity, event and state writes against a template.

Pure functions of (template, body) -> a normalised write or a ValidationFailed
listing every problem with its path. Single and batch writes use the same
functions, so an item is judged the same way wherever it arrives.

Rules (CONTRACT.md, "Validation rules"): unknown entity/event types and state
keys are rejected; a declared field of the wrong type is rejected; a missing
required field is accepted with a warning; undeclared fields are kept as
non-PII data. ``null`` means "no value": it removes an entity attribute and
counts as missing for a required event field.

Per-item limits, each named in its error: an event's ``data``, an entity's
``attributes`` and a state's ``value`` hold at most ``MAX_ITEM_BYTES`` (32 KiB) of
compact JSON and ``MAX_FIELDS`` (100) top-level fields; ids and nesting depth are
bounded in ``values.py``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from onehazel.domain.errors import Detail, ValidationFailed
from onehazel.domain.templates import FieldSpec, Template
from onehazel.domain.values import (
    UNSTORABLE_CHAR,
    VALID_IDENTIFIER,
    ValueProblem,
    check_identifier,
    check_storable,
    parse_decimal,
    parse_timestamp,
    safe_text,
)

MAX_FIELDS = 100
MAX_ITEM_BYTES = 32 * 1024


@dataclass(frozen=True)
class Warning:  # noqa: A001 - the contract calls them warnings
    code: str
    field: str
    message: str

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": self.message}


@dataclass
class EntityWrite:
    external_id: str
    type: str
    plain: dict[str, Any]
    """Non-PII attributes; a value of None removes the attribute."""
    pii: dict[str, Any]
    """PII attributes in plain text (encrypted before storage); None removes."""
    warnings: list[Warning] = field(default_factory=list)


@dataclass(slots=True)
class EventWrite:
    external_id: str
    type: str
    plain: dict[str, Any]
    pii: dict[str, Any]
    event_id: str | None
    timestamp: str | None
    ts: int | None
    warnings: list[Warning] = field(default_factory=list)
    plain_text: str | None = None
    """``plain`` as compact JSON text when validation already encoded it (to measure it).
    Text, not orjson's bytes: a chunk holds one per event, and each bytes object held
    keeps glibc from reusing the ~4 KB block orjson's next encoding asks for, so the
    heap grew ~20 MB per 5000 events (then trimmed and grown again, page by page)."""

    def fingerprint_source(self) -> dict[str, Any]:
        """What the client sent, normalised: equal sources mean an exact replay."""
        return {
            "externalId": self.external_id,
            "type": self.type,
            "data": {**self.plain, **self.pii} if self.pii else self.plain,  # hashed with sorted keys
            "timestamp": self.ts,
        }


@dataclass
class StateWrite:
    external_id: str
    key: str
    value: Any
    timestamp: str | None
    ts: int | None


class _Problems:
    def __init__(self) -> None:
        self.details: list[Detail] = []

    def add(self, path: str, code: str, message: str) -> None:
        path = safe_text(path)  # paths echo client keys; outcomes are stored as JSON
        self.details.append(Detail(path=path, code=code, message=f"{path}: {message}"))

    def raise_if_any(self) -> None:
        if self.details:
            raise ValidationFailed.of(self.details)


def size_problem(value: Any, *, count_fields: bool = True) -> tuple[str, str] | None:
    """(code, message) when a normalised data/attributes/value is over a per-item limit."""
    if count_fields and isinstance(value, dict) and len(value) > MAX_FIELDS:
        return "too_many_fields", f"has {len(value)} fields; the limit is {MAX_FIELDS}"
    try:
        size = len(orjson.dumps(value))
    except orjson.JSONEncodeError:  # pragma: no cover - normalised values always encode
        return "invalid_json_value", "cannot be stored as JSON"
    if size > MAX_ITEM_BYTES:
        return "too_large", f"is {size} bytes of JSON; the limit is 32 KiB ({MAX_ITEM_BYTES} bytes)"
    return None


def check_entity_size(attributes: dict[str, Any], pii: dict[str, Any]) -> None:
    """Refuse an update whose merged attributes would pass the per-item limits."""
    problem = size_problem({**attributes, **pii})
    if problem is not None:
        code, message = problem
        raise ValidationFailed.of(
            [Detail("attributes", code, f"attributes: merged with the stored ones, {message}")]
        )


def check_value(spec: FieldSpec, value: Any) -> Any:
    """Return ``value`` normalised for storage, or raise ValueProblem."""
    kind = spec.type
    if value is None:
        return None
    if kind == "string":
        if not isinstance(value, str):
            raise ValueProblem("invalid_field_type", "expected a string")
        if spec.enum is not None and value not in spec.enum:
            raise ValueProblem("invalid_field_value", f"expected one of {', '.join(spec.enum)}")
        return value
    if kind == "decimal":
        return parse_decimal(value)
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise ValueProblem("invalid_field_type", "expected a number")
        return plain_json(value)
    if kind == "integer":
        if isinstance(value, Decimal) and value.as_tuple().exponent == 0:
            value = plain_json(value)  # a long integer literal: exact if it fits 64 bits
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueProblem("invalid_field_type", "expected an integer")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValueProblem("invalid_field_type", "expected true or false")
        return value
    if kind == "timestamp":
        parse_timestamp(value)
        return value
    if kind == "object" and not isinstance(value, dict):
        raise ValueProblem("invalid_field_type", "expected an object")
    if kind == "array" and not isinstance(value, list):
        raise ValueProblem("invalid_field_type", "expected an array")
    return plain_json(value)


def plain_json(value: Any) -> Any:
    """Turn parsed JSON (with Decimal floats) into storable JSON: floats for numbers."""
    if isinstance(value, Decimal):
        if value.as_tuple().exponent == 0:  # an integer literal (long ones parse as Decimal)
            if not -(2**63) <= value < 2**63:
                raise ValueProblem(
                    "invalid_field_type", "integers must fit in 64 bits (declare a decimal field for more)"
                )
            return int(value)
        number = float(value)
        if math.isinf(number) or math.isnan(number):
            raise ValueProblem("invalid_field_type", "number is out of range")
        return number
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return value


def _fields(
    specs: dict[str, FieldSpec],
    values: Any,
    *,
    path: str,
    problems: _Problems,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``values`` into (plain, pii), each normalised, recording problems."""
    plain: dict[str, Any] = {}
    pii: dict[str, Any] = {}
    if values is None:
        return plain, pii
    if not isinstance(values, dict):
        problems.add(path, "invalid_field_type", "expected an object")
        return plain, pii
    if len(values) > MAX_FIELDS:  # refused before walking thousands of fields
        problems.add(path, "too_many_fields", f"has {len(values)} fields; the limit is {MAX_FIELDS}")
        return plain, pii
    known = len(problems.details)
    for name, value in values.items():
        spec = specs.get(name)
        try:
            check_storable(name)
            check_storable(value)
            normalised = check_value(spec, value) if spec else plain_json(value)
        except ValueProblem as exc:
            problems.add(f"{path}.{name}", exc.code, exc.message)
            continue
        (pii if spec is not None and spec.pii else plain)[name] = normalised
    if len(problems.details) == known:
        problem = size_problem({**plain, **pii} if pii else plain)
        if problem is not None:
            problems.add(path, *problem)
    return plain, pii


def _identifier(body: dict[str, Any], key: str, problems: _Problems) -> str:
    if body.get(key) is None:
        problems.add(key, "missing_field", "is required")
        return ""
    try:
        return check_identifier(body[key], what=key)
    except ValueProblem as exc:
        problems.add(key, exc.code, exc.message)
        return ""


def _timestamp(body: dict[str, Any], problems: _Problems) -> tuple[str | None, int | None]:
    raw = body.get("timestamp")
    if raw is None:
        return None, None
    try:
        return raw, parse_timestamp(raw)
    except ValueProblem as exc:
        problems.add("timestamp", exc.code, exc.message)
        return None, None


def _unknown_members(body: dict[str, Any], allowed: frozenset[str], problems: _Problems) -> None:
    for key in body:
        if key not in allowed:
            allowed_list = ", ".join(sorted(allowed))
            problems.add(key, "unknown_field", f"is not a known member (allowed: {allowed_list})")


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationFailed.of(
            [Detail(path="", code="invalid_type", message="the body must be a JSON object")]
        )
    return body


_ENTITY_MEMBERS = frozenset({"externalId", "type", "attributes"})
_EVENT_MEMBERS = frozenset({"externalId", "type", "data", "eventId", "timestamp"})
_STATE_MEMBERS = frozenset({"externalId", "key", "value", "timestamp"})


def validate_entity(template: Template, body: Any) -> EntityWrite:
    body = _require_object(body)
    problems = _Problems()
    _unknown_members(body, _ENTITY_MEMBERS, problems)
    external_id = _identifier(body, "externalId", problems)
    type_ = body.get("type")
    entity_type = template.entity_types.get(type_) if isinstance(type_, str) else None
    plain: dict[str, Any] = {}
    pii: dict[str, Any] = {}
    if not isinstance(type_, str):
        problems.add(
            "type",
            "missing_field" if type_ is None else "invalid_field_type",
            "is required and must be a string",
        )
    elif entity_type is None:
        known = ", ".join(template.entity_types)
        problems.add("type", "unknown_entity_type", f"unknown entity type (known: {known})")
    else:
        plain, pii = _fields(entity_type.fields, body.get("attributes"), path="attributes", problems=problems)
    problems.raise_if_any()
    return EntityWrite(external_id=external_id, type=str(type_), plain=plain, pii=pii)


def validate_event(template: Template, body: Any, *, clean: bool = False) -> EventWrite:
    """``clean``: the caller knows no string in ``body`` holds NUL or a lone surrogate
    (see ``json_text.strings_are_clean``), so strings need not be searched for them."""
    fast = event_fast(template, body, clean)
    return fast if fast is not None else validate_event_fully(template, body)


def validate_event_fully(template: Template, body: Any) -> EventWrite:
    """Every rule, every problem reported: what decides whenever the fast path declines."""
    body = _require_object(body)
    problems = _Problems()
    _unknown_members(body, _EVENT_MEMBERS, problems)
    external_id = _identifier(body, "externalId", problems)
    event_id = _identifier(body, "eventId", problems) if body.get("eventId") is not None else None
    timestamp, ts = _timestamp(body, problems)
    type_ = body.get("type")
    event_type = template.event_types.get(type_) if isinstance(type_, str) else None
    plain: dict[str, Any] = {}
    pii: dict[str, Any] = {}
    warnings: list[Warning] = []
    if not isinstance(type_, str):
        problems.add(
            "type",
            "missing_field" if type_ is None else "invalid_field_type",
            "is required and must be a string",
        )
    elif event_type is None:
        known = ", ".join(template.event_types)
        problems.add("type", "unknown_event_type", f"unknown event type (known: {known})")
    else:
        plain, pii = _fields(event_type.fields, body.get("data"), path="data", problems=problems)
        for name in event_type.required:
            if plain.get(name) is None and pii.get(name) is None:
                warnings.append(
                    Warning("missing_required_field", name, f"{type_} events should carry data.{name}")
                )
    problems.raise_if_any()
    return EventWrite(
        external_id=external_id,
        type=str(type_),
        plain=plain,
        pii=pii,
        event_id=event_id,
        timestamp=timestamp,
        ts=ts,
        warnings=warnings,
    )


_VALID_EXTERNAL_IDS: set[str] = set()
"""Identifiers lately found valid by the fast path (VALID_IDENTIFIER), up to a bound."""
_VALID_EXTERNAL_IDS_MAX = 4096
_SIMPLE_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")  # at most 40 characters: checked apart


def event_fast(template: Template, body: Any, clean: bool) -> EventWrite | None:
    """The common, valid event in one tight pass; None means "not simple": the full
    validator then decides (and words any error). For every body it accepts, the
    result equals the full validator's (a property test holds it to that).

    It takes only bodies whose values are strings, 64-bit integers, booleans and nulls,
    which orjson and the exact parser (``json_text.parse_json``) read alike: a body
    orjson parsed may be checked here, and only one it declines needs the exact parse
    (a float there is an exact Decimal) before ``validate_event``."""
    if type(body) is not dict or not body.keys() <= _EVENT_MEMBERS:
        return None
    external_id = body.get("externalId")
    if type(external_id) is not str:
        return None
    if external_id not in _VALID_EXTERNAL_IDS:  # a batch names the same entities again and again
        if VALID_IDENTIFIER.fullmatch(external_id) is None:
            return None
        if len(_VALID_EXTERNAL_IDS) >= _VALID_EXTERNAL_IDS_MAX:
            _VALID_EXTERNAL_IDS.clear()
        _VALID_EXTERNAL_IDS.add(external_id)
    event_id = body.get("eventId")
    if event_id is not None and (type(event_id) is not str or VALID_IDENTIFIER.fullmatch(event_id) is None):
        return None
    type_ = body.get("type")
    if type(type_) is not str:
        return None
    event_type = template.event_types.get(type_)
    if event_type is None:
        return None
    timestamp = body.get("timestamp")
    ts = None
    if timestamp is not None:
        try:
            ts = parse_timestamp(timestamp)
        except ValueProblem:
            return None
    data = body.get("data")
    plain: dict[str, Any] = {}
    pii: dict[str, Any] = {}
    if data is not None:
        if type(data) is not dict or len(data) > MAX_FIELDS:
            return None
        specs = event_type.fields
        split = event_type.has_pii  # else every field is plain: ``data`` itself, once checked
        for name, value in data.items():
            if not clean and UNSTORABLE_CHAR.search(name) is not None:
                return None
            spec = specs.get(name)
            kind = type(value)
            if kind is str:
                if not clean and UNSTORABLE_CHAR.search(value) is not None:
                    return None
                if spec is not None:
                    check = spec.type
                    if check == "decimal":
                        if len(value) > 40 or _SIMPLE_DECIMAL.fullmatch(value) is None:
                            return None
                    elif check == "string":
                        if spec.enum is not None and value not in spec.enum:
                            return None
                    elif check == "timestamp":
                        try:
                            parse_timestamp(value)
                        except ValueProblem:
                            return None
                    elif check != "any":
                        return None
            elif kind is int:
                if (spec is not None and spec.type not in _INT_AS_IS) or not _I64_MIN <= value <= _I64_MAX:
                    return None  # past 64 bits the exact parse gives a Decimal (see above)
            elif kind is bool:
                if spec is not None and spec.type not in _BOOL_AS_IS:
                    return None
            elif value is not None:
                return None  # decimals, floats, objects, arrays: the full validator
            if split:
                (pii if spec is not None and spec.pii else plain)[name] = value
        if not split:
            plain = data
    encoded = orjson.dumps({**plain, **pii} if pii else plain)
    if len(encoded) > MAX_ITEM_BYTES:
        return None
    warnings: list[Warning] = []
    for name in event_type.required:
        if plain.get(name) is None and pii.get(name) is None:
            message = f"{type_} events should carry data.{name}"
            warnings.append(Warning("missing_required_field", name, message))
    return EventWrite(
        external_id, type_, plain, pii, event_id, timestamp, ts, warnings, None if pii else encoded.decode()
    )


_INT_AS_IS = frozenset({"number", "integer", "any"})
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_BOOL_AS_IS = frozenset({"boolean", "any"})


def validate_state(template: Template, body: Any) -> StateWrite:
    body = _require_object(body)
    problems = _Problems()
    _unknown_members(body, _STATE_MEMBERS, problems)
    external_id = _identifier(body, "externalId", problems)
    key = body.get("key")
    timestamp, ts = _timestamp(body, problems)
    value: Any = None
    state_key = template.state_keys.get(key) if isinstance(key, str) else None
    if state_key is None:
        known = ", ".join(template.state_keys)
        problems.add("key", "unknown_state_key", f"unknown state key (known: {known})")
    elif "value" not in body or body["value"] is None:
        problems.add("value", "missing_field", "is required")
    else:
        try:
            check_storable(body["value"])
            value = check_value(state_key.value, body["value"])
        except ValueProblem as exc:
            problems.add("value", exc.code, exc.message)
        else:
            problem = size_problem(value, count_fields=False)
            if problem is not None:
                problems.add("value", *problem)
    problems.raise_if_any()
    return StateWrite(external_id=external_id, key=str(key), value=value, timestamp=timestamp, ts=ts)


def bind_path(body: Any, **values: str) -> Any:
    """Add the ids a URL path carries to a single-item body (they must agree if repeated)."""
    if not isinstance(body, dict):
        return body
    for key, value in values.items():
        if key in body and body[key] != value:
            raise ValidationFailed.of(
                [Detail(key, "path_mismatch", f"{key}: differs from the {key} in the URL path")]
            )
    return {**body, **values}
