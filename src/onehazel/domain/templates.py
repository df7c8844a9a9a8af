"""Data templates: which entity types, event types and state keys are valid.

A template is immutable data. ``tpl_igaming`` is built in and is the only one
the server ships; workspaces pick it with ``PUT /settings``. Field specs say the
JSON type a value must have, whether it is PII (encrypted at rest) and, for a
few, the allowed values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

FIELD_TYPES = ("string", "number", "decimal", "integer", "boolean", "timestamp", "object", "array", "any")


@dataclass(frozen=True)
class FieldSpec:
    type: str
    pii: bool = False
    enum: tuple[str, ...] | None = None
    description: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"type": self.type, "pii": self.pii}
        if self.enum is not None:
            wire["enum"] = list(self.enum)
        if self.description:
            wire["description"] = self.description
        return wire


@dataclass(frozen=True)
class EntityType:
    fields: dict[str, FieldSpec]

    @property
    def pii_fields(self) -> frozenset[str]:
        return frozenset(name for name, spec in self.fields.items() if spec.pii)


@dataclass(frozen=True)
class EventType:
    description: str
    fields: dict[str, FieldSpec]
    required: tuple[str, ...] = ()

    @property
    def pii_fields(self) -> frozenset[str]:
        return frozenset(name for name, spec in self.fields.items() if spec.pii)

    @functools.cached_property
    def has_pii(self) -> bool:
        """Does any field hold PII (validation splits such an event's data in two)?"""
        return any(spec.pii for spec in self.fields.values())


@dataclass(frozen=True)
class StateKey:
    description: str
    value: FieldSpec


@dataclass(frozen=True)
class Template:
    id: str
    name: str
    version: int
    entity_types: dict[str, EntityType]
    event_types: dict[str, EventType]
    state_keys: dict[str, StateKey]
    description: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "entityTypes": {
                name: {"fields": {f: s.to_wire() for f, s in et.fields.items()}}
                for name, et in self.entity_types.items()
            },
            "eventTypes": {
                name: {
                    "description": et.description,
                    "requiredFields": list(et.required),
                    "fields": {f: s.to_wire() for f, s in et.fields.items()},
                }
                for name, et in self.event_types.items()
            },
            "stateKeys": {
                name: {"description": sk.description, "value": sk.value.to_wire()}
                for name, sk in self.state_keys.items()
            },
        }


def _f(type_: str, *, pii: bool = False, enum: tuple[str, ...] | None = None) -> FieldSpec:
    return FieldSpec(type=type_, pii=pii, enum=enum)


_PLAYER = EntityType(
    fields={
        "email": _f("string", pii=True),
        "first_name": _f("string", pii=True),
        "last_name": _f("string", pii=True),
        "date_of_birth": _f("string", pii=True),
        "phone": _f("string", pii=True),
        "address": _f("any", pii=True),
        "username": _f("string", pii=True),
        "country": _f("string"),
        "currency": _f("string"),
        "language": _f("string"),
        "registration_date": _f("timestamp"),
        "status": _f("string"),
        "vip": _f("boolean"),
        "segment": _f("string"),
        "affiliate_id": _f("string"),
    }
)
_OPERATOR = EntityType(
    fields={
        "name": _f("string"),
        "license": _f("string"),
        "jurisdiction": _f("string"),
        "website": _f("string"),
    }
)
_GAME = EntityType(
    fields={
        "name": _f("string"),
        "provider": _f("string"),
        "category": _f("string"),
        "rtp": _f("number"),
        "volatility": _f("string"),
        "min_bet": _f("decimal"),
        "max_bet": _f("decimal"),
    }
)

_EVENTS = {
    "transaction": EventType(
        description="A money movement: deposit, withdrawal, bet, win, bonus or adjustment.",
        required=("type", "amount", "currency"),
        fields={
            "type": _f(
                "string",
                enum=("deposit", "withdrawal", "bet", "win", "bonus", "refund", "adjustment", "chargeback"),
            ),
            "amount": _f("decimal"),
            "currency": _f("string"),
            "status": _f("string"),
            "method": _f("string"),
            "transaction_id": _f("string"),
            "balance_after": _f("decimal"),
        },
    ),
    "game_activity": EventType(
        description="A round played: the bet placed and what it won.",
        required=("game_id", "bet_amount"),
        fields={
            "game_id": _f("string"),
            "bet_amount": _f("decimal"),
            "win_amount": _f("decimal"),
            "currency": _f("string"),
            "round_id": _f("string"),
            "provider": _f("string"),
        },
    ),
    "session": EventType(
        description="A login, logout or session heartbeat.",
        fields={
            "action": _f("string"),
            "ip_address": _f("string", pii=True),
            "user_agent": _f("string", pii=True),
            "device": _f("string"),
            "country": _f("string"),
            "duration_seconds": _f("integer"),
        },
    ),
    "bonus": EventType(
        description="A bonus granted, wagered, converted or forfeited.",
        fields={
            "bonus_id": _f("string"),
            "action": _f("string"),
            "amount": _f("decimal"),
            "currency": _f("string"),
        },
    ),
    "block": EventType(
        description="A block or self-exclusion placed on or lifted from the player.",
        fields={
            "reason": _f("string"),
            "action": _f("string"),
            "until": _f("timestamp"),
        },
    ),
    "support": EventType(
        description="A support contact.",
        fields={
            "channel": _f("string"),
            "topic": _f("string"),
            "ticket_id": _f("string"),
        },
    ),
    "affiliate": EventType(
        description="An affiliate attribution or change.",
        fields={
            "affiliate_id": _f("string"),
            "campaign": _f("string"),
            "action": _f("string"),
        },
    ),
}

_STATES = {
    "balance": StateKey(
        description="The player's current balance in their currency, an exact decimal.",
        value=_f("decimal"),
    ),
    "kyc_status": StateKey(
        description="Know-your-customer verification status.",
        value=_f("string", enum=("not_started", "pending", "verified", "rejected", "expired")),
    ),
    "risk_score": StateKey(description="Risk score assigned by the operator.", value=_f("number")),
    "loyalty_tier": StateKey(description="Loyalty programme tier.", value=_f("string")),
}

TPL_IGAMING = Template(
    id="tpl_igaming",
    name="iGaming",
    version=1,
    description="Players, games and operators with money movements, play and sessions.",
    entity_types={"player": _PLAYER, "operator": _OPERATOR, "game": _GAME},
    event_types=_EVENTS,
    state_keys=_STATES,
)

BUILT_IN: dict[str, Template] = {TPL_IGAMING.id: TPL_IGAMING}


def get_template(template_id: str) -> Template | None:
    return BUILT_IN.get(template_id)
