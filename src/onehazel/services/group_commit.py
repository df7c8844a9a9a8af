"""Group commit for single event writes.

Under concurrency most single event writes are the simple case: a live
entity, no PII, a new eventId. Instead of one statement (and, on SQLite, one
fsync) each, the writes that arrive while a flush is running are queued and
inserted together by the next flush, in one statement. Every request still
gets its answer only after the statement holding its event has committed, so
durability is exactly that of a single write; what changes is that the
database and the driver do the per-statement work once per flush.

A write that the flush did not insert (unknown or deleted entity, replayed
eventId, or the same eventId twice in one flush) is answered ``False`` and the
caller takes the full transactional path, which decides 404/410/duplicate/409.
"""

from __future__ import annotations

import asyncio

from onehazel.storage.records import EventRecord
from onehazel.storage.unit_of_work import Store

Pending = tuple[str, EventRecord, "asyncio.Future[bool]"]


class EventGroupCommit:
    def __init__(self, store: Store, *, max_batch: int = 500, max_in_flight: int = 2) -> None:
        self.store = store
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._queue: list[Pending] = []
        self._in_flight = 0

    async def insert_if_live(self, workspace_id: str, record: EventRecord) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((workspace_id, record, future))
        if self._in_flight < self.max_in_flight:
            self._start_flush()
        return await future

    def _start_flush(self) -> None:
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        self._in_flight += 1
        asyncio.ensure_future(self._flush(batch))

    async def _flush(self, batch: list[Pending]) -> None:
        firsts: dict[tuple[str, str], Pending] = {}
        for item in batch:
            key = (item[0], item[1].event_id)
            if key in firsts:
                _settle(item[2], False)  # a concurrent same-eventId write: let the full path judge it
            else:
                firsts[key] = item
        try:
            async with self.store.autocommit(driver_only=True) as uow:
                inserted = await uow.events.insert_many_if_live([(ws, r) for ws, r, _ in firsts.values()])
        except BaseException as exc:
            for _, _, future in firsts.values():
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for key, (_, _, future) in firsts.items():
                _settle(future, key in inserted)
        finally:
            self._in_flight -= 1
            if self._queue and self._in_flight < self.max_in_flight:
                self._start_flush()


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)
