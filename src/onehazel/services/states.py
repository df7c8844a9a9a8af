"""States: latest value per key, last writer wins by the write's timestamp."""

from __future__ import annotations

from typing import Any

from onehazel.domain.errors import Detail, StateNotFound, ValidationFailed
from onehazel.domain.validation import StateWrite, validate_state
from onehazel.domain.values import format_timestamp
from onehazel.domain.workspace import Workspace
from onehazel.services.core import Core
from onehazel.services.entities import live_entity
from onehazel.storage.records import StateRecord
from onehazel.storage.unit_of_work import UnitOfWork


def state_to_wire(record: StateRecord) -> dict[str, Any]:
    return {
        "value": record.value,
        "timestamp": record.timestamp or format_timestamp(record.ts),
        "updatedAt": format_timestamp(record.updated_at),
    }


class StateService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def put(self, ws: Workspace, body: Any) -> dict[str, Any]:
        write = validate_state(await self.core.template_of(ws), body)
        async with self.core.store.begin() as uow:
            return await self.put_in(uow, ws, write)

    async def put_in(self, uow: UnitOfWork, ws: Workspace, write: StateWrite) -> dict[str, Any]:
        """Write a state inside the caller's transaction; ``applied`` says if it won."""
        now = self.core.clock()
        record = StateRecord(
            key=write.key,
            value=write.value,
            timestamp=write.timestamp,
            ts=write.ts if write.ts is not None else now,
            updated_at=now,
        )
        await live_entity(uow, ws, write.external_id)
        applied = await uow.states.put(ws.id, write.external_id, record)
        if not applied:
            stored = await uow.states.get(ws.id, write.external_id, write.key)
            assert stored is not None
            record = stored
        return {"key": record.key, **state_to_wire(record), "applied": applied}

    async def get(self, ws: Workspace, external_id: str, key: str) -> dict[str, Any]:
        settings = await self.core.settings_of(ws)
        template = await self.core.template_of(ws) if settings.template_id else None
        if template is not None and key not in template.state_keys:
            known = ", ".join(template.state_keys)
            raise ValidationFailed.of(
                [Detail("key", "unknown_state_key", f"key: unknown state key (known: {known})")]
            )
        async with self.core.store.begin() as uow:
            await live_entity(uow, ws, external_id)
            record = await uow.states.get(ws.id, external_id, key)
        if record is None:
            raise StateNotFound(f"state {key!r} was never set for this entity")
        return {"key": key, **state_to_wire(record)}

    async def list(self, ws: Workspace, external_id: str) -> dict[str, Any]:
        async with self.core.store.begin() as uow:
            await live_entity(uow, ws, external_id)
            records = await uow.states.list(ws.id, external_id)
        return {"externalId": external_id, "states": {r.key: state_to_wire(r) for r in records}}
