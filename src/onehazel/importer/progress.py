"""The progress file: how far an import is confirmed, so ``--resume`` can skip that part.

One small JSON document, by default beside the input (``<file>.onehazel-import.json``), holding
the file's identity (SHA-256), the kind, where it was imported to (the API URL and a hash of the
key, never the key), the last line whose job completed (every line up to it is confirmed) and
the counts so far. It is rewritten atomically (temporary file, fsync, rename) after each job
completes, so a crash leaves either the previous or the next version, never a torn one; what a
crash loses is at most the batches sent but not yet confirmed, and those are sent again (and
deduplicated) by the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1
COUNTS = ("succeeded", "duplicates", "failed", "malformed", "warnings")


class ProgressError(Exception):
    """The progress file cannot be used (unreadable, or written for another file or server)."""


def default_path(source: Path) -> Path:
    return source.with_name(source.name + ".onehazel-import.json")


def destination(api_url: str, api_key: str) -> str:
    """Where an import goes, without the key itself: the URL and a hash of the key."""
    return f"{api_url} key-sha256:{hashlib.sha256(api_key.encode()).hexdigest()[:16]}"


@dataclass
class Progress:
    file_sha256: str
    kind: str
    destination: str
    confirmed_line: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, **asdict(self)}


def load(path: Path, *, file_sha256: str, kind: str, destination: str) -> Progress | None:
    """The progress of an earlier run of this very import, None when there is none yet."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ProgressError(f"cannot read the progress file {path}: {exc}") from None
    try:
        progress = Progress(
            file_sha256=str(raw["file_sha256"]),
            kind=str(raw["kind"]),
            destination=str(raw["destination"]),
            confirmed_line=int(raw["confirmed_line"]),
            counts={name: int(raw["counts"].get(name, 0)) for name in COUNTS},
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ProgressError(f"the progress file {path} is not one this program wrote") from None
    if progress.file_sha256 != file_sha256:
        raise ProgressError(
            f"the progress file {path} belongs to another file (or this file changed since); "
            "drop --resume to import it from the start"
        )
    if (progress.kind, progress.destination) != (kind, destination):
        raise ProgressError(
            f"the progress file {path} is for an import of {progress.kind} to {progress.destination}; "
            "drop --resume to import from the start"
        )
    return progress


def save(path: Path, progress: Progress) -> None:
    """Replace the progress file atomically (a crash leaves the old or the new one)."""
    data = json.dumps(progress.to_json(), indent=1).encode()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
