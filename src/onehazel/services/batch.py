"""Batch jobs as the API sees them: accept durably, report status, page item outcomes, dry runs.

Accepting does as little as possible inside the request: check the envelope
and size, seal the whole body under the workspace key and store it as a
queued job, then answer 202. The 202 is sent only after that transaction
commits, so an accepted batch survives any crash. Items are validated and
applied later by a worker (``jobs/worker.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from onehazel.crypto.blobs import seal_blob
from onehazel.crypto.fingerprints import Fingerprinter
from onehazel.domain.cursors import decode_cursor, encode_cursor
from onehazel.domain.errors import (
    BatchTooLarge,
    Detail,
    EntityNotFound,
    IdempotencyConflict,
    JobNotFound,
    PayloadTooLarge,
    ValidationFailed,
)
from onehazel.domain.json_text import values_over
from onehazel.domain.values import format_timestamp
from onehazel.domain.workspace import Workspace
from onehazel.jobs.apply import CHUNK_SIZE, apply_chunk, failure, success
from onehazel.services.ids import new_id
from onehazel.storage.jobs import JobRecord, insert_sqlite

if TYPE_CHECKING:
    from onehazel.services.container import Services

MAX_ITEMS = {"entities": 1000, "events": 5000, "states": 1000}
# JSON values a batch body may hold, nested ones included: 200 an item for the largest
# batch (an item has at most 100 top-level fields). 16 MiB of "{}," is 5.6 million objects,
# ~1 GB once parsed, and seconds of the event loop; this many are ~150 MB at worst.
MAX_BATCH_VALUES = 1_000_000
ITEM_STATUSES = ("succeeded", "failed", "duplicate", "warning")


def batch_total(kind: str, shape: Mapping[str, int | None] | None, raw: bytes) -> int:
    """The item count of a batch body ``raw``, from its shape (``json_text.envelope``: each
    member's array length), or 422 / 413 when the envelope is wrong or the batch too large."""
    total = shape.get(kind) if shape is not None else None
    if shape is None or total is None:
        raise ValidationFailed.of(
            [Detail(kind, "invalid_batch", f'the body must be an object with an "{kind}" array')]
        )
    extra = [key for key in shape if key != kind]
    if extra:
        raise ValidationFailed.of([Detail(extra[0], "unknown_field", f"{extra[0]}: is not a batch member")])
    if total > MAX_ITEMS[kind]:
        raise BatchTooLarge(f"a {kind} batch holds at most {MAX_ITEMS[kind]} items; got {total}")
    if values_over(raw, MAX_BATCH_VALUES):  # a size limit of the body ("payload_too_large")
        raise PayloadTooLarge(
            f"a batch holds at most {MAX_BATCH_VALUES:,} JSON values (nested ones included);"
            " send fewer or smaller items"
        )
    return total


def job_to_wire(job: JobRecord) -> dict[str, Any]:
    return {
        "jobId": job.id,
        "kind": job.kind,
        "status": job.status,
        "total": job.total,
        "processed": job.processed,
        "succeeded": job.succeeded,
        "failed": job.failed,
        "duplicates": job.duplicates,
        "errors": job.errors,
        "warnings": job.warnings,
        "createdAt": format_timestamp(job.created_at),
        "startedAt": format_timestamp(job.started_at) if job.started_at else None,
        "completedAt": format_timestamp(job.completed_at) if job.completed_at else None,
    }


class BatchService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.core = services.core

    async def accept(
        self, ws: Workspace, *, kind: str, body: bytes, total: int, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Store the batch as a queued job; returns (job, created). Replays return the first job."""
        await self.core.template_of(ws)
        fingerprints = await self.core.fingerprinter(ws)
        source = {"kind": kind, "sha256": hashlib.sha256(body).hexdigest()}
        body_hash = fingerprints.of(source)
        if idempotency_key is not None:
            earlier = await self._replayed(ws, idempotency_key, source, fingerprints)
            if earlier is not None:
                return earlier, False
        now = self.core.clock()
        job = JobRecord(
            workspace_id=ws.id,
            id=new_id("job"),
            kind=kind,
            status="queued",
            total=total,
            processed=0,
            succeeded=0,
            failed=0,
            duplicates=0,
            errors=[],
            warnings=[],
            idempotency_key=idempotency_key,
            body_hash=body_hash,
            seq=self.core.seq.next(),
            created_at=now,
            started_at=None,
            completed_at=None,
            lease_owner=None,
            lease_until=None,
        )
        # Compressing a 5000-event batch takes ~10 ms; zlib lets go of the GIL, so in a thread
        # the event loop (the worker checking the previous batch) goes on meanwhile.
        payload = await asyncio.to_thread(seal_blob, self.core.keys, ws.id, f"job/{job.id}", body)
        try:
            await self._insert(job, payload)
        except (sa.exc.IntegrityError, sqlite3.IntegrityError):
            # A concurrent request with the same Idempotency-Key won the race.
            assert idempotency_key is not None
            earlier = await self._replayed(ws, idempotency_key, source, fingerprints)
            if earlier is None:
                raise
            return earlier, False
        self.core.jobs_waiting.set()
        return job_to_wire(job), True

    async def _insert(self, job: JobRecord, payload: bytes) -> None:
        """Store the queued job. SQLite: in one call into the driver's thread (one turn of the
        connection the worker's chunks wait for, not three: BEGIN, INSERT, COMMIT)."""
        store = self.core.store
        if store.is_sqlite:
            await store.sqlite_transaction(insert_sqlite, job, payload)
            return
        async with store.begin() as uow:
            await uow.jobs.insert(job, payload)

    async def _replayed(
        self, ws: Workspace, key: str, source: dict[str, Any], fingerprints: Fingerprinter
    ) -> dict[str, Any] | None:
        async with self.core.store.begin() as uow:
            job = await uow.jobs.by_idempotency_key(ws.id, key)
        if job is None:
            return None
        if job.body_hash is None or not fingerprints.same(source, job.body_hash):
            raise IdempotencyConflict("this Idempotency-Key was already used with a different body")
        return job_to_wire(job)

    async def get(self, ws: Workspace, job_id: str) -> dict[str, Any]:
        async with self.core.store.begin() as uow:
            job = await uow.jobs.get(ws.id, job_id)
        if job is None:
            raise JobNotFound("no job with this id in this workspace")
        return job_to_wire(job)

    async def items(
        self, ws: Workspace, job_id: str, *, status: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """Item outcomes in index order, optionally only one status (or those with warnings)."""
        start = decode_cursor("job-items", cursor, (int,))[0] if cursor else 0
        async with self.core.store.begin() as uow:
            if await uow.jobs.get(ws.id, job_id) is None:
                raise JobNotFound("no job with this id in this workspace")
            chunks = await uow.jobs.chunks(ws.id, job_id, from_index=start)
        page: list[dict[str, Any]] = []
        next_cursor = None
        for _, outcomes in chunks:
            for outcome in outcomes:
                if outcome["index"] < start or not _matches(outcome, status):
                    continue
                if len(page) == limit:
                    next_cursor = encode_cursor("job-items", [page[-1]["index"] + 1])
                    return {"data": page, "nextCursor": next_cursor}
                page.append(outcome)
        return {"data": page, "nextCursor": next_cursor}

    async def dry_run(self, ws: Workspace, *, kind: str, items: list[Any]) -> dict[str, Any]:
        """Exactly the outcomes a real write would have, computed and rolled back."""
        template = await self.core.template_of(ws)
        fingerprints = await self.core.fingerprinter(ws)
        results: list[dict[str, Any]] = []
        async with self.core.store.rehearse() as uow:
            size = CHUNK_SIZE[kind]
            for start in range(0, len(items), size):
                results += await apply_chunk(
                    self.services,
                    uow,
                    ws,
                    template,
                    kind=kind,
                    items=items[start : start + size],
                    start=start,
                    fingerprints=fingerprints,
                )
        return {"results": results}

    async def dry_run_delete(self, ws: Workspace, external_id: str) -> dict[str, Any]:
        """The outcome ``DELETE /entities/{externalId}`` would have, nothing changed: it
        succeeds for a live or already deleted entity (the delete is idempotent), and fails
        with ``entity_not_found`` for an externalId never created (or purged, then unused)."""
        async with self.core.store.rehearse() as uow:
            record = await uow.entities.get(ws.id, external_id)
        if record is None:
            missing = EntityNotFound("no entity with this externalId in this workspace")
            return {"results": [failure(0, {"externalId": external_id}, missing)]}
        return {"results": [success(0, external_id)]}


def _matches(outcome: dict[str, Any], status: str | None) -> bool:
    if status is None:
        return True
    if status == "warning":
        return bool(outcome.get("warnings"))
    return bool(outcome["status"] == status)
