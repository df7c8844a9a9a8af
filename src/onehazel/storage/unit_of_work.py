"""The unit of work: one transaction, committed only when the block succeeds.

Database connectivity failures are translated here, at the edge, into the
contract's ``503 unavailable``: the transaction was rolled back (or never
began), so nothing is half-written and the client may retry.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from onehazel.domain.errors import Unavailable
from onehazel.storage.analytics import AnalyticsRepository
from onehazel.storage.audit import AuditRepository
from onehazel.storage.engine import SQLITE_BUSY_TIMEOUT_MS, in_sqlite_thread
from onehazel.storage.entities import EntityRepository
from onehazel.storage.events import EventRepository
from onehazel.storage.jobs import JobRepository
from onehazel.storage.rate_limits import RateLimitRepository
from onehazel.storage.retention import RetentionRepository
from onehazel.storage.states import StateRepository
from onehazel.storage.workspaces import WorkspaceRepository

T = TypeVar("T")

_UNAVAILABLE = (
    # Raw driver calls (bulk paths) raise asyncpg's own connection errors.
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
    OSError,
    asyncio.TimeoutError,
)


class UnitOfWork:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.workspaces = WorkspaceRepository(conn)
        self.entities = EntityRepository(conn)
        self.events = EventRepository(conn)
        self.states = StateRepository(conn)
        self.jobs = JobRepository(conn)
        self.rate_limits = RateLimitRepository(conn)
        self.retention = RetentionRepository(conn)
        self.audit = AuditRepository(conn)
        self.analytics = AnalyticsRepository(conn)


def _unavailable() -> Unavailable:
    """The contract's 503 for a database out of reach: the transaction was rolled back."""
    return Unavailable(
        "the database is unavailable; nothing was written, retry later", headers={"Retry-After": "1"}
    )


def _in_transaction(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


# How long the checkpoint after a purge waits for other processes' readers (Store.forget_overwritten).
CHECKPOINT_WAIT_MS = 200


class Store:
    """Hands out units of work over one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[UnitOfWork]:
        """A transaction that commits when the block exits normally, else rolls back."""
        try:
            async with self.engine.begin() as conn:
                yield UnitOfWork(conn)
        except _UNAVAILABLE as exc:
            raise _unavailable() from exc

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    async def sqlite_transaction(self, fn: Callable[..., T], *args: Any) -> T:
        """SQLite: ``fn(sqlite3_connection, *args)`` in a transaction of its own (``BEGIN
        IMMEDIATE`` .. ``COMMIT``, rolled back if it raises), in one call into the driver's
        thread: one turn of the connection instead of one per statement (each waits for the
        event loop on its way back). ``fn`` runs the driver's own statements. Errors are the
        driver's (``sqlite3.IntegrityError``...), those of a database out of reach
        ``Unavailable``."""
        try:
            async with self.engine.connect() as conn:  # no transaction of SQLAlchemy's
                driver = (await conn.get_raw_connection()).driver_connection
                return await in_sqlite_thread(driver, _in_transaction, fn, *args)
        except (*_UNAVAILABLE, sqlite3.OperationalError, sqlite3.InterfaceError) as exc:
            raise _unavailable() from exc

    @asynccontextmanager
    async def autocommit(self, *, driver_only: bool = False) -> AsyncIterator[UnitOfWork]:
        """One-statement work without BEGIN/COMMIT round trips (PostgreSQL).

        Each statement commits on its own, so use it only for single atomic
        statements. SQLite (in-process, no round trips) uses a normal transaction.
        ``driver_only``: the work sends its statements to the driver directly (as
        the group commit does), which runs them outside any transaction already, so
        the per-use switch of SQLAlchemy's isolation level is skipped.
        """
        if self.engine.dialect.name != "postgresql":
            async with self.begin() as uow:
                yield uow
            return
        try:
            async with self.engine.connect() as conn:
                yield UnitOfWork(
                    conn if driver_only else await conn.execution_options(isolation_level="AUTOCOMMIT")
                )
        except _UNAVAILABLE as exc:
            raise _unavailable() from exc

    async def forget_overwritten(self) -> bool:
        """SQLite: copy the write-ahead log into the database file and truncate it, so the
        log no longer holds pages as they were before recent deletes (e.g. an erased
        entity's data key); with ``secure_delete`` (``engine.SQLITE_PRAGMAS``) the deleted
        content is zeroed in the database file too. False when a reader in another process
        kept the log from being truncated (its old pages are overwritten later, as the log
        is reused); True on PostgreSQL, where VACUUM and WAL recycling do this (README).

        While it waits for readers the checkpoint holds off every writer, so it waits
        ``CHECKPOINT_WAIT_MS`` at most, not the connections' usual busy timeout."""
        if self.engine.dialect.name != "sqlite":
            return True
        async with self.engine.connect() as conn:  # no transaction: a checkpoint runs outside one
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.execute(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}")
            try:
                cursor = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                busy, _, _ = await cursor.fetchone()
                await cursor.close()
            finally:
                await driver.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        return not busy

    @asynccontextmanager
    async def rehearse(self) -> AsyncIterator[UnitOfWork]:
        """A transaction that is always rolled back: dry runs see exactly what a write would."""
        try:
            async with self.engine.connect() as conn:
                transaction = await conn.begin()
                try:
                    yield UnitOfWork(conn)
                finally:
                    await transaction.rollback()
        except _UNAVAILABLE as exc:
            raise Unavailable(
                "the database is unavailable; retry later", headers={"Retry-After": "1"}
            ) from exc

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except (*_UNAVAILABLE, sa.exc.DBAPIError):
            return False

    async def close(self) -> None:
        await self.engine.dispose()
