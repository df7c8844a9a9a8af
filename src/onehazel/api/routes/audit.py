"""The workspace's audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from onehazel.api.deps import ServicesDep, WorkspaceDep
from onehazel.api.docs import errors
from onehazel.api.responses import Json
from onehazel.api.schemas import AuditPage

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=None, responses={200: {"model": AuditPage}, **errors(422)})
async def list_audit(
    services: ServicesDep,
    ws: WorkspaceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=2048, description="nextCursor of the previous page")
    ] = None,
) -> Json:
    """The audit log, newest first: deletions, purges, exports, settings changes, key changes. No PII."""
    return Json(await services.audit.list(ws, limit=limit, cursor=cursor))
