"""Dependencies named once as types: the services, the caller's workspace, path ids.

All are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool,
which cost three thread hops per request on the hot path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request
from starlette.types import Scope

from onehazel.api.observability import RATE_LIMIT_HEADERS, SLASH, Metrics
from onehazel.domain.errors import Detail, RateLimited, ValidationFailed
from onehazel.domain.values import ValueProblem, check_identifier
from onehazel.domain.workspace import Workspace
from onehazel.services.container import Services
from onehazel.services.ratelimit import Decision

_BATCH_PREFIX = "/operator-data-api/batch/"


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


ServicesDep = Annotated[Services, Depends(get_services)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def current_workspace(request: Request, services: ServicesDep) -> Workspace:
    """The workspace of the Bearer key (401 for a missing, unknown or revoked key), once
    the request fits the workspace's rate limit (429 otherwise, before anything is done).

    The verdict goes into the scope, where the Observability middleware turns it into
    the RateLimit-Policy and RateLimit headers of whatever response follows.
    """
    return await admit(services, request.scope, request.headers.get("authorization"))


async def admit(services: Services, scope: Scope, authorization: str | None) -> Workspace:
    """``current_workspace`` for any ASGI scope (the routes' dependency and the hot path)."""
    ws = await services.auth.authenticate(authorization)
    decision = await services.rate_limits.check(ws, traffic_class(scope["method"], scope["path"]))
    scope[RATE_LIMIT_HEADERS] = rate_limit_headers(decision)
    if not decision.allowed:
        raise RateLimited(
            f"over this workspace's {decision.traffic} rate limit ({decision.limit // decision.window} "
            f"requests a second, bursts of {decision.limit}); retry after {decision.retry_after} s",
            headers={"Retry-After": str(decision.retry_after)},
        )
    return ws


WorkspaceDep = Annotated[Workspace, Depends(current_workspace)]


def traffic_class(method: str, path: str) -> str:
    """Which budget a request spends: reads (GET), batches (batch submits) or writes."""
    if method in ("GET", "HEAD"):
        return "reads"
    return "batches" if path.startswith(_BATCH_PREFIX) else "writes"


def rate_limit_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    """RateLimit-Policy and RateLimit in the structured-field form of draft-ietf-httpapi-ratelimit-headers."""
    name = decision.traffic
    return [
        (b"ratelimit-policy", f'"{name}";q={decision.limit};w={decision.window}'.encode()),
        (b"ratelimit", f'"{name}";r={decision.remaining};t={decision.reset}'.encode()),
    ]


async def external_id_path(
    external_id: Annotated[
        str,
        Path(
            alias="externalId",
            description="The operator's own id of the entity (1-256 characters, URL-encoded).",
        ),
    ],
) -> str:
    return checked_external_id(external_id)


def checked_external_id(external_id: str) -> str:
    """A path's externalId ("/" travels as ``SLASH``), or 422 naming the rule it breaks."""
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
