"""Templates and workspace settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from onehazel.api.body import read_json
from onehazel.api.deps import ServicesDep, WorkspaceDep
from onehazel.api.docs import errors, json_body, write_errors
from onehazel.api.responses import Json
from onehazel.api.schemas import SettingsIn, SettingsOut, TemplateList, TemplateOut

router = APIRouter(tags=["templates and settings"])


@router.get("/templates", response_model=None, responses={200: {"model": TemplateList}, **errors()})
async def list_templates(services: ServicesDep, _ws: WorkspaceDep) -> Json:
    """List the data templates (tpl_igaming is built in)."""
    return Json({"data": [t.to_wire() for t in services.settings.templates()]})


@router.get(
    "/templates/{templateId}",
    response_model=None,
    responses={200: {"model": TemplateOut}, **errors(404)},
)
async def get_template(
    services: ServicesDep,
    _ws: WorkspaceDep,
    template_id: Annotated[str, Path(alias="templateId", max_length=64)],
) -> Json:
    """One template with its entity types, event types and state keys."""
    return Json(services.settings.template(template_id).to_wire())


@router.get("/settings", response_model=None, responses={200: {"model": SettingsOut}, **errors()})
async def get_settings(services: ServicesDep, ws: WorkspaceDep) -> Json:
    """The workspace's settings: template and retention."""
    return Json(await services.settings.get(ws))


@router.put(
    "/settings",
    response_model=None,
    responses={200: {"model": SettingsOut}, **write_errors()},
    openapi_extra=json_body(SettingsIn, description="Any subset of the settings fields"),
)
async def put_settings(request: Request, services: ServicesDep, ws: WorkspaceDep) -> Json:
    """Update any subset of the settings; returns the full settings."""
    return Json(await services.settings.update(ws, await read_json(request)))
