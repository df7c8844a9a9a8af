"""Cutting a file's records into batches, and the deterministic ids that make re-runs harmless.

A batch is a run of consecutive records: ``size`` of them (items and locally rejected lines
together, so memory stays bounded however bad a file is), covering the lines from its first
record to its last. Given the same file, the same resume point and the same batch size, the
batches come out the same every time, and so do their Idempotency-Keys.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from onehazel.importer.records import Record, Reject

# Part of every derived id: change it if a change to the mapping makes the same lines send
# different items, so that new ids never meet the old ones' stored bodies.
SCHEME = "v1"


def event_id(file_sha256: str, line: int, content: bytes) -> str:
    """The eventId of an event without one: the file's identity, its line number and its bytes."""
    digest = hashlib.sha256(f"{SCHEME}:{file_sha256}:{line}:".encode() + content)
    return "imp_" + digest.hexdigest()[:32]


def batch_key(file_sha256: str, *, kind: str, fmt: str, first_line: int, last_line: int) -> str:
    """The Idempotency-Key of the batch of these lines: the same lines always make the same body."""
    source = f"{SCHEME}:{file_sha256}:{kind}:{fmt}:{first_line}-{last_line}"
    return "imp_" + hashlib.sha256(source.encode()).hexdigest()[:40]


@dataclass
class Batch:
    first_line: int = 0
    last_line: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)
    lines: array[int] = field(default_factory=lambda: array("q"))  # the line of each item
    rejects: list[Reject] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items) + len(self.rejects)

    def add(self, record: Record) -> None:
        if not self.first_line:
            self.first_line = record.first_line
        self.last_line = record.last_line
        if record.item is not None:
            self.items.append(record.item)
            self.lines.append(record.first_line)
        elif record.reject is not None:
            self.rejects.append(record.reject)


def batches(records: Iterable[Record], *, size: int) -> Iterator[Batch]:
    batch = Batch()
    for record in records:
        batch.add(record)
        if len(batch) >= size:
            yield batch
            batch = Batch()
    if len(batch):
        yield batch
