"""The workspace's audit log."""

from __future__ import annotations

from fastapi import APIRouter

from onehazel.api.deps import ServicesDep, WorkspaceDep
from onehazel.api.docs import errors
from onehazel.api.params import PageCursor, PageLimit
from onehazel.api.responses import Json
from onehazel.api.schemas import AuditPage

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=None, responses={200: {"model": AuditPage}, **errors(422)})
async def list_audit(
    services: ServicesDep,
    ws: WorkspaceDep,
    limit: PageLimit = 100,
    cursor: PageCursor = None,
) -> Json:
    """The audit log, newest first: deletions, purges, exports, settings changes, key changes. No PII."""
    return Json(await services.audit.list(ws, limit=limit, cursor=cursor))
