"""Applying batch items, chunk by chunk, inside the caller's transaction.

Each item succeeds or fails on its own with the same validation as the single
endpoints. The functions only touch the unit of work they are given: the
worker commits a chunk's effects together with the job's progress and the
item outcomes (so a crash can neither lose nor double-apply a chunk), and dry
runs call the very same code in a transaction that is rolled back.

Events take a bulk path (one entity look-up and one multi-row INSERT .. ON
CONFLICT DO NOTHING per chunk); entities and states go item by item through
the single-write services, which keeps merge and last-writer-wins semantics
identical to the single endpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from onehazel.crypto.fingerprints import Fingerprinter
from onehazel.domain.errors import ApiError, Detail, ValidationFailed
from onehazel.domain.templates import Template
from onehazel.domain.validation import EventWrite, validate_entity, validate_event, validate_state
from onehazel.domain.values import safe_text
from onehazel.domain.workspace import Workspace
from onehazel.services.ids import new_id
from onehazel.storage.records import EventRecord
from onehazel.storage.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from onehazel.services.container import Services

KINDS = ("entities", "events", "states")
# Events: a whole 5000-event batch per transaction (fewer commits/fsyncs; a crash
# redoes at most one batch). Entities and states go item by item, so smaller.
CHUNK_SIZE = {"entities": 250, "events": 5000, "states": 250}


def failure(index: int, item: Any, error: ApiError) -> dict[str, Any]:
    detail = error.details[0] if error.details else Detail("externalId", error.code, error.message)
    code = detail.code if isinstance(error, ValidationFailed) else error.code
    message = (
        detail.message if len(error.details) <= 1 else f"{detail.message} (+{len(error.details) - 1} more)"
    )
    outcome: dict[str, Any] = {
        "index": index,
        "status": "failed",
        "externalId": _external_id(item),
        "error": {"code": code, "message": message, "path": detail.path},
    }
    return outcome


def _external_id(item: Any) -> str | None:
    value = item.get("externalId") if isinstance(item, dict) else None
    return safe_text(value) if isinstance(value, str) and len(value) <= 256 else None


def success(
    index: int, external_id: str, warnings: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    outcome: dict[str, Any] = {"index": index, "status": "succeeded", "externalId": external_id, **extra}
    if warnings:
        outcome["warnings"] = warnings
    return outcome


async def apply_chunk(
    services: Services,
    uow: UnitOfWork,
    ws: Workspace,
    template: Template,
    *,
    kind: str,
    items: list[Any],
    start: int,
    fingerprints: Fingerprinter,
) -> list[dict[str, Any]]:
    """Apply ``items`` (indexes ``start``..) and return one outcome per item, in order.

    ``fingerprints`` (``core.fingerprinter(ws)``) must be fetched before ``uow`` opened.
    """
    if kind == "events":
        return await _apply_events(services, uow, ws, template, items, start, fingerprints)
    outcomes = []
    for offset, item in enumerate(items):
        index = start + offset
        try:
            if kind == "entities":
                entity, created = await services.entities.upsert_in(uow, ws, validate_entity(template, item))
                outcomes.append(success(index, entity["externalId"], created=created))
            else:
                state = await services.states.put_in(uow, ws, validate_state(template, item))
                outcomes.append(
                    success(index, item["externalId"], key=state["key"], applied=state["applied"])
                )
        except ApiError as error:
            outcomes.append(failure(index, item, error))
    return outcomes


async def _apply_events(
    services: Services,
    uow: UnitOfWork,
    ws: Workspace,
    template: Template,
    items: list[Any],
    start: int,
    fingerprints: Fingerprinter,
) -> list[dict[str, Any]]:
    core = services.core
    outcomes: list[dict[str, Any] | None] = [None] * len(items)
    writes: list[tuple[int, EventWrite]] = []
    for offset, item in enumerate(items):
        try:
            writes.append((offset, validate_event(template, item)))
        except ValidationFailed as error:
            outcomes[offset] = failure(start + offset, item, error)
    entities = await uow.entities.key_states(ws.id, sorted({w.external_id for _, w in writes}))
    now = core.clock()
    rows: list[tuple[int, EventWrite, EventRecord, dict[str, Any]]] = []
    in_batch: dict[str, str] = {}
    # Repeats of an eventId seen earlier in this chunk are judged against what is
    # stored once the chunk's rows are in (the earlier item may itself conflict).
    repeats: list[tuple[int, EventWrite, str, list[dict[str, Any]], str]] = []
    for offset, write in writes:
        entity = entities.get(write.external_id)
        index = start + offset
        if entity is None or entity[1]:
            code = "entity_not_found" if entity is None else "entity_deleted"
            message = "no entity with this externalId" if entity is None else "this entity was deleted"
            outcomes[offset] = _error(index, write.external_id, code, message, "externalId")
            continue
        source = write.fingerprint_source()
        fingerprint = fingerprints.of(source)
        event_id = write.event_id or new_id("evt")
        warnings = [w.to_wire() for w in write.warnings]
        if event_id in in_batch:
            repeats.append((offset, write, event_id, warnings, fingerprint))
            continue
        in_batch[event_id] = fingerprint
        pii = None
        if write.pii:
            try:
                pii = services.events.seal(ws, write.external_id, entity[0], event_id, write.pii)
            except ApiError as error:
                outcomes[offset] = failure(index, write.fingerprint_source(), error)
                continue
        record = EventRecord(
            event_id=event_id,
            external_id=write.external_id,
            type=write.type,
            data=write.plain,
            pii=pii,
            fingerprint=fingerprint,
            timestamp=write.timestamp,
            ts=write.ts if write.ts is not None else now,
            received_at=now,
            seq=core.seq.next(),
        )
        rows.append((offset, write, record, {"warnings": warnings}))
    inserted = await uow.events.insert_many(ws.id, [r for _, _, r, _ in rows])
    existing = await uow.events.fingerprints(
        ws.id, [r.event_id for _, _, r, _ in rows if r.event_id not in inserted]
    )
    for offset, write, record, extra in rows:
        index = start + offset
        if record.event_id in inserted:
            outcomes[offset] = success(index, write.external_id, extra["warnings"], eventId=record.event_id)
        else:
            stored = existing.get(record.event_id)
            same = stored is not None and fingerprints.same(
                write.fingerprint_source(), stored, computed=record.fingerprint
            )
            outcomes[offset] = _replay(index, write.external_id, record.event_id, same, extra["warnings"])
    for offset, write, event_id, warnings, fingerprint in repeats:
        stored = in_batch[event_id] if event_id in inserted else existing.get(event_id)
        same = stored is not None and fingerprints.same(
            write.fingerprint_source(), stored, computed=fingerprint
        )
        outcomes[offset] = _replay(start + offset, write.external_id, event_id, same, warnings)
    return [o for o in outcomes if o is not None]


def _error(index: int, external_id: str | None, code: str, message: str, path: str) -> dict[str, Any]:
    return {
        "index": index,
        "status": "failed",
        "externalId": external_id,
        "error": {"code": code, "message": message, "path": path},
    }


def _replay(
    index: int, external_id: str, event_id: str, same: bool, warnings: list[dict[str, Any]]
) -> dict[str, Any]:
    if not same:
        outcome = _error(
            index, external_id, "event_id_conflict", "eventId already used for a different event", "eventId"
        )
        outcome["eventId"] = event_id
        return outcome
    outcome = {"index": index, "status": "duplicate", "externalId": external_id, "eventId": event_id}
    if warnings:
        outcome["warnings"] = warnings
    return outcome
