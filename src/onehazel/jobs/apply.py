"""Applying batch items, chunk by chunk, inside the caller's transaction.

Each item succeeds or fails on its own with the same validation as the single
endpoints. The functions only touch the unit of work they are given: the
worker commits a chunk's effects together with the job's progress and the
item outcomes (so a crash can neither lose nor double-apply a chunk), and dry
runs call the very same code in a transaction that is rolled back.

Events take a bulk path (one entity look-up and one bulk write per chunk: on
PostgreSQL a COPY, falling back to INSERT .. ON CONFLICT DO NOTHING when an eventId
is stored already; on SQLite INSERT OR IGNORE); entities and states go item by item through
the single-write services, which keeps merge and last-writer-wins semantics
identical to the single endpoints.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from onehazel.crypto.fingerprints import Fingerprinter
from onehazel.domain.errors import ApiError, Detail, ValidationFailed
from onehazel.domain.templates import Template
from onehazel.domain.validation import (
    EventWrite,
    event_fast,
    validate_entity,
    validate_event_fully,
    validate_state,
)
from onehazel.domain.values import safe_text
from onehazel.domain.workspace import Workspace
from onehazel.services.ids import new_id
from onehazel.storage.events import EventColumns
from onehazel.storage.rollups import DeltaCounter
from onehazel.storage.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from onehazel.services.container import Services

KINDS = ("entities", "events", "states")
# Events: a whole 5000-event batch per transaction (fewer commits/fsyncs; a crash
# redoes at most one batch). Entities and states go item by item, so smaller.
CHUNK_SIZE = {"entities": 250, "events": 5000, "states": 250}
# Event items checked between two yields to the event loop when preparing ahead.
PREPARE_SLICE = 100
# Client eventIds probed to recognise a re-sent chunk before writing it.
REPLAY_SAMPLE = 4


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
    prepared: PreparedEvents | None = None,
    writing: Callable[[bool], None] | None = None,
    reread: Callable[[int], Any] | None = None,
) -> list[dict[str, Any]]:
    """Apply ``items`` (indexes ``start``..) and return one outcome per item, in order.

    ``fingerprints`` (``core.fingerprinter(ws)``) must be fetched before ``uow`` opened.
    ``prepared`` may carry the events' checks, done ahead (:func:`prepare_events_async`);
    it is used only if made for these items with this template and secret. ``writing`` is
    called once the long part of the events' bulk statements starts (the database is busy
    for a while: the look-up of a re-sent chunk, or the write: as the COPY starts on
    PostgreSQL, before the statements on SQLite), with whether the chunk looks like a re-send.
    ``reread``: events ``items`` came from orjson, see :func:`prepare_events`.
    """
    if kind == "events":
        if prepared is None or not prepared.fits(template, fingerprints, start, len(items)):
            prepared = prepare_events(template, items, start, fingerprints, reread=reread)
        return await _apply_events(services, uow, ws, prepared, writing)
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


@dataclass(slots=True)
class _Checked:
    """One valid event item: everything about it that needs no database."""

    offset: int
    write: EventWrite
    event_id: str
    fingerprint: str
    data: str
    """The plain (non-PII) data as JSON text, ready for the INSERT."""
    warnings: list[dict[str, str]]
    stored: dict[str, Any]
    """Its outcome once its row is written (``success``)."""


@dataclass
class PreparedEvents:
    """A chunk of event items validated, given eventIds and fingerprinted.

    Pure CPU work, so the worker can do it for the next chunk while the
    database writes the current one. It is only used with the template and
    fingerprint secret it was made with (:meth:`fits`).
    """

    template: Template
    fingerprints: Fingerprinter
    start: int
    count: int
    clean: bool = False
    """No string in the items can hold NUL or a lone surrogate (``strings_are_clean``)."""
    failed: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    checked: list[_Checked] = field(default_factory=list)
    rows: EventColumns | None = field(default_factory=lambda: EventColumns(counted=DeltaCounter()))
    """The rows of every checked item, built (and counted for analytics) ahead, for the
    usual chunk; None when the chunk needs the item-by-item path: an item with PII (sealed
    under its entity's key, read in the transaction), without a timestamp (stored at the
    time of writing) or with an eventId used twice in the chunk."""
    external_ids: set[str] = field(default_factory=set)
    """The externalIds of every checked item."""
    event_ids: set[str] = field(default_factory=set)
    """The eventIds of the rows built ahead."""
    pii: bool = False
    """Some checked item has PII."""
    staged: Any = None
    """``rows`` made ready for the worker's database, by the worker (``Worker._stage``)."""
    reread: Callable[[int], Any] | None = None
    """Set when the items came from orjson: item ``i`` (a job index) as the exact parser
    reads it, for any item the validation's fast path declines (``event_fast``)."""

    def fits(self, template: Template, fingerprints: Fingerprinter, start: int, count: int) -> bool:
        return (
            self.template is template
            and self.fingerprints.version == fingerprints.version
            and self.start == start
            and self.count == count
        )


