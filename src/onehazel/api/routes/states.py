"""States: latest value per key, last writer wins by timestamp."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from onehazel.api.body import read_json
from onehazel.api.deps import DryRun, ExternalIdDep, MetricsDep, ServicesDep, WorkspaceDep
from onehazel.api.docs import errors, json_body, write_errors
from onehazel.api.responses import Json
from onehazel.api.schemas import DryRunResults, StateIn, StateList, StateOut, StatePut
from onehazel.domain.validation import bind_path

router = APIRouter(tags=["states"])

StateKeyPath = Annotated[str, Path(max_length=64, description="A state key of the template, e.g. balance")]


@router.put(
    "/entities/{externalId}/state/{key}",
    response_model=None,
    responses={200: {"model": StatePut | DryRunResults}, **write_errors(404, 409, 410)},
    openapi_extra=json_body(StateIn, description="The new value; older timestamps are not applied"),
)
async def put_state(
    request: Request,
    services: ServicesDep,
    ws: WorkspaceDep,
    external_id: ExternalIdDep,
    key: StateKeyPath,
    metrics: MetricsDep,
    dry_run: DryRun = False,
) -> Json:
    """Set a state unless a newer one is stored (then applied: false and the stored state)."""
    body = bind_path(await read_json(request), externalId=external_id, key=key)
    if dry_run:
        return Json(await services.batch.dry_run(ws, kind="states", items=[body]))
    state = await services.states.put(ws, body)
    if state["applied"]:
        metrics.ingested.labels("states").inc()
    return Json(state)


@router.get(
    "/entities/{externalId}/state",
    response_model=None,
    responses={200: {"model": StateList}, **errors(404, 410, 422)},
)
async def list_states(services: ServicesDep, ws: WorkspaceDep, external_id: ExternalIdDep) -> Json:
    """Every state of an entity."""
    return Json(await services.states.list(ws, external_id))


@router.get(
    "/entities/{externalId}/state/{key}",
    response_model=None,
    responses={200: {"model": StateOut}, **errors(404, 410, 422)},
)
async def get_state(
    services: ServicesDep, ws: WorkspaceDep, external_id: ExternalIdDep, key: StateKeyPath
) -> Json:
    """One state; 404 state_not_found when it was never set."""
    return Json(await services.states.get(ws, external_id, key))
