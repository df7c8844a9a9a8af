"""Analytics: counts and exact sums over the workspace's live data, computed by the database; never PII."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from onehazel.api.deps import ServicesDep, WorkspaceDep
from onehazel.api.docs import errors
from onehazel.api.params import NO_CONTROL_CHARACTERS, optional_timestamp
from onehazel.api.responses import Json
from onehazel.api.schemas import EntityCounts, EventCounts, TransactionSums

router = APIRouter(tags=["analytics"])

From = Annotated[
    str | None,
    Query(
        alias="from",
        description="RFC 3339, inclusive; default 30 days before `to` (ranges: at most 366 days)",
    ),
]
To = Annotated[str | None, Query(description="RFC 3339, exclusive; default now")]


@router.get("/analytics/events", response_model=None, responses={200: {"model": EventCounts}, **errors(422)})
async def event_counts(
    services: ServicesDep,
    ws: WorkspaceDep,
    from_: From = None,
    to: To = None,
    type_: Annotated[
        str | None,
        Query(alias="type", max_length=64, pattern=NO_CONTROL_CHARACTERS, description="Only this event type"),
    ] = None,
    group_by: Annotated[
        str, Query(alias="groupBy", max_length=64, description="type, day (UTC) or type,day")
    ] = "type",
) -> Json:
    """Counts of events of live (not deleted) entities by type and/or UTC day, over [from, to)."""
    return Json(
        await services.analytics.events(
            ws,
            from_ts=optional_timestamp("from", from_),
            to_ts=optional_timestamp("to", to),
            type_=type_,
            group_by=group_by,
        )
    )


@router.get(
    "/analytics/transactions", response_model=None, responses={200: {"model": TransactionSums}, **errors(422)}
)
async def transaction_sums(
    services: ServicesDep,
    ws: WorkspaceDep,
    from_: From = None,
    to: To = None,
    group_by: Annotated[
        str, Query(alias="groupBy", max_length=64, description="currency, type or currency,type")
    ] = "currency",
) -> Json:
    """Count and exact decimal sum of `amount` of live entities' transaction events, over [from, to).

    Only transactions whose amount is a decimal string count.
    """
    return Json(
        await services.analytics.transactions(
            ws,
            from_ts=optional_timestamp("from", from_),
            to_ts=optional_timestamp("to", to),
            group_by=group_by,
        )
    )


@router.get(
    "/analytics/entities", response_model=None, responses={200: {"model": EntityCounts}, **errors(422)}
)
async def entity_counts(
    services: ServicesDep,
    ws: WorkspaceDep,
    group_by: Annotated[
        str,
        Query(
            alias="groupBy",
            max_length=64,
            description="type, or a non-PII attribute name (a PII field is 422 pii_not_aggregatable)",
        ),
    ] = "type",
) -> Json:
    """Counts of live (not deleted) entities by type or by the value of a non-PII attribute."""
    return Json(await services.analytics.entities(ws, group_by=group_by))
