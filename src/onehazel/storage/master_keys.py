"""Where master keys are in use, and the compare-and-set writes of a rotation.

Three kinds of stored item carry the id of the master key they were made
under: entity data keys (``entity_keys.data_key``, ``v1.<key id>.…``),
workspace secrets (``workspace_secrets.wrapped``, same format) and the sealed
payloads of unfinished batch jobs (``jobs.payload``, ``v1:<key id>:…``).

Rotation walks each table in primary-key order, a bounded page per read, and
writes each re-wrapped value back only if the stored value is still the one it
read (compare-and-set): a key erased, replaced or a job finished meanwhile is
left as the concurrent writer made it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from onehazel.crypto.blobs import blob_key_id
from onehazel.storage.engine import is_postgres
from onehazel.storage.tables import entity_keys, jobs, workspace_secrets

# "v1:" + a key id of at most 32 characters + ":" fits in the first 40 bytes.
_BLOB_PREFIX = 40
UNKNOWN = "(unrecognised format)"


class MasterKeyRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    def _key_id(self, column: Any) -> Any:
        """SQL for the key id inside a ``v1.<key id>.<rest>`` string."""
        if is_postgres(self.conn):
            return sa.func.split_part(column, ".", 2)
        rest = sa.func.substr(column, 4)
        return sa.func.substr(column, 4, sa.func.instr(rest, ".") - 1)

    async def _count_by_key(self, column: Any) -> Counter[str]:
        key_id = self._key_id(column).label("key_id")
        query = sa.select(key_id, sa.func.count()).group_by(key_id)
        counts: Counter[str] = Counter()
        for kid, count in await self.conn.execute(query):
            counts[str(kid) if kid else UNKNOWN] += int(count)
        return counts

    async def entity_key_usage(self) -> Counter[str]:
        """Entity data keys per master key id (one scan of ``entity_keys``)."""
        return await self._count_by_key(entity_keys.c.data_key)

    async def secret_usage(self) -> Counter[str]:
        return await self._count_by_key(workspace_secrets.c.wrapped)

    async def payload_usage(self) -> Counter[str]:
        """Sealed job payloads per master key id (only unfinished jobs keep one)."""
        query = sa.select(sa.func.substr(jobs.c.payload, 1, _BLOB_PREFIX)).where(jobs.c.payload.is_not(None))
        counts: Counter[str] = Counter()
        for (prefix,) in await self.conn.execute(query):
            counts[blob_key_id(bytes(prefix)) or UNKNOWN] += 1
        return counts

    async def entity_keys_after(
        self, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str, str]]:
        """The next page of (workspace id, externalId, wrapped data key) in key order."""
        query = sa.select(entity_keys.c.workspace_id, entity_keys.c.external_id, entity_keys.c.data_key)
        if after is not None:
            query = query.where(
                sa.tuple_(entity_keys.c.workspace_id, entity_keys.c.external_id) > sa.tuple_(*after)
            )
        query = query.order_by(entity_keys.c.workspace_id, entity_keys.c.external_id).limit(limit)
        return [(r[0], r[1], r[2]) for r in await self.conn.execute(query)]

    async def swap_entity_key(self, workspace_id: str, external_id: str, old: str, new: str) -> bool:
        """Replace the wrapped key only if it is still ``old``; False when someone changed it first."""
        result = await self.conn.execute(
            sa.update(entity_keys)
            .where(
                entity_keys.c.workspace_id == workspace_id,
                entity_keys.c.external_id == external_id,
                entity_keys.c.data_key == old,
            )
            .values(data_key=new)
        )
        return result.rowcount == 1

    async def secrets_after(
        self, after: tuple[str, str, int] | None, limit: int
    ) -> list[tuple[str, str, int, str]]:
        """The next page of (workspace id, purpose, version, wrapped secret) in key order."""
        t = workspace_secrets
        query = sa.select(t.c.workspace_id, t.c.purpose, t.c.version, t.c.wrapped)
        if after is not None:
            query = query.where(sa.tuple_(t.c.workspace_id, t.c.purpose, t.c.version) > sa.tuple_(*after))
        query = query.order_by(t.c.workspace_id, t.c.purpose, t.c.version).limit(limit)
        return [(r[0], r[1], int(r[2]), r[3]) for r in await self.conn.execute(query)]

    async def swap_secret(self, workspace_id: str, purpose: str, version: int, old: str, new: str) -> bool:
        t = workspace_secrets
        result = await self.conn.execute(
            sa.update(t)
            .where(
                t.c.workspace_id == workspace_id,
                t.c.purpose == purpose,
                t.c.version == version,
                t.c.wrapped == old,
            )
            .values(wrapped=new)
        )
        return result.rowcount == 1

    async def payloads_after(
        self, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str, str | None]]:
        """The next page of jobs holding a payload: (workspace id, job id, its master key id)."""
        query = sa.select(
            jobs.c.workspace_id, jobs.c.id, sa.func.substr(jobs.c.payload, 1, _BLOB_PREFIX)
        ).where(jobs.c.payload.is_not(None))
        if after is not None:
            query = query.where(sa.tuple_(jobs.c.workspace_id, jobs.c.id) > sa.tuple_(*after))
        query = query.order_by(jobs.c.workspace_id, jobs.c.id).limit(limit)
        return [(r[0], r[1], blob_key_id(bytes(r[2]))) for r in await self.conn.execute(query)]

    async def payload(self, workspace_id: str, job_id: str) -> bytes | None:
        query = sa.select(jobs.c.payload).where(jobs.c.workspace_id == workspace_id, jobs.c.id == job_id)
        value = (await self.conn.execute(query)).scalar_one_or_none()
        return bytes(value) if value is not None else None

    async def swap_payload(self, workspace_id: str, job_id: str, old: bytes, new: bytes) -> bool:
        """Replace the payload only if it is still ``old`` (a finished job has dropped it)."""
        result = await self.conn.execute(
            sa.update(jobs)
            .where(jobs.c.workspace_id == workspace_id, jobs.c.id == job_id, jobs.c.payload == old)
            .values(payload=new)
        )
        return result.rowcount == 1
