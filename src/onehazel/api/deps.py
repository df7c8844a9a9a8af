"""Dependencies named once as types: the services, the caller's workspace, path ids.

All are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool,
which cost three thread hops per request on the hot path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from onehazel.api.observability import SLASH, Metrics
from onehazel.domain.errors import Detail, ValidationFailed
from onehazel.domain.values import ValueProblem, check_identifier
from onehazel.domain.workspace import Workspace
from onehazel.services.container import Services


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


ServicesDep = Annotated[Services, Depends(get_services)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def current_workspace(request: Request, services: ServicesDep) -> Workspace:
    """The workspace of the Bearer key; 401 for a missing, unknown or revoked key."""
    return await services.auth.authenticate(request.headers.get("authorization"))


WorkspaceDep = Annotated[Workspace, Depends(current_workspace)]


async def external_id_path(
    external_id: Annotated[
        str,
        Path(
            alias="externalId",
            description="The operator's own id of the entity (1-256 characters, URL-encoded).",
        ),
    ],
) -> str:
    value = external_id.replace(SLASH, "/")
    try:
        return check_identifier(value, what="externalId")
    except ValueProblem as exc:
        raise ValidationFailed.of([Detail("externalId", exc.code, f"externalId: {exc.message}")]) from None


ExternalIdDep = Annotated[str, Depends(external_id_path)]


DryRun = Annotated[
    bool,
    Query(
        alias="dryRun", description="Validate exactly as a real write and return the outcome; store nothing"
    ),
]
