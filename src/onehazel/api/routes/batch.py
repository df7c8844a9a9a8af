"""Batch operations: submit (202 once durably stored), job status, item outcomes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel

from onehazel.api.body import BATCH_LIMIT, read_json_raw
from onehazel.api.deps import DryRun, ServicesDep, WorkspaceDep
from onehazel.api.docs import errors, json_body, write_errors
from onehazel.api.params import NO_CONTROL_CHARACTERS, PageCursor, PageLimit
from onehazel.api.responses import Json
from onehazel.api.schemas import (
    BatchAccepted,
    DryRunResults,
    EntityBatchIn,
    EventBatchIn,
    JobItemPage,
    JobOut,
    StateBatchIn,
)
from onehazel.domain.errors import Detail, ValidationFailed
from onehazel.domain.json_text import parse_json
from onehazel.domain.values import ValueProblem, check_identifier
from onehazel.services.batch import MAX_ITEMS, batch_total

router = APIRouter(tags=["batch"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=256,
        description="Same key + same body returns the same job; another body is 409 idempotency_conflict",
    ),
]
_SUBMIT_RESPONSES = {
    202: {"model": BatchAccepted, "description": "Accepted: the whole batch is durably stored"},
    200: {"model": DryRunResults, "description": "dryRun=true: each item's outcome, nothing stored"},
    **write_errors(409),
}


async def _submit(
    request: Request, services: ServicesDep, ws: WorkspaceDep, kind: str, dry_run: bool, key: str | None
) -> Json:
    raw, shape = await read_json_raw(request, limit=BATCH_LIMIT, check_values=False)
    total = batch_total(kind, shape, raw)
    if dry_run:  # only the envelope's shape was read: read the items, exactly
        return Json(await services.batch.dry_run(ws, kind=kind, items=parse_json(raw)[kind]))
    if key is not None:
        try:
            check_identifier(key, what="Idempotency-Key")
        except ValueProblem as exc:
            raise ValidationFailed.of([Detail("Idempotency-Key", exc.code, exc.message)]) from None
    job, _ = await services.batch.accept(ws, kind=kind, body=raw, total=total, idempotency_key=key)
    return Json({"jobId": job["jobId"], "status": job["status"], "total": job["total"]}, status_code=202)


def _add_submit_route(kind: str, body: type[BaseModel], what: str) -> None:
    """One POST /batch/{kind} route; the three differ only in kind, body schema and wording."""

    async def submit(
        request: Request,
        services: ServicesDep,
        ws: WorkspaceDep,
        dry_run: DryRun = False,
        key: IdempotencyKey = None,
    ) -> Json:
        return await _submit(request, services, ws, kind, dry_run, key)

    submit.__name__ = f"submit_{kind}"
    submit.__doc__ = f"Queue up to {MAX_ITEMS[kind]} {what} as one job."
    router.post(
        f"/batch/{kind}",
        response_model=None,
        status_code=202,
        responses=_SUBMIT_RESPONSES,
        openapi_extra=json_body(body, description=f"Up to {MAX_ITEMS[kind]} {what}"),
    )(submit)


_add_submit_route("entities", EntityBatchIn, "entity upserts")
_add_submit_route("events", EventBatchIn, "events")
_add_submit_route("states", StateBatchIn, "state writes")


JobIdPath = Annotated[
    str, Path(alias="jobId", max_length=64, pattern=NO_CONTROL_CHARACTERS, description="job_...")
]


@router.get(
    "/batch/jobs/{jobId}", response_model=None, responses={200: {"model": JobOut}, **errors(404, 422)}
)
async def get_job(services: ServicesDep, ws: WorkspaceDep, job_id: JobIdPath) -> Json:
    """A job's status, counts and its first 100 errors and warnings."""
    return Json(await services.batch.get(ws, job_id))


@router.get(
    "/batch/jobs/{jobId}/items",
    response_model=None,
    responses={200: {"model": JobItemPage}, **errors(404, 422)},
)
async def list_job_items(
    services: ServicesDep,
    ws: WorkspaceDep,
    job_id: JobIdPath,
    status: Annotated[
        Literal["succeeded", "failed", "duplicate", "warning"] | None,
        Query(description="Only items with this outcome (warning: items that have warnings)"),
    ] = None,
    limit: PageLimit = 100,
    cursor: PageCursor = None,
) -> Json:
    """Page through every item outcome of a job, in item order."""
    return Json(await services.batch.items(ws, job_id, status=status, limit=limit, cursor=cursor))
