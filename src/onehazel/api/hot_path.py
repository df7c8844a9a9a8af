"""The hottest operation without the framework: ``POST /entities/{externalId}/events``.

Single event writes are most of an operator's traffic, and FastAPI's routing
and dependency resolution cost about as much CPU as the write itself. This
ASGI app, in front of FastAPI (``api.app``), answers exactly that operation
(and only without a query string, so ``dryRun`` still goes through the route,
and only when the raw path holds no ``%2F``) by calling what the route's
dependencies call, in the same order: the key, the rate limit, the path's
externalId, then the body. It wraps its answer in its own ``Observability``
(request id, metrics, log line, last-resort 500), so it skips FastAPI's own
middleware layers too. Answers, errors, headers, metrics labels and log lines
are those of the route; everything else goes on to FastAPI. The OpenAPI
document still describes the route, which stays registered.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from onehazel.api.deps import admit, checked_external_id
from onehazel.api.errors import render
from onehazel.api.observability import Observability
from onehazel.api.routes.events import record_one
from onehazel.domain.errors import ApiError

_EXTERNAL_ID = "onehazel.hot_path.external_id"


class HotPath:
    def __init__(self, app: ASGIApp, *, state: Any, route: Any, base: str) -> None:
        self.app = app  # FastAPI itself, for every other request
        self.events = re.compile(re.escape(base) + r"/entities/([^/]+)/events")
        self.state = state  # the FastAPI app's state: services (set at start-up) and metrics
        self.route = route  # the APIRoute it stands in for, so metrics name the same template
        self.observed = Observability(self._answer, metrics=state.metrics, base=base)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            self.events.fullmatch(scope["path"])
            if scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope.get("query_string")
            and b"%2f" not in scope.get("raw_path", b"").lower()  # an externalId with "/": the route
            else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        scope[_EXTERNAL_ID] = match.group(1)
        await self.observed(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            services = self.state.services
            ws = await admit(services, scope, request.headers.get("authorization"))
            external_id = checked_external_id(scope[_EXTERNAL_ID])
            response = await record_one(request, services, ws, external_id, self.state.metrics)
        except ApiError as error:
            response = render(error, str(scope.get("request_id", "")))
        await response(scope, receive, send)
