"""Entities: upserted by (workspace, externalId); soft-deleted rows stay as suppression.

An entity's wrapped data key lives in its own table, ``entity_keys``, so that
erasure can destroy it without touching (or being undone by copies of) the data
tables. Reads join it back, so an ``EntityRecord`` always carries its key.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage.engine import is_postgres, json_list, pg_driver, upsert
from onehazel.storage.records import EntityRecord
from onehazel.storage.tables import entities, entity_keys

# Two single-table look-ups in one round trip, joined in Python. Any join of the two
# tables (plain, or LATERAL with or without an optimisation fence) could get, before
# analyze had run on freshly loaded tables, a plan comparing every pair of rows:
# ~100 ms for 1000 ids. Alone, each table is read once at worst.
_PG_KEY_STATES = """
SELECT external_id, NULL AS data_key, deleted_at IS NOT NULL AS deleted FROM entities
WHERE workspace_id = $1 AND external_id = ANY($2::text[])
UNION ALL
SELECT external_id, data_key, NULL FROM entity_keys
WHERE workspace_id = $1 AND external_id = ANY($2::text[])
"""
# How many of the ids name a live entity: one number back instead of a row per entity.
_PG_COUNT_LIVE = """
SELECT count(*) FROM entities
WHERE workspace_id = $1 AND external_id = ANY($2::text[]) AND deleted_at IS NULL
"""
SQLITE_COUNT_LIVE_SQL = (
    "SELECT count(*) FROM entities WHERE workspace_id = :ws AND deleted_at IS NULL"
    " AND external_id IN (SELECT value FROM json_each(:ids))"
)
_SQLITE_COUNT_LIVE = sa.text(SQLITE_COUNT_LIVE_SQL)

_COLUMNS = (
    entities.c.external_id,
    entities.c.type,
    entities.c.attributes,
    entities.c.pii,
    entity_keys.c.data_key,
    entities.c.version,
    entities.c.created_at,
    entities.c.updated_at,
    entities.c.deleted_at,
    entities.c.purge_after,
)
_WITH_KEYS = entities.outerjoin(
    entity_keys,
    sa.and_(
        entity_keys.c.workspace_id == entities.c.workspace_id,
        entity_keys.c.external_id == entities.c.external_id,
    ),
)


def _select() -> Any:
    return sa.select(*_COLUMNS).select_from(_WITH_KEYS)


class EntityRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    def _where(self, workspace_id: str, external_id: str) -> Any:
        return sa.and_(entities.c.workspace_id == workspace_id, entities.c.external_id == external_id)

    async def get(self, workspace_id: str, external_id: str) -> EntityRecord | None:
        query = _select().where(self._where(workspace_id, external_id))
        row = (await self.conn.execute(query)).first()
        return EntityRecord(**row._mapping) if row else None

    async def key_states(
        self, workspace_id: str, external_ids: list[str]
    ) -> dict[str, tuple[str | None, bool]]:
        """For each existing entity: (wrapped data key, deleted?). Narrow on purpose:
        batch events need only these, not the attributes."""
        if not external_ids:
            return {}
        if is_postgres(self.conn):  # one prepared statement with an array, not 1000 parameters
            driver = await pg_driver(self.conn)
            deleted: dict[str, bool] = {}
            keys: dict[str, str] = {}
            for external_id, data_key, is_deleted in await driver.fetch(
                _PG_KEY_STATES, workspace_id, external_ids
            ):
                if is_deleted is None:
                    keys[external_id] = data_key
                else:
                    deleted[external_id] = is_deleted
            return {external_id: (keys.get(external_id), gone) for external_id, gone in deleted.items()}
        query = (
            sa.select(entities.c.external_id, entity_keys.c.data_key, entities.c.deleted_at)
            .select_from(_WITH_KEYS)
            .where(entities.c.workspace_id == workspace_id, entities.c.external_id.in_(external_ids))
        )
        return {row[0]: (row[1], row[2] is not None) for row in await self.conn.execute(query)}

    async def all_live(self, workspace_id: str, external_ids: Collection[str]) -> bool:
        """Does every one of ``external_ids`` name a stored, not deleted entity? (Batch
        events without PII need only this, not the keys of :meth:`key_states`.)"""
        if not external_ids:
            return True
        ids = sorted(set(external_ids))
        if is_postgres(self.conn):
            driver = await pg_driver(self.conn)
            count = await driver.fetchval(_PG_COUNT_LIVE, workspace_id, ids)
        else:
            params = {"ws": workspace_id, "ids": json_list(ids)}
            count = (await self.conn.execute(_SQLITE_COUNT_LIVE, params)).scalar_one()
        return bool(count == len(ids))

    async def insert(self, workspace_id: str, record: EntityRecord) -> bool:
        """Insert a new entity and its key; False when the externalId already exists (a race)."""
        statement = (
            upsert(self.conn, entities)
            .values(
                workspace_id=workspace_id,
                external_id=record.external_id,
                type=record.type,
                attributes=record.attributes,
                pii=record.pii,
                version=record.version,
                created_at=record.created_at,
                updated_at=record.updated_at,
            )
            .on_conflict_do_nothing(index_elements=["workspace_id", "external_id"])
        )
        if (await self.conn.execute(statement)).rowcount != 1:
            return False
        if record.data_key is not None:
            await self._put_key(workspace_id, record.external_id, record.data_key, now=record.created_at)
        return True

    async def _put_key(self, workspace_id: str, external_id: str, data_key: str, *, now: int) -> None:
        """Store the entity's key. A key row left by an earlier entity of the same
        externalId (impossible once erasure has run, which deletes it first) is replaced."""
        statement = upsert(self.conn, entity_keys).values(
            workspace_id=workspace_id, external_id=external_id, data_key=data_key, created_at=now
        )
        excluded: Any = statement.excluded
        await self.conn.execute(
            statement.on_conflict_do_update(
                index_elements=["workspace_id", "external_id"],
                set_={"data_key": excluded.data_key, "created_at": excluded.created_at},
            )
        )

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

    async def mark_deleted(self, workspace_id: str, external_id: str, *, now: int, purge_after: int) -> bool:
        """Soft-delete a live entity; False when it was already deleted (by a concurrent request)."""
        result = await self.conn.execute(
            sa.update(entities)
            .where(self._where(workspace_id, external_id), entities.c.deleted_at.is_(None))
            .values(deleted_at=now, purge_after=purge_after)
        )
        return result.rowcount == 1

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
        query = _select().where(entities.c.workspace_id == workspace_id, entities.c.deleted_at.is_(None))
        if type_ is not None:
            query = query.where(entities.c.type == type_)
        if updated_since is not None:
            query = query.where(entities.c.updated_at >= updated_since)
        if after is not None:
            query = query.where(sa.tuple_(entities.c.updated_at, entities.c.external_id) > sa.tuple_(*after))
        query = query.order_by(entities.c.updated_at, entities.c.external_id).limit(limit)
        return [EntityRecord(**row._mapping) for row in await self.conn.execute(query)]
