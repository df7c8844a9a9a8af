"""The retention sweep's SQL: bounded deletes, erasure of one entity, tombstones.

Every delete here removes at most ``limit`` rows per call, so each call is one
short transaction however large the backlog. On PostgreSQL a chunk is picked
with ``FOR UPDATE SKIP LOCKED`` and deleted by ``ctid`` (no second index
look-up): several sweeps (several ``serve`` processes, a ``retention run`` from
cron) share the work without waiting on each other or deleting a row twice. On
SQLite, where ``BEGIN IMMEDIATE`` already serialises writers, a chunk is a
``rowid`` sub-select.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.storage import rollups
from onehazel.storage.engine import is_postgres, json_list
from onehazel.storage.tables import entities, entity_keys, job_chunks, settings, states, workspaces

_EVENTS_BEFORE = "workspace_id = :ws AND ts < :before"
_EVENTS_OF_ENTITY = "workspace_id = :ws AND external_id = :ext"
_MIN_TS = -(2**63)


def _pg_events_chunk(where: str) -> sa.TextClause:
    """Delete one chunk of events in timestamp order from ``:after`` on; count and latest ts.
    The same statement appends the deleted rows' negative analytics deltas."""
    return sa.text(
        rollups.pg_uncounting(
            "DELETE FROM events WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM events WHERE {where} AND ts >= :after ORDER BY ts LIMIT :limit "
            "FOR UPDATE SKIP LOCKED)) RETURNING workspace_id, ts, type, data",
            "SELECT count(*), max(ts) FROM doomed",
        )
    )


def _sqlite_events_chunk(where: str) -> sa.TextClause:
    """The rowids of one chunk (counted out of the rollups, then deleted by ``_SQLITE_DELETE``)."""
    return sa.text(f"SELECT rowid FROM events WHERE {where} LIMIT :limit")


_SQLITE_DELETE = sa.text("DELETE FROM events WHERE rowid IN (SELECT value FROM json_each(:ids))")


_CHUNKS = {
    where: (_pg_events_chunk(where), _sqlite_events_chunk(where))
    for where in (_EVENTS_BEFORE, _EVENTS_OF_ENTITY)
}


def _mentions(conn: AsyncConnection, external_ids: list[str]) -> Any:
    """A job_chunks condition: some item outcome names one of ``external_ids``."""
    if is_postgres(conn):
        return sa.text(
            "EXISTS (SELECT 1 FROM json_array_elements(job_chunks.outcomes) AS o "
            "WHERE o->>'externalId' = ANY(:ids))"
        ).bindparams(sa.bindparam("ids", external_ids, type_=sa.ARRAY(sa.Text)))
    return sa.text(
        "EXISTS (SELECT 1 FROM json_each(job_chunks.outcomes) AS o "
        "WHERE json_extract(o.value, '$.externalId') IN :ids)"
    ).bindparams(sa.bindparam("ids", external_ids, expanding=True))


def redact_outcomes(outcomes: list[dict[str, Any]], external_ids: set[str]) -> tuple[list[Any], int]:
    """Outcomes with every item of ``external_ids`` anonymised: externalId null, no eventId.

    The item keeps its index, status, error code and warnings (none of which
    name the entity), so job counters and item paging stay consistent.
    """
    redacted, count = [], 0
    for outcome in outcomes:
        if isinstance(outcome, dict) and outcome.get("externalId") in external_ids:
            outcome = {k: v for k, v in outcome.items() if k != "eventId"} | {"externalId": None}
            count += 1
        redacted.append(outcome)
    return redacted, count


class RetentionRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def event_policies(self) -> list[tuple[str, int]]:
        """(workspace, eventsDays) of every workspace that limits how long events are kept."""
        query = (
            sa.select(settings.c.workspace_id, settings.c.events_days)
            .where(settings.c.events_days.is_not(None))
            .order_by(settings.c.workspace_id)
        )
        return [(row[0], int(row[1])) for row in await self.conn.execute(query)]

    async def delete_events_before(
        self, workspace_id: str, *, before: int, after: int | None, limit: int
    ) -> tuple[int, int | None]:
        """Delete up to ``limit`` of the workspace's events whose timestamp is before ``before``;
        returns (how many, the latest timestamp deleted: pass it as the next ``after``)."""
        params = {"ws": workspace_id, "before": before}
        return await self._delete_events(_EVENTS_BEFORE, params, after=after, limit=limit)

    async def delete_entity_events(
        self, workspace_id: str, external_id: str, *, after: int | None, limit: int
    ) -> tuple[int, int | None]:
        """``delete_events_before`` for one entity's events, whatever their age."""
        params = {"ws": workspace_id, "ext": external_id}
        return await self._delete_events(_EVENTS_OF_ENTITY, params, after=after, limit=limit)

    async def _delete_events(
        self, where: str, params: dict[str, Any], *, after: int | None, limit: int
    ) -> tuple[int, int | None]:
        """One bounded chunk. On PostgreSQL each chunk starts at the latest timestamp the
        previous one deleted (``after``) rather than stepping again over the index entries
        of rows already deleted (dead until vacuumed), which would make the last chunks of
        a large sweep the slowest. SQLite removes index entries at once and needs no hint.
        """
        pg, lite = _CHUNKS[where]
        if not is_postgres(self.conn):
            rowids = list((await self.conn.execute(lite, {**params, "limit": limit})).scalars())
            await rollups.uncount_rowids(self.conn, rowids)
            await self.conn.execute(_SQLITE_DELETE, {"ids": json_list(rowids)})
            return len(rowids), None
        bounds = {"after": _MIN_TS if after is None else after, "limit": limit}
        row = (await self.conn.execute(pg, {**params, **bounds})).one()
        return int(row[0]), row[1]

    async def delete_entity_states(self, workspace_id: str, external_id: str) -> int:
        """An entity has one row per state key, so this is small: one statement."""
        result = await self.conn.execute(
            states.delete().where(states.c.workspace_id == workspace_id, states.c.external_id == external_id)
        )
        return int(result.rowcount)

    async def redact_job_outcomes(self, workspace_id: str, external_ids: list[str]) -> int:
        """Anonymise the item outcomes that name these entities; returns how many items.

        The chunk rows are locked (PostgreSQL) and re-checked, so two sweeps never
        both count one item; outcomes are otherwise never updated after insert.
        """
        query = (
            sa.select(job_chunks.c.job_id, job_chunks.c.start_index, job_chunks.c.outcomes)
            .where(job_chunks.c.workspace_id == workspace_id, _mentions(self.conn, external_ids))
            .order_by(job_chunks.c.job_id, job_chunks.c.start_index)
        )
        if is_postgres(self.conn):
            query = query.with_for_update()
        total = 0
        wanted = set(external_ids)
        for job_id, start_index, outcomes in (await self.conn.execute(query)).all():
            redacted, count = redact_outcomes(list(outcomes), wanted)
            if count:
                total += count
                await self.conn.execute(
                    sa.update(job_chunks)
                    .where(
                        job_chunks.c.workspace_id == workspace_id,
                        job_chunks.c.job_id == job_id,
                        job_chunks.c.start_index == start_index,
                    )
                    .values(outcomes=redacted)
                )
        return total

    async def purge_due(self, *, now: int, limit: int) -> list[tuple[str, str]]:
        """Deleted entities whose purge time has come and that are not yet tombstones."""
        query = (
            sa.select(entities.c.workspace_id, entities.c.external_id)
            .where(
                entities.c.deleted_at.is_not(None),
                entities.c.suppressed_until.is_(None),
                entities.c.purge_after <= now,
            )
            .order_by(entities.c.suppressed_until, entities.c.purge_after)  # index order: LIMIT stops early
            .limit(limit)
        )
        return [(row[0], row[1]) for row in await self.conn.execute(query)]

    async def make_tombstone(self, workspace_id: str, external_id: str, *, suppressed_until: int) -> bool:
        """Erase a deleted entity: destroy its key, strip the row to a tombstone.

        False when it is not (or no longer) a deleted entity awaiting purge, e.g.
        another sweep purged it first.
        """
        where = (
            entities.c.workspace_id == workspace_id,
            entities.c.external_id == external_id,
            entities.c.deleted_at.is_not(None),
            entities.c.suppressed_until.is_(None),
        )
        result = await self.conn.execute(
            sa.update(entities).where(*where).values(attributes={}, pii={}, suppressed_until=suppressed_until)
        )
        if result.rowcount != 1:
            return False
        await self.conn.execute(
            entity_keys.delete().where(
                entity_keys.c.workspace_id == workspace_id, entity_keys.c.external_id == external_id
            )
        )
        return True

    async def tombstones_due(self, *, now: int, limit: int) -> list[tuple[str, str]]:
        """Tombstones whose suppression period is over."""
        query = (
            sa.select(entities.c.workspace_id, entities.c.external_id)
            .where(entities.c.deleted_at.is_not(None), entities.c.suppressed_until <= now)
            .order_by(entities.c.suppressed_until)
            .limit(limit)
        )
        return [(row[0], row[1]) for row in await self.conn.execute(query)]

    async def drop_tombstone(self, workspace_id: str, external_id: str, *, now: int) -> bool:
        """Remove a tombstone whose suppression is over: the externalId may be created anew."""
        result = await self.conn.execute(
            entities.delete().where(
                entities.c.workspace_id == workspace_id,
                entities.c.external_id == external_id,
                entities.c.suppressed_until <= now,
            )
        )
        return bool(result.rowcount == 1)

    async def labels(self, workspace_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """(operator id, mode) of each workspace, for reports."""
        ids = sorted(set(workspace_ids))
        if not ids:
            return {}
        query = sa.select(workspaces.c.id, workspaces.c.operator_id, workspaces.c.mode).where(
            workspaces.c.id.in_(ids)
        )
        return {row[0]: (row[1], row[2]) for row in await self.conn.execute(query)}