def _check_steps(prepared: PreparedEvents, items: list[Any]) -> Iterator[None]:
    """Fill ``prepared`` from ``items``, pausing (yield) every ``PREPARE_SLICE`` items.

    The batch path's hottest loop (5000 items a chunk): names are bound once, and an item's
    outcome and row are built inline rather than through ``success`` and ``_append``."""
    template, fingerprints, start = prepared.template, prepared.fingerprints, prepared.start
    clean, failed, checked, reread = prepared.clean, prepared.failed, prepared.checked, prepared.reread
    dumps, fingerprint_of, add_checked = orjson.dumps, fingerprints.of, checked.append
    rows = prepared.rows  # the rows built ahead, until an item needs the one-by-one path
    event_ids, add_named = prepared.event_ids, prepared.external_ids.add
    counted = rows.counted if rows is not None else None
    if counted is None:  # rows built ahead come with their analytics counter, or not at all
        rows = prepared.rows = None
    if rows is not None:
        add_event_id, add_external_id, add_type = (
            rows.event_id.append,
            rows.external_id.append,
            rows.type.append,
        )
        add_data, add_pii, add_fingerprint = rows.data.append, rows.pii.append, rows.fingerprint.append
        add_timestamp, add_ts, add_members = rows.timestamp.append, rows.ts.append, rows.members.append
    for offset, item in enumerate(items):
        if offset % PREPARE_SLICE == PREPARE_SLICE - 1:
            yield
        try:
            write = event_fast(template, item, clean)
            if write is None:  # not the common case: the full validator, on the exact parse
                if reread is not None:
                    item = reread(start + offset)
                write = validate_event_fully(template, item)
        except ValidationFailed as error:
            failed.append((offset, failure(start + offset, item, error)))
            continue
        event_id = write.event_id or new_id("evt")
        external_id = write.external_id
        stored = {
            "index": start + offset,
            "status": "succeeded",
            "externalId": external_id,
            "eventId": event_id,
        }
        warnings: list[dict[str, str]] = []
        if write.warnings:
            warnings = [w.to_wire() for w in write.warnings]
            stored["warnings"] = warnings
        fingerprint = fingerprint_of(write.fingerprint_source())
        data = write.plain_text or dumps(write.plain).decode()
        add_checked(_Checked(offset, write, event_id, fingerprint, data, warnings, stored))
        add_named(external_id)
        if write.pii:
            prepared.pii = True
        if rows is None or counted is None:
            continue
        ts = write.ts
        if write.pii or ts is None or event_id in event_ids:  # see PreparedEvents.rows
            rows = prepared.rows = None
            continue
        event_ids.add(event_id)
        add_event_id(event_id)
        add_external_id(external_id)
        add_type(write.type)
        add_data(data)
        add_pii(None)
        add_fingerprint(fingerprint)
        add_timestamp(write.timestamp)
        add_ts(ts)
        add_members(write.plain)
        counted.add(write.type, ts, write.plain)


def _append(rows: EventColumns, item: _Checked, pii: str | None, ts: int) -> None:
    """Append ``item``'s row: its sealed ``pii`` (JSON text, or None) and its ``ts``."""
    write = item.write
    rows.event_id.append(item.event_id)
    rows.external_id.append(write.external_id)
    rows.type.append(write.type)
    rows.data.append(item.data)
    rows.pii.append(pii)
    rows.fingerprint.append(item.fingerprint)
    rows.timestamp.append(write.timestamp)
    rows.ts.append(ts)
    rows.members.append(write.plain)


def prepare_events(
    template: Template,
    items: list[Any],
    start: int,
    fingerprints: Fingerprinter,
    *,
    clean: bool = False,
    reread: Callable[[int], Any] | None = None,
) -> PreparedEvents:
    """Check ``items`` (job indexes ``start``..). ``reread``: they came from orjson (not
    exact), and ``reread(i)`` gives item ``i`` exactly (``worker.Items.exact``)."""
    prepared = PreparedEvents(template, fingerprints, start, len(items), clean, reread=reread)
    for _ in _check_steps(prepared, items):
        pass
    return prepared


async def prepare_events_async(
    template: Template,
    items: list[Any],
    start: int,
    fingerprints: Fingerprinter,
    *,
    clean: bool = False,
    rows: bool = True,
    reread: Callable[[int], Any] | None = None,
    gate: asyncio.Event | None = None,
) -> PreparedEvents:
    """:func:`prepare_events` in slices, letting the event loop run between them (HTTP
    requests, the database round trips of the chunk being written). Between slices it
    also waits while ``gate`` (if given) is closed."""
    prepared = PreparedEvents(template, fingerprints, start, len(items), clean, reread=reread)
    if not rows:  # e.g. a re-send, whose rows are stored already: not worth building
        prepared.rows = None
    for _ in _check_steps(prepared, items):
        if gate is not None and not gate.is_set():
            await gate.wait()
        else:
            await asyncio.sleep(0)
    return prepared


