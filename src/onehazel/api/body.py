"""Reading request bodies: media type, gzip, size limits, UTF-8 and JSON hygiene.

We read bodies ourselves instead of letting FastAPI parse them, so that every
malformed input gets the contract's error (never a 500), limits apply after
gzip inflation, and JSON numbers are parsed as Decimal (money never touches a
float).
"""

from __future__ import annotations

import zlib
from typing import Any

from starlette.requests import ClientDisconnect, Request

from onehazel.api.http_protocol import REFUSED
from onehazel.domain.errors import (
    ApiError,
    ClientClosedRequest,
    Detail,
    InvalidJson,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from onehazel.domain.json_text import envelope, parse_exact
from onehazel.domain.values import json_problem

SINGLE_LIMIT = 1024 * 1024
BATCH_LIMIT = 16 * 1024 * 1024


def _mib(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MiB"


def _check_media_type(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        return  # a missing Content-Type is read as JSON (CONTRACT.md)
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise UnsupportedMediaType("send the body as application/json")
    charset = params.strip().lower()
    if charset.startswith("charset=") and charset[8:].strip('"') not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("JSON bodies must be UTF-8")


async def read_body(request: Request, *, limit: int) -> bytes:
    """The inflated body, refusing (413) anything over ``limit`` bytes."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise UnsupportedMediaType("Content-Encoding must be gzip or absent")
    too_large = PayloadTooLarge(f"the request body is over the {_mib(limit)} limit")
    wire_limit = limit if encoding != "gzip" else limit + limit // 8 + 1024
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > wire_limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > wire_limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        refused: type[ApiError] | None = request.scope.get(REFUSED)  # answered by api.http_protocol
        if refused is not None:
            raise refused("the request body was refused before it ended (see the log line before)") from None
        raise ClientClosedRequest("the client closed the connection before the whole body arrived") from None
    raw = b"".join(chunks)
    if encoding != "gzip":
        return raw
    return _inflate(raw, limit, too_large)


# Concatenated gzip streams (RFC 1952 allows them: `cat a.gz b.gz`, some log shippers). Each
# member's leftover is a copy of the rest of the body, so their number is kept small.
GZIP_MEMBERS = 16


def _inflate(raw: bytes, limit: int, too_large: PayloadTooLarge) -> bytes:
    """The gzip body ``raw`` inflated, its members one after another, never past ``limit``
    bytes; after the last member only zero bytes (padding, which gzip(1) also ignores) may
    follow."""
    parts: list[bytes] = []
    size, rest = 0, raw
    for _ in range(GZIP_MEMBERS):
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(rest, limit + 1 - size)  # at least 1: 0 would mean no limit
        except zlib.error:
            raise InvalidJson("the gzip body could not be inflated") from None
        size += len(part)
        if size > limit or inflater.unconsumed_tail:
            raise too_large
        if not inflater.eof:
            raise InvalidJson("the gzip body is truncated")
        parts.append(part)
        rest = inflater.unused_data
        if not rest.strip(b"\x00"):
            return b"".join(parts)
    raise InvalidJson(f"the gzip body has more than {GZIP_MEMBERS} members")


async def read_json(request: Request, *, limit: int = SINGLE_LIMIT) -> Any:
    """Read, check and parse a JSON body; every failure is a 4xx ApiError."""
    return (await read_json_raw(request, limit=limit))[1]


async def read_json_raw(request: Request, *, limit: int, check_values: bool = True) -> tuple[bytes, Any]:
    """Like ``read_json``, also returning the (inflated) bytes, e.g. to store a batch.

    Batches pass ``check_values=False``: their items are checked one by one when
    applied, so one bad string fails that item, not the whole batch; and only
    the envelope's shape is read here (``envelope``: the document is validated,
    not built), since the stored bytes are what the worker parses exactly.
    """
    _check_media_type(request)
    raw = await read_body(request, limit=limit)
    document = parse_exact(raw) if check_values else envelope(raw)
    problem = json_problem(document) if check_values else None
    if problem is not None:
        raise ValidationFailed.of([Detail("", "invalid_json_value", problem)])
    return raw, document
