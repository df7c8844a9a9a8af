"""Entities: upsert by externalId, single read (PII decrypted), bulk listing, soft delete."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from onehazel.crypto.fields import FieldCipher, new_data_key, wrap_data_key
from onehazel.domain.cursors import decode_cursor, encode_cursor
from onehazel.domain.errors import (
    Conflict,
    EntityDeleted,
    EntityNotFound,
    EntityTypeConflict,
)
from onehazel.domain.validation import EntityWrite, check_entity_size, validate_entity
from onehazel.domain.values import format_timestamp
from onehazel.domain.workspace import Workspace
from onehazel.services.audit import AuditService
from onehazel.services.core import Core
from onehazel.storage.records import EntityRecord
from onehazel.storage.unit_of_work import UnitOfWork

DAY_MICROS = 86_400 * 1_000_000
_ATTEMPTS = 5


def entity_to_wire(record: EntityRecord, pii: dict[str, Any]) -> dict[str, Any]:
    return {
        "externalId": record.external_id,
        "type": record.type,
        "attributes": {**record.attributes, **pii},
        "createdAt": format_timestamp(record.created_at),
        "updatedAt": format_timestamp(record.updated_at),
        "version": record.version,
    }


def _merge(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


async def live_entity(uow: UnitOfWork, ws: Workspace, external_id: str) -> EntityRecord:
    """The entity, or 404 when it never existed and 410 when it was deleted."""
    record = await uow.entities.get(ws.id, external_id)
    if record is None:
        raise EntityNotFound("no entity with this externalId in this workspace")
    if record.deleted_at is not None:
        raise EntityDeleted("this entity was deleted; its externalId stays suppressed")
    return record


class EntityService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.audit = AuditService(core)

    async def upsert(self, ws: Workspace, body: Any) -> tuple[dict[str, Any], bool]:
        """Create or merge-update; returns (entity, created)."""
        write = validate_entity(await self.core.template_of(ws), body)
        async with self.core.store.begin() as uow:
            return await self.upsert_in(uow, ws, write)

    async def upsert_in(
        self, uow: UnitOfWork, ws: Workspace, write: EntityWrite
    ) -> tuple[dict[str, Any], bool]:
        """Upsert inside the caller's transaction (single writes, batch chunks, dry runs).

        A lost race (another writer created or updated the entity first) is
        retried on the fresh row; under READ COMMITTED the re-read sees it.
        """
        for _ in range(_ATTEMPTS):
            current = await uow.entities.get(ws.id, write.external_id)
            if current is None:
                created = await self._create(uow, ws, write)
                if created is not None:
                    return created, True
                continue  # another request created it first: merge into it
            updated = await self._update(uow, ws, write, current)
            if updated is not None:
                return updated, False
        raise Conflict("the entity is being updated concurrently; retry the request")

    async def _create(self, uow: UnitOfWork, ws: Workspace, write: EntityWrite) -> dict[str, Any] | None:
        dek = new_data_key()
        cipher = FieldCipher(dek, workspace_id=ws.id, external_id=write.external_id)
        pii = _merge({}, write.pii)
        now = self.core.clock()
        record = EntityRecord(
            external_id=write.external_id,
            type=write.type,
            attributes=_merge({}, write.plain),
            pii=cipher.encrypt_fields("attributes", pii),
            data_key=wrap_data_key(self.core.keys, ws.id, write.external_id, dek),
            version=1,
            created_at=now,
            updated_at=now,
        )
        if not await uow.entities.insert(ws.id, record):
            return None
        return entity_to_wire(record, pii)

    async def _update(
        self, uow: UnitOfWork, ws: Workspace, write: EntityWrite, current: EntityRecord
    ) -> dict[str, Any] | None:
        if current.deleted_at is not None:
            raise EntityDeleted("this entity was deleted; its externalId stays suppressed")
        if current.type != write.type:
            raise EntityTypeConflict(f"externalId already exists as a {current.type!r}, not a {write.type!r}")
        cipher = self.core.cipher(ws, current.external_id, current.data_key)
        old_pii = cipher.decrypt_fields("attributes", current.pii)
        pii = _merge(old_pii, write.pii)
        attributes = _merge(current.attributes, write.plain)
        if attributes == current.attributes and pii == old_pii:
            return entity_to_wire(current, old_pii)  # nothing changed: no new version
        check_entity_size(attributes, pii)  # the per-item limits hold for the merged entity too
        tokens = {
            name: current.pii[name]
            if old_pii.get(name) == value
            else cipher.encrypt(f"attributes.{name}", value)
            for name, value in pii.items()
        }
        record = replace(
            current,
            attributes=attributes,
            pii=tokens,
            version=current.version + 1,
            updated_at=max(self.core.clock(), current.updated_at + 1),
        )
        if not await uow.entities.update(ws.id, record, expected_version=current.version):
            return None
        return entity_to_wire(record, pii)

    async def get(self, ws: Workspace, external_id: str) -> dict[str, Any]:
        async with self.core.store.begin() as uow:
            record = await live_entity(uow, ws, external_id)
        cipher = self.core.cipher(ws, external_id, record.data_key)
        return entity_to_wire(record, cipher.decrypt_fields("attributes", record.pii))

    async def list(
        self,
        ws: Workspace,
        *,
        type_: str | None,
        updated_since: int | None,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        """A page of live entities, oldest update first; PII stays encrypted."""
        after = None
        if cursor:
            updated_at, external_id = decode_cursor("entities", cursor, (int, str))
            after = (updated_at, external_id)
        async with self.core.store.begin() as uow:
            rows = await uow.entities.list(
                ws.id, type_=type_, updated_since=updated_since, after=after, limit=limit + 1
            )
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]
            next_cursor = encode_cursor("entities", [last.updated_at, last.external_id])
        data = [
            entity_to_wire(r, {name: {"$encrypted": token} for name, token in r.pii.items()}) for r in page
        ]
        return {"data": data, "nextCursor": next_cursor}

    async def delete(self, ws: Workspace, external_id: str) -> dict[str, Any]:
        """Soft delete; idempotent. The externalId stays suppressed until purged."""
        settings = await self.core.settings_of(ws)
        async with self.core.store.begin() as uow:
            record = await uow.entities.get(ws.id, external_id)
            if record is None:
                raise EntityNotFound("no entity with this externalId in this workspace")
            if record.deleted_at is None:
                now = self.core.clock()
                purge_after = now + settings.deleted_entities_days * DAY_MICROS
                if await uow.entities.mark_deleted(ws.id, external_id, now=now, purge_after=purge_after):
                    record = replace(record, deleted_at=now, purge_after=purge_after)
                    await self.audit.record_in(
                        uow,
                        workspace_id=ws.id,
                        action="entity.delete",
                        target=external_id,
                        actor=ws.key_id,
                        details={"purgeAfter": format_timestamp(purge_after)},
                    )
                else:  # a concurrent request deleted it first: answer with its times
                    record = await uow.entities.get(ws.id, external_id) or record
        assert record.deleted_at is not None
        assert record.purge_after is not None
        return {
            "externalId": external_id,
            "deletedAt": format_timestamp(record.deleted_at),
            "purgeAfter": format_timestamp(record.purge_after),
        }
