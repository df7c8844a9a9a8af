"""Subject-access export: one entity with all its events and states, PII decrypted, as NDJSON.

Memory stays constant however many events the entity has: events are read
through the events repository's keyset cursor in pages of ``page_size``, each
page in its own short transaction, and each page becomes one chunk of lines
before the next is read. No transaction stays open while the consumer (an HTTP
client, a file) takes its time, so an export never holds back writes or the
retention sweep.

Every line is one JSON object whose ``kind`` says what it is, in this order:

* ``{"kind": "entity", ...}``: the entity exactly as ``GET /entities/{externalId}``
  returns it (externalId, type, attributes with PII decrypted, createdAt,
  updatedAt, version); exactly once, first.
* ``{"kind": "event", ...}``: each event as ``GET .../events`` returns it (eventId,
  type, externalId, data with PII decrypted, timestamp, receivedAt), oldest first
  (by timestamp, then server order).
* ``{"kind": "state", "key", "value", "timestamp", "updatedAt"}``: each state, by key.
* ``{"kind": "end", "externalId", "events": n, "states": n, "exportedAt"}``: last. A
  stream without it was cut short.

The entity is checked before the first line (404, 410, and a 409 for unreadable
PII are ordinary error responses). If it is deleted while its export streams,
the stream ends with ``{"kind": "error", "error": {"code", "message"}}`` instead
of the end line, and nothing of it is sent after the deletion.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from onehazel.domain.errors import ApiError
from onehazel.domain.values import format_timestamp
from onehazel.domain.workspace import Workspace
from onehazel.services.audit import AuditService
from onehazel.services.core import Core
from onehazel.services.entities import entity_to_wire, live_entity
from onehazel.services.events import events_to_wire
from onehazel.services.states import state_to_wire
from onehazel.storage.records import EntityRecord, EventRecord

PAGE_SIZE = 1000
MEDIA_TYPE = "application/x-ndjson"


def _lines(docs: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(doc) + b"\n" for doc in docs)


class ExportStream:
    """The export's NDJSON, one chunk (a page of lines) at a time.

    Iterate it once. ``failure`` is set when the stream ended early with an
    error line (the entity was deleted meanwhile); ``events`` and ``states``
    count the lines sent so far.
    """

    def __init__(self, exports: ExportService, ws: Workspace, entity: dict[str, Any]) -> None:
        self._exports = exports
        self._ws = ws
        self._entity = entity
        self.external_id: str = entity["externalId"]
        self.failure: ApiError | None = None
        self.events = 0
        self.states = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        yield _lines([{"kind": "entity", **self._entity}])
        after: tuple[int, int, str] | None = None
        while True:
            try:
                docs, last = await self._exports.event_page(self._ws, self.external_id, after=after)
            except ApiError as exc:
                yield self._fail(exc)
                return
            if docs:
                self.events += len(docs)
                yield _lines([{"kind": "event", **doc} for doc in docs])
            if last is None:
                break
            after = (last.ts, last.seq, last.event_id)
        try:
            states = await self._exports.states(self._ws, self.external_id)
        except ApiError as exc:
            yield self._fail(exc)
            return
        self.states = len(states)
        end = {
            "kind": "end",
            "externalId": self.external_id,
            "events": self.events,
            "states": self.states,
            "exportedAt": format_timestamp(self._exports.core.clock()),
        }
        yield _lines([*({"kind": "state", **s} for s in states), end])

    def _fail(self, exc: ApiError) -> bytes:
        self.failure = exc
        return _lines([{"kind": "error", "error": {"code": exc.code, "message": exc.message}}])


class ExportService:
    def __init__(self, core: Core, *, page_size: int = PAGE_SIZE) -> None:
        self.core = core
        self.page_size = page_size
        self.audit = AuditService(core)

    async def start(self, ws: Workspace, external_id: str) -> ExportStream:
        """Check the entity and record the export in the audit log (as ``ws.key_id``).

        404/410/409 are raised here, before any line exists; the returned stream
        reads everything else lazily.
        """
        async with self.core.store.begin() as uow:
            record = await live_entity(uow, ws, external_id)
            entity = self._entity(ws, record)
            await self.audit.record_in(
                uow, workspace_id=ws.id, action="entity.export", target=external_id, actor=ws.key_id
            )
        return ExportStream(self, ws, entity)

    def _entity(self, ws: Workspace, record: EntityRecord) -> dict[str, Any]:
        cipher = self.core.cipher(ws, record.external_id, record.data_key)
        return entity_to_wire(record, cipher.decrypt_fields("attributes", record.pii))

    async def event_page(
        self, ws: Workspace, external_id: str, *, after: tuple[int, int, str] | None
    ) -> tuple[list[dict[str, Any]], EventRecord | None]:
        """The next page of events after the sort key ``after``, decrypted, in its own
        transaction; and the last row when more may follow (None at the end)."""
        async with self.core.store.begin() as uow:
            entity = await live_entity(uow, ws, external_id)
            rows = await uow.events.list(
                ws.id,
                external_id,
                type_=None,
                from_ts=None,
                to_ts=None,
                descending=False,
                after=after,
                limit=self.page_size,
            )
        last = rows[-1] if len(rows) == self.page_size else None
        return events_to_wire(self.core, ws, entity, rows), last

    async def states(self, ws: Workspace, external_id: str) -> list[dict[str, Any]]:
        """The entity's states by key (at most one per state key of the template)."""
        async with self.core.store.begin() as uow:
            await live_entity(uow, ws, external_id)
            records = await uow.states.list(ws.id, external_id)
        return [{"key": r.key, **state_to_wire(r)} for r in records]
