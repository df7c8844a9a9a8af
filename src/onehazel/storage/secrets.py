"""Workspace secrets: random keys of a workspace, stored only wrapped by its workspace key."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage.engine import upsert
from onehazel.storage.tables import workspace_secrets


class SecretRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, workspace_id: str, purpose: str) -> dict[int, str]:
        """Every version of the workspace's ``purpose`` secret: version -> wrapped secret."""
        query = sa.select(workspace_secrets.c.version, workspace_secrets.c.wrapped).where(
            workspace_secrets.c.workspace_id == workspace_id, workspace_secrets.c.purpose == purpose
        )
        return {int(row[0]): str(row[1]) for row in await self.conn.execute(query)}

    async def add_if_missing(
        self, workspace_id: str, purpose: str, version: int, wrapped: str, *, now: int
    ) -> None:
        """Store a new secret unless a concurrent writer stored this version first (theirs wins)."""
        statement = (
            upsert(self.conn, workspace_secrets)
            .values(
                workspace_id=workspace_id, purpose=purpose, version=version, wrapped=wrapped, created_at=now
            )
            .on_conflict_do_nothing(index_elements=["workspace_id", "purpose", "version"])
        )
        await self.conn.execute(statement)
