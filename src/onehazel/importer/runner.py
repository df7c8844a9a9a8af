"""Sending a file's batches through the client, confirming them in order, recording rejects.

A few batches are in flight at once (sent and accepted, their jobs not yet finished), so the
file is read and sent while the server applies the batches before. A batch is *confirmed* when
every job it made has finished and every rejected item is written to the errors file (flushed
to disk); only then does the progress file move past its last line. Jobs of a workspace finish
in the order they were accepted, so confirming oldest-first never waits on a later batch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from onehazel.client import Client
from onehazel.client.errors import IdempotencyConflict, PayloadTooLarge
from onehazel.importer import progress as progress_file
from onehazel.importer.batches import Batch, batch_key, batches, event_id
from onehazel.importer.progress import Progress
from onehazel.importer.reading import SourceFile, read_records
from onehazel.importer.records import Reject

IN_FLIGHT = 4
POLL_SECONDS = 0.1
# Test hook: SIGKILL this process right after this many batches were accepted (a crash at the
# worst moment: batches sent, not yet confirmed). Never set it outside tests.
CRASH_AFTER_ENV = "ONEHAZEL_IMPORT_CRASH_AFTER_BATCHES"


class Display(Protocol):
    def update(self, *, confirmed_line: int, items: int, failed: int) -> None: ...


@dataclass
class Settings:
    kind: str
    fmt: str
    batch_size: int
    progress_path: Path


@dataclass
class RejectSink:
    """Rejected items: written to the errors file, or the first few kept to show on stderr."""

    out: IO[bytes] | None
    shown: list[Reject] = field(default_factory=list)
    keep: int = 10
    count: int = 0

    def write(self, rejects: list[Reject]) -> None:
        self.count += len(rejects)
        if self.out is None:
            self.shown.extend(rejects[: max(self.keep - len(self.shown), 0)])
            return
        if not rejects:
            return
        self.out.write(b"".join(orjson.dumps(r.to_json()) + b"\n" for r in rejects))
        self.out.flush()
        os.fsync(self.out.fileno())


@dataclass
class Sent:
    batch: Batch
    jobs: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (first item's index, 202 body)
    refused: list[Reject] = field(default_factory=list)  # items the server refused outright (413)


class Importer:
    def __init__(
        self,
        client: Client,
        source: SourceFile,
        settings: Settings,
        progress: Progress,
        *,
        sink: RejectSink,
        display: Display,
    ) -> None:
        self.client = client
        self.source = source
        self.settings = settings
        self.progress = progress
        self.sink = sink
        self.display = display
        self.items_this_run = 0
        self.jobs_this_run = 0
        self.sent_batches = 0
        crash_after = os.environ.get(CRASH_AFTER_ENV)
        self.crash_after = int(crash_after) if crash_after else None

    def run(self) -> None:
        in_flight: deque[Sent] = deque()
        for batch in self._batches():
            in_flight.append(self._submit(batch))
            self._maybe_crash()
            if len(in_flight) >= IN_FLIGHT:
                self._confirm(in_flight.popleft())
        while in_flight:
            self._confirm(in_flight.popleft())

    def _batches(self) -> Iterator[Batch]:
        sha = self.source.sha256
        records = read_records(
            self.source,
            kind=self.settings.kind,
            fmt=self.settings.fmt,
            after_line=self.progress.confirmed_line,
            event_id=lambda line, content: event_id(sha, line, content),
        )
        return batches(records, size=self.settings.batch_size)

    def _maybe_crash(self) -> None:
        self.sent_batches += 1
        if self.crash_after is not None and self.sent_batches >= self.crash_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def _submit(self, batch: Batch) -> Sent:
        """Send the batch's items (in as many requests as the client needs)."""
        sent = Sent(batch)
        if not batch.items:
            return sent
        key = batch_key(
            self.source.sha256,
            kind=self.settings.kind,
            fmt=self.settings.fmt,
            first_line=batch.first_line,
            last_line=batch.last_line,
        )
        start = 0
        while start < len(batch.items):
            part_key = key if start == 0 else f"{key}.{start}"
            try:
                accepted = self._send(batch.items[start:], part_key)
            except PayloadTooLarge as exc:
                if exc.index is None:
                    raise
                sent.jobs += _offsets(start, exc.jobs)
                skipped = start + exc.index
                item = batch.items[skipped]
                sent.refused.append(Reject(batch.lines[skipped], _external_id(item), exc.code, exc.message))
                start = skipped + 1
                continue
            sent.jobs += _offsets(start, accepted)
            break
        batch.items = []  # sent: only the line numbers are needed from here on
        self.jobs_this_run += len(sent.jobs)
        return sent

    def _send(self, items: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        try:
            return self.client.submit_batch(self.settings.kind, items, idempotency_key=key)
        except IdempotencyConflict:
            # The key was used for other bytes (an older version of this program, or a client that
            # encodes differently): the items themselves are idempotent, so send them with a new key.
            return self.client.submit_batch(self.settings.kind, items)

    def _confirm(self, sent: Sent) -> None:
        """Wait for the batch's jobs, then record its rejects and move the progress past it."""
        batch = sent.batch
        counts: Counter[str] = Counter(malformed=len(batch.rejects), failed=len(sent.refused))
        rejects = batch.rejects + sent.refused
        for offset, accepted in sent.jobs:
            rejects += self._outcomes(str(accepted["jobId"]), batch, offset, counts)
        with _interrupts_held():
            self.sink.write(sorted(rejects, key=lambda r: r.line))
            self.progress.confirmed_line = batch.last_line
            for name in progress_file.COUNTS:
                self.progress.counts[name] += counts[name]
            progress_file.save(self.settings.progress_path, self.progress)
            self.items_this_run += counts["processed"]
        total = self.progress.counts
        self.display.update(
            confirmed_line=batch.last_line,
            items=self.items_this_run,
            failed=total["failed"] + total["malformed"],
        )

    def _outcomes(self, job_id: str, batch: Batch, offset: int, counts: Counter[str]) -> list[Reject]:
        """Wait for one job; add its counts; the items it rejected."""
        job = self.client.wait_for_job(job_id, poll_interval=POLL_SECONDS)
        for name in ("succeeded", "duplicates", "failed", "processed"):
            counts[name] += int(job[name])
        rejects = self._failures(job_id, batch, offset) if job["failed"] else []
        if job["warnings"]:
            counts["warnings"] += sum(1 for _ in self.client.job_items(job_id, status="warning"))
        if job["status"] == "failed":
            never_tried = self._never_tried(job, batch, offset)
            counts["failed"] += len(never_tried)
            rejects += never_tried
        return rejects

    def _failures(self, job_id: str, batch: Batch, offset: int) -> list[Reject]:
        rejects = []
        for outcome in self.client.job_items(job_id, status="failed"):
            error = outcome.get("error") or {}
            rejects.append(
                Reject(
                    batch.lines[offset + int(outcome["index"])],
                    outcome.get("externalId"),
                    str(error.get("code", "failed")),
                    str(error.get("message", "")),
                    error.get("path"),
                )
            )
        return rejects

    def _never_tried(self, job: dict[str, Any], batch: Batch, offset: int) -> list[Reject]:
        """Items of a job the server gave up on (status failed) that it never tried."""
        reason = (job.get("errors") or [{}])[0]
        code = str(reason.get("code") or "job_failed")
        message = str(reason.get("message") or "the server could not process this job")
        return [
            Reject(batch.lines[offset + index], None, code, message)
            for index in range(int(job["processed"]), int(job["total"]))
        ]


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C while a batch's rejects and the progress are written, so the two always agree."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _offsets(start: int, accepted: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    jobs = []
    for job in accepted:
        jobs.append((start, job))
        start += int(job["total"])
    return jobs


def _external_id(item: dict[str, Any]) -> str | None:
    value = item.get("externalId")
    return value if isinstance(value, str) else None
