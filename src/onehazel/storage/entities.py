"""Entities: upserted by (workspace, externalId); soft-deleted rows stay as suppression."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage.engine import upsert
from onehazel.storage.records import EntityRecord
from onehazel.storage.tables import entities

_COLUMNS = (
    entities.c.external_id,
    entities.c.type,
    entities.c.attributes,
    entities.c.pii,
    entities.c.data_key,
    entities.c.version,
    entities.c.created_at,
    entities.c.updated_at,
    entities.c.deleted_at,
    entities.c.purge_after,
)


class EntityRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    def _where(self, workspace_id: str, external_id: str) -> Any:
        return sa.and_(entities.c.workspace_id == workspace_id, entities.c.external_id == external_id)

    async def get(self, workspace_id: str, external_id: str) -> EntityRecord | None:
        query = sa.select(*_COLUMNS).where(self._where(workspace_id, external_id))
        row = (await self.conn.execute(query)).first()
        return EntityRecord(**row._mapping) if row else None

    async def get_many(self, workspace_id: str, external_ids: list[str]) -> dict[str, EntityRecord]:
        if not external_ids:
            return {}
        query = sa.select(*_COLUMNS).where(
            entities.c.workspace_id == workspace_id, entities.c.external_id.in_(external_ids)
        )
        return {row.external_id: EntityRecord(**row._mapping) for row in await self.conn.execute(query)}

    async def key_states(
        self, workspace_id: str, external_ids: list[str]
    ) -> dict[str, tuple[str | None, bool]]:
        """For each existing entity: (wrapped data key, deleted?). Narrow on purpose:
        batch events need only these, not the attributes."""
        if not external_ids:
            return {}
        query = sa.select(entities.c.external_id, entities.c.data_key, entities.c.deleted_at).where(
            entities.c.workspace_id == workspace_id, entities.c.external_id.in_(external_ids)
        )
        return {row[0]: (row[1], row[2] is not None) for row in await self.conn.execute(query)}

    async def insert(self, workspace_id: str, record: EntityRecord) -> bool:
        """Insert a new entity; False when the externalId already exists (a race)."""
        statement = (
            upsert(self.conn, entities)
            .values(
                workspace_id=workspace_id,
                external_id=record.external_id,
                type=record.type,
                attributes=record.attributes,
                pii=record.pii,
                data_key=record.data_key,
                version=record.version,
                created_at=record.created_at,
                updated_at=record.updated_at,
            )
            .on_conflict_do_nothing(index_elements=["workspace_id", "external_id"])
        )
        return (await self.conn.execute(statement)).rowcount == 1

    async def update(self, workspace_id: str, record: EntityRecord, *, expected_version: int) -> bool:
        """Compare-and-set on ``version``; False when someone else updated first."""
        statement = (
            sa.update(entities)
            .where(
                self._where(workspace_id, record.external_id),
                entities.c.version == expected_version,
                entities.c.deleted_at.is_(None),
            )
            .values(
                attributes=record.attributes,
                pii=record.pii,
                version=record.version,
                updated_at=record.updated_at,
            )
        )
        return (await self.conn.execute(statement)).rowcount == 1

    async def mark_deleted(self, workspace_id: str, external_id: str, *, now: int, purge_after: int) -> None:
        await self.conn.execute(
            sa.update(entities)
            .where(self._where(workspace_id, external_id), entities.c.deleted_at.is_(None))
            .values(deleted_at=now, purge_after=purge_after)
        )

    async def list(
        self,
        workspace_id: str,
        *,
        type_: str | None,
        updated_since: int | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[EntityRecord]:
        """Live entities ordered by (updatedAt, externalId), strictly after ``after``."""
        query = sa.select(*_COLUMNS).where(
            entities.c.workspace_id == workspace_id, entities.c.deleted_at.is_(None)
        )
        if type_ is not None:
            query = query.where(entities.c.type == type_)
        if updated_since is not None:
            query = query.where(entities.c.updated_at >= updated_since)
        if after is not None:
            query = query.where(sa.tuple_(entities.c.updated_at, entities.c.external_id) > sa.tuple_(*after))
        query = query.order_by(entities.c.updated_at, entities.c.external_id).limit(limit)
        return [EntityRecord(**row._mapping) for row in await self.conn.execute(query)]
