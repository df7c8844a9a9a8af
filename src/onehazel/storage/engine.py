"""Engines for SQLite (embedded default) and PostgreSQL, and the few dialect differences.

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit survives power
loss) and every transaction starts with ``BEGIN IMMEDIATE``: a deferred
transaction that reads and then writes can fail at once with SQLITE_BUSY when
another connection wrote in between, while an immediate one waits its turn
(``busy_timeout``). One pooled connection serialises writers inside a process.
"""

from __future__ import annotations

import decimal
import functools
import itertools
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.sqlite import pysqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import visitors
from sqlalchemy.util import await_

T = TypeVar("T")


class DatabaseUrlError(ValueError):
    """The database URL is not one this server understands."""


def async_url(url: str) -> str:
    """Map the user-facing ``sqlite:///`` / ``postgresql://`` URLs onto async drivers."""
    for prefix, driver in (
        ("sqlite:///", "sqlite+aiosqlite:///"),
        ("sqlite+aiosqlite:///", "sqlite+aiosqlite:///"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql+asyncpg://", "postgresql+asyncpg://"),
    ):
        if url.startswith(prefix):
            return driver + url[len(prefix) :]
    raise DatabaseUrlError(
        f"database URL must start with sqlite:/// or postgresql:// (got {url.split(':', 1)[0]!r})"
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loads(value: Any) -> Any:
    """Parse a stored JSON document.

    SQLite gives a column declared ``JSON`` NUMERIC affinity, so a top-level JSON
    number (a state such as ``risk_score``) is stored as an INTEGER or REAL and
    comes back already decoded.
    """
    if isinstance(value, int | float):
        return value
    return orjson.loads(value)


def create_engine(url: str, *, pool_size: int = 40, null_pool: bool = False) -> AsyncEngine:
    target = async_url(url)
    kwargs: dict[str, Any] = {"json_serializer": _dumps, "json_deserializer": _loads}
    if null_pool:
        kwargs["poolclass"] = NullPool
    if target.startswith("sqlite"):
        if not null_pool:
            kwargs.update(pool_size=1, max_overflow=0, pool_timeout=60)
        engine = create_async_engine(target, **kwargs)
        _configure_sqlite(engine)
        return engine
    if not null_pool:
        # Sized for the concurrency one API process sees: connections beyond the
        # pool are closed when returned, and re-opening them costs a backend fork.
        kwargs.update(pool_size=pool_size, max_overflow=pool_size // 4, pool_pre_ping=False)
    return create_async_engine(target, **kwargs)


# Pages (4 KB) the write-ahead log may hold before a commit copies them back into the database
# file (SQLite's default: 1000). That checkpoint runs inside the COMMIT, on the one connection
# every write goes through: with 1000 pages it came every other 5000-event batch chunk and made
# the chunk's commit 27-36 ms; with 8192 it comes ~8 times less often and copies a page changed
# by several chunks once. The log file grows to ~32 MB before it starts over. (A second
# connection checkpointing in a thread after every commit was measured too: no faster.)
SQLITE_AUTOCHECKPOINT_PAGES = 8192
# How long a connection waits for another's write lock before SQLITE_BUSY.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Every SQLite connection's settings (the batch bench's raw rate uses the same).
SQLITE_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=FULL",
    f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "foreign_keys=ON",
    f"wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}",
    # Deleted content is overwritten with zeros, not left in free pages (builds differ in
    # their default): an erased entity's key leaves the file (Store.forget_overwritten).
    "secure_delete=ON",
)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        for pragma in SQLITE_PRAGMAS:
            cur.execute(f"PRAGMA {pragma}")
        cur.close()
        register_sqlite_functions(dbapi_conn)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


_DECIMAL_TEXT = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
# Exact sums far beyond any amount the API accepts (40 digits each), like PostgreSQL numeric.
DECIMAL_CONTEXT = decimal.Context(prec=1000, traps=[decimal.InvalidOperation, decimal.Inexact])


def is_decimal_text(value: object) -> bool:
    """What both databases treat as a summable amount: a plain decimal string (see analytics)."""
    return isinstance(value, str) and _DECIMAL_TEXT.match(value) is not None


class DecimalSum:
    """SQLite aggregate ``decimal_sum(text)``: the exact sum, rendered as PostgreSQL's numeric would.

    The result keeps the largest scale of its inputs (``"0.30" + "0.2"`` is ``"0.50"``) and
    never uses an exponent. Non-decimal inputs are skipped; no input gives NULL.
    """

    def __init__(self) -> None:
        self.total: decimal.Decimal | None = None

    def step(self, value: object) -> None:
        if not is_decimal_text(value):
            return
        amount = decimal.Decimal(str(value))
        self.total = amount if self.total is None else DECIMAL_CONTEXT.add(self.total, amount)

    def finalize(self) -> str | None:
        if self.total is None:
            return None
        total = self.total.copy_abs() if self.total.is_zero() else self.total
        return format(total, "f")


def register_sqlite_functions(dbapi_conn: Any) -> None:
    """Register the analytics functions on a new SQLite connection (in its driver thread)."""
    dbapi_conn.create_function("onehazel_is_decimal", 1, is_decimal_text, deterministic=True)
    await_(in_sqlite_thread(dbapi_conn.driver_connection, _create_aggregate, "decimal_sum", 1, DecimalSum))


def _create_aggregate(conn: sqlite3.Connection, name: str, arity: int, aggregate: Any) -> None:
    conn.create_aggregate(name, arity, aggregate)


_SQLITE_NAMED = pysqlite.dialect(paramstyle="named")


@functools.cache
def sqlite_sql(statement: Any) -> tuple[str, dict[str, Any]]:
    """``statement`` (a module-level constant: the result is cached) as SQLite SQL with named
    parameters, for the driver's own ``execute`` (``in_sqlite_thread``), and the values of the
    parameters it fixes itself (constants, expanded ``IN`` lists): the caller's parameters
    (the ``bindparam`` names it leaves open) are added to them. Values are not converted: JSON
    columns take JSON text."""
    names = {b.key for b in visitors.iterate(statement) if isinstance(b, sa.BindParameter) and b.required}
    if isinstance(statement, sa.sql.dml.UpdateBase):  # no expanding IN in these: compiled as is
        compiled = statement.compile(dialect=_SQLITE_NAMED)
        fixed = compiled.construct_params(_check=False)
        sql = str(compiled)
    else:
        placeholders = statement.params({name: None for name in names})
        expanded = placeholders.compile(dialect=_SQLITE_NAMED).construct_expanded_state()
        fixed, sql = expanded.parameters, expanded.statement
    return sql, {key: value for key, value in fixed.items() if key not in names}


async def in_sqlite_thread(driver: Any, fn: Callable[..., T], *args: Any) -> T:
    """``fn(sqlite3_connection, *args)`` run in the aiosqlite connection's own thread, in one
    trip: several statements, or one multi-row statement, without a hand-off per row.

    aiosqlite has no public call for this; ``Connection._execute`` and ``_conn`` are the ones
    it uses itself (present from 0.20 to 0.22), so pyproject.toml bounds aiosqlite below 0.23
    and this is the only place that touches them."""
    result: T = await driver._execute(fn, driver._conn, *args)
    return result


def is_postgres(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


_CUSTOM_PLANS = "onehazel.custom_plans"  # key in the connection's info: the transaction it was set in


def json_list(values: Sequence[Any]) -> str:
    """Many ids as one JSON array parameter, read by SQLite's ``json_each``: no statement
    with thousands of placeholders."""
    return orjson.dumps(list(values)).decode()


def sqlite_block_sizes(count: int, block: int) -> Iterator[int]:
    """Rows per multi-row statement for ``count`` rows: blocks of ``block`` rows (a power of
    two), then the rest in powers of two. Each statement shape is prepared once and cached by
    the connection, so only log2(block) + 1 shapes ever exist (a shape per remainder would
    let many large cached statements pile up)."""
    blocks, rest = divmod(count, block)
    yield from itertools.repeat(block, blocks)
    for bit in reversed(range(rest.bit_length())):
        if rest >> bit & 1:
            yield 1 << bit


async def sqlite_driver(conn: AsyncConnection) -> Any:
    """The aiosqlite connection under ``conn``, inside the unit of work's ``BEGIN IMMEDIATE``
    (SQLAlchemy begins lazily: its BEGIN is sent first, so the driver's statements join it)."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    if conn.in_transaction() and not driver.in_transaction:
        await conn.execute(sa.text("SELECT 1"))
    return driver


async def pg_driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn``, for hot-path statements prepared once per
    connection (no SQLAlchemy compilation, arrays instead of thousands of parameters).

    Inside a unit of work, SQLAlchemy's BEGIN is sent first so they join its
    transaction, and the transaction plans each statement for its actual arguments:
    after five runs PostgreSQL may switch a prepared statement to a generic plan, and
    for ``= ANY($n)`` over a thousand ids that plan was ~10x slower.
    """
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    transaction = conn.get_transaction()
    if transaction is not None and conn.info.get(_CUSTOM_PLANS) is not transaction:
        if not driver.is_in_transaction():
            await conn.execute(sa.text("SELECT 1"))
        await driver.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        conn.info[_CUSTOM_PLANS] = transaction  # once per transaction: SET LOCAL lasts until its end
    return driver


def upsert(conn: AsyncConnection, table: sa.Table) -> Any:
    """An INSERT that supports ``on_conflict_do_*`` on either database."""
    return (postgresql.insert if is_postgres(conn) else sqlite.insert)(table)
