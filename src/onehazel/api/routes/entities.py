"""Entities: upsert, read, bulk listing, soft delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from onehazel.api.body import read_json
from onehazel.api.deps import DryRun, ExternalIdDep, MetricsDep, ServicesDep, WorkspaceDep
from onehazel.api.docs import errors, json_body, write_errors
from onehazel.api.params import NO_CONTROL_CHARACTERS, PageCursor, PageLimit, optional_timestamp
from onehazel.api.responses import Json
from onehazel.api.schemas import DeletedOut, DryRunResults, EntityIn, EntityOut, EntityPage

router = APIRouter(tags=["entities"])


@router.post(
    "/entities",
    response_model=None,
    status_code=201,
    responses={
        201: {"model": EntityOut, "description": "Created"},
        200: {
            "model": EntityOut | DryRunResults,
            "description": "Updated (attributes merged); with dryRun=true the outcome, nothing stored",
        },
        **write_errors(409, 410),
    },
    openapi_extra=json_body(EntityIn, description="Create or merge-update an entity by externalId"),
)
async def upsert_entity(
    request: Request, services: ServicesDep, ws: WorkspaceDep, metrics: MetricsDep, dry_run: DryRun = False
) -> Json:
    """Create (201) or merge-update (200) an entity by its externalId."""
    body = await read_json(request)
    if dry_run:
        return Json(await services.batch.dry_run(ws, kind="entities", items=[body]))
    entity, created = await services.entities.upsert(ws, body)
    metrics.ingested.labels("entities").inc()
    return Json(entity, status_code=201 if created else 200)


@router.get("/entities", response_model=None, responses={200: {"model": EntityPage}, **errors(422)})
async def list_entities(
    services: ServicesDep,
    ws: WorkspaceDep,
    type_: Annotated[
        str | None,
        Query(
            alias="type", max_length=64, pattern=NO_CONTROL_CHARACTERS, description="Only this entity type"
        ),
    ] = None,
    updated_since: Annotated[
        str | None, Query(alias="updatedSince", description="RFC 3339; only entities updated at or after")
    ] = None,
    limit: PageLimit = 100,
    cursor: PageCursor = None,
) -> Json:
    """Page through live entities, oldest update first; PII stays encrypted."""
    page = await services.entities.list(
        ws,
        type_=type_,
        updated_since=optional_timestamp("updatedSince", updated_since),
        limit=limit,
        cursor=cursor,
    )
    return Json(page)


@router.get(
    "/entities/{externalId}",
    response_model=None,
    responses={200: {"model": EntityOut}, **errors(404, 409, 410, 422)},
)
async def get_entity(services: ServicesDep, ws: WorkspaceDep, external_id: ExternalIdDep) -> Json:
    """One entity with its PII decrypted."""
    return Json(await services.entities.get(ws, external_id))


@router.delete(
    "/entities/{externalId}",
    response_model=None,
    responses={
        200: {
            "model": DeletedOut | DryRunResults,
            "description": "Deleted (or deleted already); with dryRun=true the outcome, nothing changed",
        },
        **errors(404, 422),
    },
)
async def delete_entity(
    services: ServicesDep, ws: WorkspaceDep, external_id: ExternalIdDep, dry_run: DryRun = False
) -> Json:
    """Soft-delete an entity (idempotent); it is erased for good after deletedEntitiesDays."""
    if dry_run:
        return Json(await services.batch.dry_run_delete(ws, external_id))
    return Json(await services.entities.delete(ws, external_id))
