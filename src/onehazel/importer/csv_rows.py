"""CSV files for entities and states: the header row, and how each cell becomes JSON.

Columns are found by name in the header row (any order; names are trimmed):

- entities: ``externalId``, ``type``, and every other column is an attribute;
- states: ``externalId``, ``key``, ``value`` and optionally ``timestamp`` (nothing else).

A cell is text, sent as a JSON string exactly as written, unless its column names a type
with a suffix, ``name:type``:

=========== ==================================================================================
``string``  the default: the cell as written (a decimal such as ``10.50`` stays the exact
            string ``"10.50"``, which ``decimal`` fields accept)
``decimal`` a decimal number, checked here and sent as a string with exactly its digits
``number``  a JSON number (``96.5``, ``1e3``)
``integer`` a JSON integer (``42``)
``boolean`` ``true`` or ``false`` (any case)
``json``    any JSON value: objects, arrays, ``null`` (to remove an attribute), quoted strings
=========== ==================================================================================

An **empty cell is absent**: the attribute (or the state's timestamp) is not sent at all, so
an empty cell never erases stored data. A cell that does not fit its column's type, a row with
more or fewer cells than the header, or a row that is not valid UTF-8 rejects that row only.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from onehazel.importer.numbers import exact_number, loads
from onehazel.importer.records import Record, Reject, too_long

CELL_TYPES = ("string", "decimal", "number", "integer", "boolean", "json")
REQUIRED = {"entities": ("externalId", "type"), "states": ("externalId", "key", "value")}
STATE_COLUMNS = ("externalId", "key", "value", "timestamp")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")


class CsvError(Exception):
    """The header row is missing or unusable: nothing in the file can be imported."""


class CellError(ValueError):
    """One cell does not fit its column's type."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str


def parse_header(cells: list[str], *, kind: str) -> list[Column]:
    """The columns of a header row, or CsvError naming what is wrong with it."""
    if kind not in REQUIRED:
        raise CsvError(f"CSV files hold entities or states, not {kind}; use NDJSON")
    columns = [_column(cell) for cell in cells]
    names = [c.name for c in columns]
    for name in names:
        if not name:
            raise CsvError("the header row has an empty column name")
        if names.count(name) > 1:
            raise CsvError(f"the header row names the column {name!r} twice")
    missing = [name for name in REQUIRED[kind] if name not in names]
    if missing:
        raise CsvError(
            f"the header row lacks the column(s) {', '.join(missing)} (it has: {', '.join(names)})"
        )
    for c in columns:
        if kind == "states" and c.name not in STATE_COLUMNS:
            raise CsvError(f"unexpected column {c.name!r}: a states file has {', '.join(STATE_COLUMNS)}")
        if c.type != "string" and c.name in ("externalId", "type", "key", "timestamp"):
            raise CsvError(f"the column {c.name!r} is always text; drop its :{c.type}")
    return columns


def _column(cell: str) -> Column:
    name = cell.strip()
    if ":" not in name:
        return Column(name, "string")
    base, _, type_ = name.rpartition(":")
    if type_ not in CELL_TYPES:
        raise CsvError(f"unknown column type {type_!r} in {name!r} (types: {', '.join(CELL_TYPES)})")
    return Column(base.strip(), type_)


def convert(cell: str, type_: str) -> Any:
    """A non-empty cell as the JSON value its column's type says."""
    if type_ == "string":
        return cell
    text = cell.strip()
    if type_ == "decimal":
        if not _DECIMAL.fullmatch(text):
            raise CellError("expected a decimal number such as 10.50")
        return text
    if type_ == "integer":
        if not _INTEGER.fullmatch(text):
            raise CellError("expected an integer")
        return int(text)
    if type_ == "number":
        if not _DECIMAL.fullmatch(text) or not math.isfinite(float(text)):
            raise CellError("expected a number")
        return int(text) if _INTEGER.fullmatch(text) else exact_number(text)
    if type_ == "boolean":
        if text.lower() not in ("true", "false"):
            raise CellError("expected true or false")
        return text.lower() == "true"
    try:
        return loads(text)
    except (ValueError, RecursionError) as exc:
        raise CellError(f"not valid JSON ({exc})") from None


def to_item(columns: list[Column], cells: list[str], *, kind: str) -> dict[str, Any]:
    """A data row as a batch item; CellError for a cell that does not fit its type."""
    item: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for column, cell in zip(columns, cells, strict=True):
        if cell == "":
            continue
        if _undecodable(cell):
            raise CellError(f"{column.name}: not valid UTF-8")
        try:
            value = convert(cell, column.type)
        except CellError as exc:
            raise CellError(f"{column.name}: {exc}") from None
        if kind == "entities" and column.name not in ("externalId", "type"):
            attributes[column.name] = value
        else:
            item[column.name] = value
    if kind == "entities":
        item["attributes"] = attributes
    return item


class _Lines:
    """Decoded lines for csv.reader, remembering which physical lines each row used."""

    def __init__(self, lines: Iterable[tuple[int, bytes | None]]) -> None:
        self._lines = iter(lines)
        self.first = 0
        self.last = 0
        self.too_long = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        number, line = next(self._lines)
        if not self.first:
            self.first = number
        self.last = number
        if line is None:
            self.too_long = True
            return ""
        return line.decode("utf-8", "surrogateescape") + "\n"

    def take(self) -> tuple[int, int, bool]:
        """(first line, last line, any line too long) of the row just read; starts the next row."""
        span = (self.first, self.last, self.too_long)
        self.first, self.too_long = 0, False
        return span


def read_csv_records(
    lines: Iterable[tuple[int, bytes | None]], *, kind: str, after_line: int = 0
) -> Iterator[Record]:
    """The data rows past ``after_line`` as records; CsvError when the header is unusable."""
    source = _Lines(lines)
    reader = csv.reader(source, strict=False)
    columns: list[Column] | None = None
    while True:
        try:
            cells = next(reader)
            error = None
        except StopIteration:
            break
        except csv.Error as exc:
            cells, error = [], str(exc)
        first, last, overlong = source.take()
        if columns is None:
            if error or overlong:
                raise CsvError(f"cannot read the header row: {error or 'line too long'}")
            if cells and any(c.strip() for c in cells):
                columns = parse_header(cells, kind=kind)
            continue
        if last <= after_line or (not cells and not error and not overlong):
            continue
        if overlong:
            yield too_long(first)
        elif error:
            yield Record(first, last, reject=Reject(first, None, "invalid_csv_row", error))
        else:
            yield _row_record(columns, cells, first, last, kind=kind)
    if columns is None:
        raise CsvError("no header row (the file is empty)")


def _row_record(columns: list[Column], cells: list[str], first: int, last: int, *, kind: str) -> Record:
    if len(cells) != len(columns):
        # The cells may be shifted, so which one is the externalId is not known either.
        message = f"the row has {len(cells)} cells, the header {len(columns)}"
        return Record(first, last, reject=Reject(first, None, "invalid_csv_row", message))
    try:
        item = to_item(columns, cells, kind=kind)
    except CellError as exc:
        external_id = next(cell for c, cell in zip(columns, cells, strict=True) if c.name == "externalId")
        reject = Reject(first, _clean(external_id or None), "invalid_csv_value", str(exc))
        return Record(first, last, reject=reject)
    return Record(first, last, item=item)


def _clean(external_id: str | None) -> str | None:
    """The externalId as valid text (undecodable bytes replaced), for the rejects file."""
    if external_id is None:
        return None
    return external_id.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _undecodable(cell: str) -> bool:
    try:
        cell.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