async def _apply_events(
    services: Services,
    uow: UnitOfWork,
    ws: Workspace,
    prepared: PreparedEvents,
    writing: Callable[[bool], None] | None = None,
) -> list[dict[str, Any]]:
    core = services.core
    outcomes = _failed_only(prepared)
    built = prepared.rows
    if built is not None and not await uow.entities.all_live(ws.id, prepared.external_ids):
        built = None
    now = core.clock()
    repeats: list[_Checked] = []
    if built is not None:  # the usual chunk: its rows were built ahead, every entity is live
        written, sealed_pii, in_batch = prepared.checked, None, None
    else:
        entities = await uow.entities.key_states(ws.id, sorted(prepared.external_ids))
        written, sealed_pii, in_batch, repeats = _one_by_one(services, ws, prepared, entities, outcomes)
    # A re-sent chunk (its first client eventIds are stored already) is looked up first and
    # only its new events are written; otherwise insert first and look up what conflicted.
    existing: dict[str, str] = {}
    replayed = await _looks_replayed(uow, ws, written)
    started = None
    if writing is not None:
        if replayed:
            writing(True)  # what follows is the long part: the bulk look-up
        else:
            started = functools.partial(writing, False)  # when the bulk write's long part starts
    if replayed:
        existing = await uow.events.fingerprints(ws.id, [c.event_id for c in written])
    rows = built if built is not None and not existing else _rows(written, sealed_pii, existing, now)
    stamp(core, rows, now)
    inserted = await uow.events.insert_many(ws.id, rows, started=started)
    return await _settle(uow, ws, prepared, outcomes, rows, inserted, existing, (written, repeats, in_batch))


def _failed_only(prepared: PreparedEvents) -> list[dict[str, Any] | None]:
    """A chunk's outcomes so far: those of the items its checks failed, the rest None."""
    outcomes: list[dict[str, Any] | None] = [None] * prepared.count
    for offset, outcome in prepared.failed:
        outcomes[offset] = outcome
    return outcomes


def stamp(core: Any, rows: EventColumns, now: int) -> None:
    """Give ``rows`` their time of receipt and server order."""
    rows.received_at = [now] * len(rows.event_id)
    rows.seq = list(core.seq.take(len(rows.event_id)))


async def _settle(
    uow: UnitOfWork,
    ws: Workspace,
    prepared: PreparedEvents,
    outcomes: list[dict[str, Any] | None],
    rows: EventColumns,
    inserted: set[str],
    existing: dict[str, str],
    items: tuple[list[_Checked], list[_Checked], dict[str, str] | None],
) -> list[dict[str, Any]]:
    """The outcomes once ``rows`` were written and the eventIds ``inserted`` are known: each
    of the ``written`` items succeeded, or is judged against the stored event (looked up now
    unless in ``existing``); each of the ``repeats`` (a repeated eventId in the chunk) against
    the first (``in_batch``: the fingerprints of the chunk's eventIds) or the stored one."""
    written, repeats, in_batch = items
    start, fingerprints = prepared.start, prepared.fingerprints
    raced = [event_id for event_id in rows.event_id if event_id not in inserted]
    existing.update(await uow.events.fingerprints(ws.id, raced))
    for item in written:
        if item.event_id in inserted:
            outcomes[item.offset] = item.stored
        else:
            outcomes[item.offset] = _judge_replay(
                start + item.offset, item, existing.get(item.event_id), fingerprints
            )
    for item in repeats:
        assert in_batch is not None
        stored = in_batch[item.event_id] if item.event_id in inserted else existing.get(item.event_id)
        outcomes[item.offset] = _judge_replay(start + item.offset, item, stored, fingerprints)
    return [o for o in outcomes if o is not None]


@dataclass
class Planned:
    """An events chunk whose outcomes are known before its write (the SQLite chunk path,
    ``storage/sqlite_chunk.py``): every entity is live and either no row of it is stored
    (its rows were built ahead: ``PreparedEvents.rows``) or every one is (a re-send)."""

    prepared: PreparedEvents
    rows: EventColumns | None
    """The rows to write (``PreparedEvents.rows``); None for a re-send."""
    outcomes: list[dict[str, Any]]
    """Assuming every row goes in."""

    async def settle(self, uow: UnitOfWork, ws: Workspace, added: int) -> list[dict[str, Any]]:
        """The outcomes when only ``added`` of the rows went in (by ``sqlite_insert_rows``,
        in ``uow``'s transaction: an eventId was stored meanwhile, by another process)."""
        assert self.rows is not None
        prepared = self.prepared
        inserted = await uow.events.settle_sqlite_insert(ws.id, self.rows, added, counted=True)
        outcomes = _failed_only(prepared)
        return await _settle(
            uow, ws, prepared, outcomes, self.rows, inserted, {}, (prepared.checked, [], None)
        )


