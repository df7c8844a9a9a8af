"""Events: append with per-workspace eventId idempotency; list one entity's log."""

from __future__ import annotations

from typing import Any

from onehazel.crypto.fingerprints import Fingerprinter
from onehazel.domain.cursors import decode_cursor, encode_cursor
from onehazel.domain.errors import EventIdConflict
from onehazel.domain.validation import EventWrite, validate_event
from onehazel.domain.values import format_timestamp
from onehazel.domain.workspace import Workspace
from onehazel.services.core import Core
from onehazel.services.entities import live_entity
from onehazel.services.group_commit import EventGroupCommit
from onehazel.services.ids import new_id
from onehazel.storage.records import EntityRecord, EventRecord
from onehazel.storage.unit_of_work import UnitOfWork


def event_to_wire(record: EventRecord, pii: dict[str, Any]) -> dict[str, Any]:
    return {
        "eventId": record.event_id,
        "type": record.type,
        "externalId": record.external_id,
        "data": {**record.data, **pii},
        "timestamp": record.timestamp or format_timestamp(record.ts),
        "receivedAt": format_timestamp(record.received_at),
    }


def _pii_path(event_id: str) -> str:
    return f"events/{event_id}/data"


def events_to_wire(
    core: Core, ws: Workspace, entity: EntityRecord, rows: list[EventRecord]
) -> list[dict[str, Any]]:
    """One entity's events as the wire shows them, PII decrypted (single-entity reads, export)."""
    cipher = None
    data = []
    for row in rows:
        pii: dict[str, Any] = {}
        if row.pii:
            if cipher is None:
                cipher = core.cipher(ws, entity.external_id, entity.data_key)
            pii = cipher.decrypt_fields(_pii_path(row.event_id), row.pii)
        data.append(event_to_wire(row, pii))
    return data


class EventService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.group_commit = EventGroupCommit(core.store)

    async def record(self, ws: Workspace, body: Any, *, clean: bool = False) -> tuple[dict[str, Any], bool]:
        """Append one event; returns (event, created). A replay returns the stored event.

        The common case (no PII, live entity, new eventId) is an insert-if-live
        statement, shared with the writes arriving at the same time (group
        commit). Anything else (PII to seal, 404/410, a replay or conflict) takes
        the full transactional path. ``clean``: no string in ``body`` holds NUL or a
        lone surrogate (``read_json`` refused those), as ``validate_event`` takes it.
        """
        write = validate_event(await self.core.template_of(ws), body, clean=clean)
        fingerprints = await self.core.fingerprinter(ws)
        if not write.pii:
            record = self._record(write, fingerprints, pii=None)
            if await self.group_commit.insert_if_live(ws.id, record):
                return self._wire(record, {}, write), True
        async with self.core.store.begin() as uow:
            return await self.record_in(uow, ws, write, fingerprints)

    async def record_in(
        self, uow: UnitOfWork, ws: Workspace, write: EventWrite, fingerprints: Fingerprinter
    ) -> tuple[dict[str, Any], bool]:
        """Append inside the caller's transaction; the dedup record is the event row itself.

        ``fingerprints`` comes from ``core.fingerprinter(ws)``, fetched before the transaction.
        """
        entity = await live_entity(uow, ws, write.external_id)
        event_id = write.event_id or new_id("evt")
        pii = self.seal(ws, entity.external_id, entity.data_key, event_id, write.pii) if write.pii else None
        record = self._record(write, fingerprints, pii=pii, event_id=event_id)
        if await uow.events.insert(ws.id, record):
            return self._wire(record, write.pii, write), True
        stored = await uow.events.get(ws.id, record.event_id)
        assert stored is not None
        if not fingerprints.same(write.fingerprint_source(), stored.fingerprint, computed=record.fingerprint):
            raise EventIdConflict("this eventId was already used for a different event")
        wire = self._wire(stored, write.pii, write)
        wire["duplicate"] = True
        return wire, False

    def _record(
        self,
        write: EventWrite,
        fingerprints: Fingerprinter,
        *,
        pii: dict[str, str] | None,
        event_id: str | None = None,
    ) -> EventRecord:
        now = self.core.clock()
        return EventRecord(
            event_id=event_id or write.event_id or new_id("evt"),
            external_id=write.external_id,
            type=write.type,
            data=write.plain,
            pii=pii,
            fingerprint=fingerprints.of(write.fingerprint_source()),
            timestamp=write.timestamp,
            ts=write.ts if write.ts is not None else now,
            received_at=now,
            seq=self.core.seq.next(),
        )

    def seal(
        self, ws: Workspace, external_id: str, data_key: str | None, event_id: str, pii: dict[str, Any]
    ) -> dict[str, str]:
        """An event's PII sealed under its entity's data key (single writes and batch chunks)."""
        cipher = self.core.cipher(ws, external_id, data_key)
        return cipher.encrypt_fields(_pii_path(event_id), pii)

    @staticmethod
    def _wire(record: EventRecord, pii: dict[str, Any], write: EventWrite) -> dict[str, Any]:
        wire = event_to_wire(record, pii)
        if write.warnings:
            wire["warnings"] = [w.to_wire() for w in write.warnings]
        return wire

    async def list(
        self,
        ws: Workspace,
        external_id: str,
        *,
        type_: str | None,
        from_ts: int | None,
        to_ts: int | None,
        descending: bool,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        kind = "events-desc" if descending else "events-asc"
        after = None
        if cursor:
            ts, seq, event_id = decode_cursor(kind, cursor, (int, int, str))
            after = (ts, seq, event_id)
        async with self.core.store.begin() as uow:
            entity = await live_entity(uow, ws, external_id)
            rows = await uow.events.list(
                ws.id,
                external_id,
                type_=type_,
                from_ts=from_ts,
                to_ts=to_ts,
                descending=descending,
                after=after,
                limit=limit + 1,
            )
        page = rows[:limit]
        data = events_to_wire(self.core, ws, entity, page)
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]
            next_cursor = encode_cursor(kind, [last.ts, last.seq, last.event_id])
        return {"data": data, "nextCursor": next_cursor}
