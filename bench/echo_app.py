"""The baseline for ``single_writes.py``: the least a FastAPI write endpoint can cost.

One POST route at the same path as the real event endpoint (so the requests are
byte for byte the same) that reads the body, parses the JSON and answers a small
JSON document rendered with orjson, status 201 like a stored event. No auth, no
validation, no database: whatever OneHazel spends beyond this is its own.

Run by ``single_writes.py`` as ``uvicorn echo_app:app --app-dir bench`` with the
same worker count and the same http/loop settings (httptools, uvloop) as
``onehazel serve``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


class Json(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@app.get("/healthz")
async def healthz() -> Json:
    return Json({"status": "ok"})


@app.post("/operator-data-api/entities/{external_id}/events")
async def echo(external_id: str, request: Request) -> Json:
    document = json.loads(await request.body())
    return Json({"eventId": document.get("eventId"), "externalId": external_id}, status_code=201)
