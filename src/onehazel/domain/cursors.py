"""Opaque pagination cursors.

A cursor is the sort key of the last row a page returned, plus the kind of
listing it belongs to, as URL-safe base64 JSON. Pages continue strictly after
that key, so rows inserted meanwhile never shift a page (no offsets).
A cursor from another listing, or a damaged one, is a 422 ``invalid_cursor``;
so is a forged one holding values no listing produces and no database can bind
(integers beyond 64 bits, strings with NUL or lone surrogates), which would
otherwise fail inside the query (PostgreSQL refuses NUL in text) as a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from onehazel.domain.errors import Detail, ValidationFailed
from onehazel.domain.values import json_problem


def encode_cursor(kind: str, key: list[Any]) -> str:
    raw = json.dumps({"k": kind, "v": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, types: tuple[type, ...]) -> list[Any]:
    """Return the key stored in ``cursor``; its items must have ``types``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = json.loads(raw)
        key = doc["v"]
        ok = (
            doc["k"] == kind
            and isinstance(key, list)
            and len(key) == len(types)
            and all(type(v) is t for v, t in zip(key, types, strict=True))
            and json_problem(key) is None  # 64-bit ints, no NUL or lone surrogates
        )
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise ValidationFailed.of(
            [Detail("cursor", "invalid_cursor", "cursor: not a cursor returned by this listing")]
        )
    return list(key)
