"""Health, readiness and Prometheus metrics, outside the API base path."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from onehazel.api.deps import MetricsDep, ServicesDep
from onehazel.api.responses import Json
from onehazel.api.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=None, responses={200: {"model": Health}})
async def healthz() -> Json:
    """Liveness: the process is up."""
    return Json({"status": "ok"})


@router.get(
    "/readyz",
    response_model=None,
    responses={200: {"model": Health}, 503: {"model": Health, "description": "database unreachable"}},
)
async def readyz(services: ServicesDep) -> Json:
    """Readiness: the database answers."""
    if await services.core.store.ping():
        return Json({"status": "ok"})
    return Json({"status": "unavailable"}, status_code=503, headers={"Retry-After": "1"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text format",
        }
    },
)
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus metrics: requests and latency by route and status, items ingested by kind."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