def plan(prepared: PreparedEvents, replayed: bool, existing: dict[str, str] | None) -> Planned | None:
    """The chunk's outcomes before its write, when every entity it names is live (checked by
    the caller) and it is the usual new chunk (``replayed`` False, rows built ahead) or a
    re-send of stored events only (``existing``: their stored fingerprints; no PII, whose
    sealing may fail an item). None for any other chunk: the generic path applies it."""
    outcomes = _failed_only(prepared)
    start, fingerprints = prepared.start, prepared.fingerprints
    rows = None
    if not replayed:
        rows = prepared.rows  # given receivedAt and seq at the write (Worker._sqlite_chunk)
        if rows is None:
            return None
        for item in prepared.checked:
            outcomes[item.offset] = item.stored
    else:
        if existing is None or prepared.pii:
            return None
        for item in prepared.checked:
            stored = existing.get(item.event_id)
            if stored is None:
                return None  # a new event in a re-send
            outcomes[item.offset] = _judge_replay(start + item.offset, item, stored, fingerprints)
    return Planned(prepared, rows, [o for o in outcomes if o is not None])


def replay_sample(prepared: PreparedEvents) -> list[str]:
    """The first few client-chosen eventIds of a chunk :func:`plan` may take."""
    return _sample(prepared.checked)


def _sample(written: list[_Checked]) -> list[str]:
    """The first few client-chosen eventIds of ``written``: all stored, the chunk is a re-send."""
    return [c.event_id for c in written[:REPLAY_SAMPLE] if c.write.event_id is not None]


def _one_by_one(
    services: Services,
    ws: Workspace,
    prepared: PreparedEvents,
    entities: dict[str, tuple[str | None, bool]],
    outcomes: list[dict[str, Any] | None],
) -> tuple[list[_Checked], list[str | None], dict[str, str], list[_Checked]]:
    """The items to write, their sealed PII, the chunk's eventIds and the in-chunk repeats,
    item by item: failing those of unknown or deleted entities (into ``outcomes``)."""
    start = prepared.start
    written: list[_Checked] = []
    sealed_pii: list[str | None] = []
    in_batch: dict[str, str] = {}
    # Repeats of an eventId seen earlier in this chunk are judged against what is
    # stored once the chunk's rows are in (the earlier item may itself conflict).
    repeats: list[_Checked] = []
    for item in prepared.checked:
        write, offset = item.write, item.offset
        entity = entities.get(write.external_id)
        if entity is None or entity[1]:
            code = "entity_not_found" if entity is None else "entity_deleted"
            message = "no entity with this externalId" if entity is None else "this entity was deleted"
            outcomes[offset] = _error(start + offset, write.external_id, code, message, "externalId")
            continue
        if item.event_id in in_batch:
            repeats.append(item)
            continue
        pii = None
        if write.pii:
            try:
                sealed = services.events.seal(ws, write.external_id, entity[0], item.event_id, write.pii)
            except ApiError as error:
                outcomes[offset] = failure(start + offset, write.fingerprint_source(), error)
                continue
            pii = orjson.dumps(sealed).decode()
        in_batch[item.event_id] = item.fingerprint
        written.append(item)
        sealed_pii.append(pii)
    return written, sealed_pii, in_batch, repeats


def _rows(
    written: list[_Checked], sealed_pii: list[str | None] | None, existing: dict[str, str], now: int
) -> EventColumns:
    """The rows of the ``written`` items not already stored (``existing``), built now."""
    rows = EventColumns()
    for n, item in enumerate(written):
        if item.event_id not in existing:
            ts = item.write.ts
            _append(
                rows, item, sealed_pii[n] if sealed_pii is not None else None, ts if ts is not None else now
            )
    return rows


async def _looks_replayed(uow: UnitOfWork, ws: Workspace, written: list[_Checked]) -> bool:
    """Are the first few client-chosen eventIds of the chunk stored already (a re-send)?"""
    sample = _sample(written)
    return bool(sample) and len(await uow.events.fingerprints(ws.id, sample)) == len(sample)


def _judge_replay(
    index: int, item: _Checked, stored: str | None, fingerprints: Fingerprinter
) -> dict[str, Any]:
    write = item.write
    same = stored is not None and fingerprints.same(
        write.fingerprint_source(), stored, computed=item.fingerprint
    )
    return _replay(index, write.external_id, item.event_id, same, item.warnings)


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
