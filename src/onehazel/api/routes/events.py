"""Events: append one, list an entity's log. No route modifies or deletes an event."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from onehazel.api.body import read_json
from onehazel.api.deps import DryRun, ExternalIdDep, MetricsDep, ServicesDep, WorkspaceDep
from onehazel.api.docs import errors, json_body, write_errors
from onehazel.api.observability import Metrics
from onehazel.api.params import NO_CONTROL_CHARACTERS, PageCursor, PageLimit, optional_timestamp
from onehazel.api.responses import Json
from onehazel.api.schemas import DryRunResults, EventIn, EventOut, EventPage
from onehazel.domain.validation import bind_path
from onehazel.domain.workspace import Workspace
from onehazel.services.analytics import check_range
from onehazel.services.container import Services

router = APIRouter(tags=["events"])


@router.post(
    "/entities/{externalId}/events",
    response_model=None,
    status_code=201,
    responses={
        201: {"model": EventOut, "description": "Stored"},
        200: {
            "model": EventOut | DryRunResults,
            "description": "An exact eventId replay (nothing stored, duplicate: true) or the dryRun outcome",
        },
        **write_errors(404, 409, 410),
    },
    openapi_extra=json_body(EventIn, description="One event; eventId makes retries idempotent"),
)
async def record_event(
    request: Request,
    services: ServicesDep,
    ws: WorkspaceDep,
    external_id: ExternalIdDep,
    metrics: MetricsDep,
    dry_run: DryRun = False,
) -> Json:
    """Append an event to an entity's log (201), or confirm an exact replay (200)."""
    if dry_run:
        body = bind_path(await read_json(request), externalId=external_id)
        return Json(await services.batch.dry_run(ws, kind="events", items=[body]))
    return await record_one(request, services, ws, external_id, metrics)


async def record_one(
    request: Request, services: Services, ws: Workspace, external_id: str, metrics: Metrics
) -> Json:
    """The write itself, once the caller is admitted: shared with ``api.hot_path``."""
    body = bind_path(await read_json(request), externalId=external_id)
    # read_json refused any string with NUL or a lone surrogate; the path's externalId is
    # checked (checked_external_id) and validated again as an identifier.
    event, created = await services.events.record(ws, body, clean=True)
    if created:
        metrics.ingested_events.inc()
    return Json(event, status_code=201 if created else 200)


@router.get(
    "/entities/{externalId}/events",
    response_model=None,
    responses={200: {"model": EventPage}, **errors(404, 409, 410, 422)},
)
async def list_events(
    services: ServicesDep,
    ws: WorkspaceDep,
    external_id: ExternalIdDep,
    type_: Annotated[
        str | None,
        Query(alias="type", max_length=64, pattern=NO_CONTROL_CHARACTERS, description="Only this event type"),
    ] = None,
    from_: Annotated[str | None, Query(alias="from", description="RFC 3339; timestamp at or after")] = None,
    to: Annotated[str | None, Query(description="RFC 3339; timestamp strictly before")] = None,
    order: Annotated[Literal["desc", "asc"], Query(description="By timestamp, then server order")] = "desc",
    limit: PageLimit = 100,
    cursor: PageCursor = None,
) -> Json:
    """An entity's events by timestamp (newest first by default), PII decrypted."""
    from_ts, to_ts = optional_timestamp("from", from_), optional_timestamp("to", to)
    check_range(from_ts, to_ts)
    page = await services.events.list(
        ws,
        external_id,
        type_=type_,
        from_ts=from_ts,
        to_ts=to_ts,
        descending=order == "desc",
        limit=limit,
        cursor=cursor,
    )
    return Json(page)
