"""What reading a file produces: records (items with the lines they span) and rejects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A line longer than a whole batch body may be (16 MiB) can never be accepted.
MAX_LINE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Reject:
    """One item that was not stored: where it was in the file and why (never its content)."""

    line: int
    external_id: str | None
    code: str
    message: str
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "line": self.line,
            "externalId": self.external_id,
            "code": self.code,
            "message": self.message,
        }
        if self.path:
            wire["path"] = self.path
        return wire


@dataclass(frozen=True)
class Record:
    """One item of the file (or the reason it is not one), with the lines it spans."""

    first_line: int
    last_line: int
    item: dict[str, Any] | None = None
    reject: Reject | None = None


def too_long(line: int) -> Record:
    return Record(
        line, line, reject=Reject(line, None, "line_too_long", f"longer than {MAX_LINE_BYTES} bytes")
    )


def rejected(line: int, code: str, message: str) -> Record:
    return Record(line, line, reject=Reject(line, None, code, message))
