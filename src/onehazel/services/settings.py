"""Workspace settings: the chosen template and retention periods."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from onehazel.domain.errors import Detail, TemplateNotFound, ValidationFailed
from onehazel.domain.templates import BUILT_IN, Template, get_template
from onehazel.domain.values import format_timestamp
from onehazel.domain.workspace import Workspace
from onehazel.services.audit import AuditService
from onehazel.services.core import Core
from onehazel.storage.records import SettingsRecord

MAX_EVENTS_DAYS = 36_500
MAX_DELETED_DAYS = 3_650


def settings_to_wire(record: SettingsRecord) -> dict[str, Any]:
    return {
        "templateId": record.template_id,
        "retention": {
            "eventsDays": record.events_days,
            "deletedEntitiesDays": record.deleted_entities_days,
        },
        "updatedAt": format_timestamp(record.updated_at) if record.updated_at else None,
    }


class SettingsService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.audit = AuditService(core)

    def templates(self) -> list[Template]:
        return list(BUILT_IN.values())

    def template(self, template_id: str) -> Template:
        template = get_template(template_id)
        if template is None:
            raise TemplateNotFound(f"no template {template_id!r}; GET /templates lists them")
        return template

    async def get(self, ws: Workspace) -> dict[str, Any]:
        async with self.core.store.begin() as uow:
            return settings_to_wire(await uow.workspaces.get_settings(ws.id))

    async def update(self, ws: Workspace, body: Any) -> dict[str, Any]:
        changes = parse_settings_update(body)
        async with self.core.store.begin() as uow:
            current = await uow.workspaces.get_settings(ws.id)
            updated = replace(current, **changes, updated_at=self.core.clock())
            await uow.workspaces.save_settings(ws.id, updated)
            await self.audit.record_in(
                uow,
                workspace_id=ws.id,
                action="settings.update",
                actor=ws.key_id,
                details=settings_changes(current, updated),
            )
        self.core.settings_cache.drop(ws.id)
        return settings_to_wire(updated)


def settings_changes(before: SettingsRecord, after: SettingsRecord) -> dict[str, Any]:
    """The audit details of a settings write: which fields changed, from what to what."""
    old, new = settings_to_wire(before), settings_to_wire(after)
    pairs = [("templateId", old["templateId"], new["templateId"])] + [
        (f"retention.{name}", old["retention"][name], new["retention"][name]) for name in new["retention"]
    ]
    changes = {path: {"from": a, "to": b} for path, a, b in pairs if a != b}
    return {"changed": list(changes), "changes": changes}


def parse_settings_update(body: Any) -> dict[str, Any]:
    """Validate a partial settings document; return the record fields it changes."""
    problems: list[Detail] = []
    changes: dict[str, Any] = {}
    if not isinstance(body, dict):
        raise ValidationFailed.of([Detail("", "invalid_type", "the body must be a JSON object")])
    for key in body:
        if key not in ("templateId", "retention", "updatedAt"):
            problems.append(Detail(key, "unknown_field", f"{key}: is not a settings field"))
    if "templateId" in body:
        template_id = body["templateId"]
        if template_id is not None and not isinstance(template_id, str):
            problems.append(
                Detail("templateId", "invalid_field_type", "templateId: expected a string or null")
            )
        elif template_id is not None and get_template(template_id) is None:
            problems.append(
                Detail(
                    "templateId",
                    "unknown_template",
                    f"templateId: no template {template_id[:64]!r}; known: {', '.join(BUILT_IN)}",
                )
            )
        else:
            changes["template_id"] = template_id
    retention = body.get("retention")
    if "retention" in body and not isinstance(retention, dict):
        problems.append(Detail("retention", "invalid_field_type", "retention: expected an object"))
    elif isinstance(retention, dict):
        for key in retention:
            if key not in ("eventsDays", "deletedEntitiesDays"):
                problems.append(
                    Detail(f"retention.{key}", "unknown_field", f"retention.{key}: is not a retention field")
                )
        if "eventsDays" in retention:
            value = retention["eventsDays"]
            if value is not None and not _int_in(value, 1, MAX_EVENTS_DAYS):
                problems.append(
                    Detail(
                        "retention.eventsDays",
                        "invalid_field_value",
                        "retention.eventsDays: expected null (keep forever) "
                        f"or a whole number 1-{MAX_EVENTS_DAYS}",
                    )
                )
            else:
                changes["events_days"] = value
        if "deletedEntitiesDays" in retention:
            value = retention["deletedEntitiesDays"]
            if not _int_in(value, 0, MAX_DELETED_DAYS):
                problems.append(
                    Detail(
                        "retention.deletedEntitiesDays",
                        "invalid_field_value",
                        f"retention.deletedEntitiesDays: expected a whole number 0-{MAX_DELETED_DAYS}",
                    )
                )
            else:
                changes["deleted_entities_days"] = value
    if problems:
        raise ValidationFailed.of(problems)
    return changes


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
