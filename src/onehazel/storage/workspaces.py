"""Operators, workspaces, API keys and per-workspace settings."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage.records import DEFAULT_SETTINGS, KeyRecord, SettingsRecord
from onehazel.storage.tables import api_keys, operators, settings, workspaces

_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.workspace_id,
    workspaces.c.operator_id,
    workspaces.c.mode,
    api_keys.c.hint,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
)


class WorkspaceRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add_operator(self, operator_id: str, name: str, *, now: int) -> None:
        await self.conn.execute(operators.insert().values(id=operator_id, name=name, created_at=now))

    async def add_workspace(self, workspace_id: str, operator_id: str, *, mode: str, now: int) -> None:
        await self.conn.execute(
            workspaces.insert().values(id=workspace_id, operator_id=operator_id, mode=mode, created_at=now)
        )

    async def count_operators(self) -> int:
        result = await self.conn.execute(sa.select(sa.func.count()).select_from(operators))
        return int(result.scalar_one())

    async def workspace_of(self, operator_id: str, mode: str) -> str | None:
        result = await self.conn.execute(
            sa.select(workspaces.c.id).where(
                workspaces.c.operator_id == operator_id, workspaces.c.mode == mode
            )
        )
        return result.scalar_one_or_none()

    async def get_workspace(self, workspace_id: str) -> tuple[str, str] | None:
        """(operator id, mode) of a workspace, or None."""
        query = sa.select(workspaces.c.operator_id, workspaces.c.mode).where(workspaces.c.id == workspace_id)
        row = (await self.conn.execute(query)).first()
        return (row[0], row[1]) if row else None

    async def add_key(self, key_id: str, workspace_id: str, *, key_hash: str, hint: str, now: int) -> None:
        await self.conn.execute(
            api_keys.insert().values(
                id=key_id, workspace_id=workspace_id, key_hash=key_hash, hint=hint, created_at=now
            )
        )

    async def find_key(self, key_hash: str) -> KeyRecord | None:
        query = (
            sa.select(*_KEY_COLUMNS)
            .join(workspaces, workspaces.c.id == api_keys.c.workspace_id)
            .where(api_keys.c.key_hash == key_hash)
        )
        row = (await self.conn.execute(query)).first()
        return KeyRecord(**row._mapping) if row else None

    async def get_key(self, key_id: str) -> KeyRecord | None:
        query = (
            sa.select(*_KEY_COLUMNS)
            .join(workspaces, workspaces.c.id == api_keys.c.workspace_id)
            .where(api_keys.c.id == key_id)
        )
        row = (await self.conn.execute(query)).first()
        return KeyRecord(**row._mapping) if row else None

    async def list_keys(self, operator_id: str | None = None) -> list[KeyRecord]:
        query = (
            sa.select(*_KEY_COLUMNS)
            .join(workspaces, workspaces.c.id == api_keys.c.workspace_id)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        if operator_id is not None:
            query = query.where(workspaces.c.operator_id == operator_id)
        return [KeyRecord(**row._mapping) for row in await self.conn.execute(query)]

    async def revoke_key(self, key_id: str, *, now: int) -> bool:
        """Revoke a key; False when no such key exists. Revoking twice keeps the first time."""
        result = await self.conn.execute(
            sa.update(api_keys)
            .where(api_keys.c.id == key_id)
            .values(revoked_at=sa.func.coalesce(api_keys.c.revoked_at, now))
        )
        return result.rowcount == 1

    async def get_settings(self, workspace_id: str) -> SettingsRecord:
        query = sa.select(
            settings.c.template_id,
            settings.c.events_days,
            settings.c.deleted_entities_days,
            settings.c.updated_at,
        ).where(settings.c.workspace_id == workspace_id)
        row = (await self.conn.execute(query)).first()
        return SettingsRecord(**row._mapping) if row else DEFAULT_SETTINGS

    async def save_settings(self, workspace_id: str, record: SettingsRecord) -> None:
        values = {
            "template_id": record.template_id,
            "events_days": record.events_days,
            "deleted_entities_days": record.deleted_entities_days,
            "updated_at": record.updated_at,
        }
        updated = await self.conn.execute(
            sa.update(settings).where(settings.c.workspace_id == workspace_id).values(**values)
        )
        if updated.rowcount == 0:
            await self.conn.execute(settings.insert().values(workspace_id=workspace_id, **values))
