"""Query parameter parsing shared by routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from onehazel.domain.errors import Detail, ValidationFailed
from onehazel.domain.values import ValueProblem, parse_timestamp

NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"
"""Pattern for free-text query filters: PostgreSQL cannot even compare a string holding NUL."""


PageLimit = Annotated[int, Query(ge=1, le=1000, description="Items per page (1-1000)")]
PageCursor = Annotated[str | None, Query(max_length=2048, description="nextCursor of the previous page")]


def optional_timestamp(name: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return parse_timestamp(raw)
    except ValueProblem as exc:
        raise ValidationFailed.of([Detail(name, exc.code, f"{name}: {exc.message}")]) from None
