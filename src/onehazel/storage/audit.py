"""The audit log: append-only, per workspace, read newest first.

Rows are only ever inserted (by the use case, inside its own transaction, so an
action and its record commit together) and read; nothing updates them.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage.records import AuditRecord
from onehazel.storage.tables import audit_log

_COLUMNS = (
    audit_log.c.id,
    audit_log.c.at,
    audit_log.c.actor,
    audit_log.c.action,
    audit_log.c.target,
    audit_log.c.details,
    audit_log.c.seq,
)


class AuditRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, workspace_id: str, record: AuditRecord) -> None:
        await self.conn.execute(
            audit_log.insert().values(
                workspace_id=workspace_id,
                id=record.id,
                at=record.at,
                actor=record.actor,
                action=record.action,
                target=record.target,
                details=record.details,
                seq=record.seq,
            )
        )

    async def list(
        self, workspace_id: str, *, before: tuple[int, str] | None, limit: int
    ) -> list[AuditRecord]:
        """The workspace's records, newest first, strictly before the (seq, id) ``before``."""
        key = sa.tuple_(audit_log.c.seq, audit_log.c.id)
        query = sa.select(*_COLUMNS).where(audit_log.c.workspace_id == workspace_id)
        if before is not None:
            query = query.where(key < sa.tuple_(*before))
        query = query.order_by(audit_log.c.seq.desc(), audit_log.c.id.desc()).limit(limit)
        return [AuditRecord(**row._mapping) for row in await self.conn.execute(query)]
