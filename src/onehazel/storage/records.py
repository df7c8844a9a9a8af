"""Rows as plain dataclasses: what repositories return and take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KeyRecord:
    id: str
    workspace_id: str
    operator_id: str
    mode: str
    hint: str
    created_at: int
    revoked_at: int | None


@dataclass(frozen=True)
class SettingsRecord:
    template_id: str | None
    events_days: int | None
    deleted_entities_days: int
    updated_at: int | None


DEFAULT_SETTINGS = SettingsRecord(
    template_id=None, events_days=None, deleted_entities_days=30, updated_at=None
)


@dataclass(frozen=True)
class EntityRecord:
    external_id: str
    type: str
    attributes: dict[str, Any]
    pii: dict[str, str]
    data_key: str | None
    version: int
    created_at: int
    updated_at: int
    deleted_at: int | None = None
    purge_after: int | None = None


@dataclass(frozen=True)
class EventRecord:
    event_id: str
    external_id: str
    type: str
    data: dict[str, Any]
    pii: dict[str, str] | None
    fingerprint: str
    timestamp: str | None
    ts: int
    received_at: int
    seq: int


@dataclass(frozen=True)
class StateRecord:
    key: str
    value: Any
    timestamp: str | None
    ts: int
    updated_at: int


@dataclass(frozen=True)
class AuditRecord:
    id: str
    at: int
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]
    seq: int
