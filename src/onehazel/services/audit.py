"""The audit log: who did what to a workspace's data, and when. Never PII.

Recorded actions (``action``, ``target``, ``details``):

* ``entity.delete``: an entity was soft-deleted; target its externalId, details ``purgeAfter``.
* ``entity.purge``: the retention sweep erased a deleted entity; target its externalId,
  details the counts of events and states removed.
* ``events.expire``: the retention sweep removed events older than ``eventsDays``; details
  the count and the cut-off.
* ``events.expire``: the retention sweep deleted events past ``eventsDays``; details
  ``events`` (how many), ``before`` (the cut-off) and ``eventsDays``.
* ``entity.export``: a subject-access export was produced; target its externalId.
* ``settings.update``: ``PUT /settings``; details ``changed`` (field paths whose value
  changed) and ``changes`` (``{path: {"from", "to"}}``: templates and retention periods).
* ``key.create`` / ``key.revoke``: an API key of this workspace; target the key id.

``actor`` is the id of the API key that made the request (``key_...``), ``cli`` for
the ``onehazel`` program, or ``system`` for the server itself (retention sweep).

A use case records inside its own transaction with :meth:`AuditService.record_in`,
so the action and its record commit (or roll back) together. Targets are the
operator's own identifiers (externalIds, key ids) and details are field names,
modes and settings values; callers must never pass a PII value in either.
"""

from __future__ import annotations

import re
from typing import Any

from onehazel.domain.cursors import decode_cursor, encode_cursor
from onehazel.domain.values import format_timestamp
from onehazel.domain.workspace import Workspace
from onehazel.services.core import Core
from onehazel.services.ids import new_id
from onehazel.storage.records import AuditRecord
from onehazel.storage.unit_of_work import UnitOfWork

CLI = "cli"
SYSTEM = "system"
_ACTION = re.compile(r"^[a-z]+(\.[a-z_]+)+$")


def audit_to_wire(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "at": format_timestamp(record.at),
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "details": record.details,
    }


class AuditService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def record_in(
        self,
        uow: UnitOfWork,
        *,
        workspace_id: str,
        action: str,
        target: str | None = None,
        actor: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> str:
        """Record an action inside the caller's transaction; returns the record's id.

        ``actor`` defaults to ``system``. Never pass PII in ``target`` or ``details``.
        """
        if not _ACTION.match(action):
            raise ValueError(f"audit action must look like 'entity.delete', got {action!r}")
        record = AuditRecord(
            id=new_id("aud"),
            at=self.core.clock(),
            actor=actor or SYSTEM,
            action=action,
            target=target,
            details=dict(details or {}),
            seq=self.core.seq.next(),
        )
        await uow.audit.add(workspace_id, record)
        return record.id

    async def record(
        self,
        *,
        workspace_id: str,
        action: str,
        target: str | None = None,
        actor: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> str:
        """``record_in`` in a transaction of its own."""
        async with self.core.store.begin() as uow:
            return await self.record_in(
                uow, workspace_id=workspace_id, action=action, target=target, actor=actor, details=details
            )

    async def list(self, ws: Workspace, *, limit: int, cursor: str | None) -> dict[str, Any]:
        """A page of the workspace's audit log, newest first."""
        before = None
        if cursor:
            seq, record_id = decode_cursor("audit", cursor, (int, str))
            before = (seq, record_id)
        async with self.core.store.begin() as uow:
            rows = await uow.audit.list(ws.id, before=before, limit=limit + 1)
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor("audit", [page[-1].seq, page[-1].id])
        return {"data": [audit_to_wire(r) for r in page], "nextCursor": next_cursor}
