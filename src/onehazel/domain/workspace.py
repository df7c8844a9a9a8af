"""The tenant boundary: every request acts inside exactly one workspace."""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("live", "test")


@dataclass(frozen=True)
class Workspace:
    """(operator, mode). ``key_id`` is the API key that authenticated the request."""

    id: str
    operator_id: str
    mode: str
    key_id: str
