"""Reading an import file: its identity, and its records one at a time in constant memory.

The file is read twice. A first pass hashes the bytes (SHA-256) and counts the lines: the hash
is the file's *identity*, so the same content imported from another path, another machine or
under another name gets the same eventIds and Idempotency-Keys, and the line count gives the
progress bar its total. The second pass yields one :class:`Record` per line (NDJSON) or per
row (CSV), never holding more than one line (at most :data:`MAX_LINE_BYTES`) at a time.

A line that cannot become an item (bad JSON, bad UTF-8, a CSV row of the wrong width, a cell of
the wrong type) becomes a :class:`Reject` with its line number instead; it is never sent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from onehazel.importer.csv_rows import CsvError, read_csv_records
from onehazel.importer.numbers import loads
from onehazel.importer.records import MAX_LINE_BYTES, Record, rejected, too_long

_CHUNK = 1024 * 1024
_BOM = b"\xef\xbb\xbf"


class InputError(Exception):
    """The file as a whole cannot be imported (missing, unreadable, a bad CSV header)."""


@dataclass(frozen=True)
class SourceFile:
    path: Path
    sha256: str
    size: int
    lines: int


def scan(path: Path) -> SourceFile:
    """Hash and count the lines of ``path`` in one streaming pass."""
    digest = hashlib.sha256()
    size = newlines = 0
    last = b""
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                newlines += chunk.count(b"\n")
                last = chunk[-1:]
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    lines = newlines + (1 if size and last != b"\n" else 0)
    return SourceFile(path=path, sha256=digest.hexdigest(), size=size, lines=lines)


def raw_lines(f: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, the line without its end of line) from 1; None for a line over the limit."""
    number = 0
    while line := f.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := f.readline(_CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield number, None
            continue
        if number == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :]
        if line.endswith(b"\n"):
            line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
        yield number, line


def read_records(
    source: SourceFile,
    *,
    kind: str,
    fmt: str,
    after_line: int = 0,
    event_id: Callable[[int, bytes], str],
) -> Iterator[Record]:
    """Every record of the file past ``after_line`` (a resume point), in file order."""
    try:
        f = source.path.open("rb")
    except OSError as exc:
        raise InputError(f"{source.path}: cannot read it ({exc.strerror or exc})") from None
    with f:
        if fmt == "csv":
            try:
                yield from read_csv_records(raw_lines(f), kind=kind, after_line=after_line)
            except CsvError as exc:
                raise InputError(f"{source.path}: {exc}") from None
            return
        for number, line in raw_lines(f):
            if number <= after_line:
                continue
            if line is None:
                yield too_long(number)
            elif line.strip():
                yield ndjson_record(number, line, kind=kind, event_id=event_id)


def check_header(source: SourceFile, *, kind: str, fmt: str) -> None:
    """Raise InputError now, before anything is sent, when a CSV file's header is unusable."""
    if fmt == "csv":
        next(read_records(source, kind=kind, fmt=fmt, event_id=lambda line, content: ""), None)


def ndjson_record(number: int, line: bytes, *, kind: str, event_id: Callable[[int, bytes], str]) -> Record:
    """One NDJSON line as an item; events without an eventId get ``event_id(number, line)``."""
    try:
        item = loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return rejected(number, "invalid_encoding", f"not valid UTF-8 (byte {exc.start + 1})")
    except json.JSONDecodeError as exc:
        return rejected(number, "invalid_json", f"not valid JSON: {exc.msg} at column {exc.colno}")
    except (ValueError, RecursionError) as exc:
        return rejected(number, "invalid_json", f"not valid JSON: {exc}")
    if not isinstance(item, dict):
        return rejected(number, "invalid_item", f"expected a JSON object, got {_json_kind(item)}")
    if kind == "events" and item.get("eventId") is None:
        item["eventId"] = event_id(number, line)
    return Record(number, number, item=item)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
