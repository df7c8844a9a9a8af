"""SQLite's WAL is checkpointed in a thread of its own, and stays bounded under writes.

The server's connection only checkpoints as a backstop (``wal_autocheckpoint`` at
``BACKSTOP_PAGES``); a :class:`WalCheckpointer` copies committed pages into the
database file soon after each commit. What a user would notice: the data reaches the
database file without waiting for SQLite's own checkpoint, the ``-wal`` file does not
grow without bound, and closing the store stops the thread.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import sqlalchemy as sa

from onehazel.bootstrap import open_services
from onehazel.config import Config
from onehazel.storage import checkpoints
from onehazel.storage.engine import create_engine
from onehazel.storage.unit_of_work import Store
from tests.conftest import keyed_env

ROW = 256 * 1024  # bytes per row: 64 pages of the log each
INSERT = sa.text("INSERT INTO scratch VALUES (:n, :v)")


def in_database_file(path: Path) -> int:
    """Rows of ``scratch`` in the database file itself, ignoring the log (``immutable``);
    -1 when the file is caught in the middle of a checkpoint (it takes no lock to read)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'scratch'").fetchone()[0]
        return int(conn.execute("SELECT count(*) FROM scratch").fetchone()[0]) if tables else 0
    except sqlite3.DatabaseError:
        return -1
    finally:
        conn.close()


async def write_rows(store: Store, count: int) -> None:
    async with store.begin() as uow:
        await uow.conn.execute(sa.text("CREATE TABLE IF NOT EXISTS scratch (n INTEGER, v BLOB)"))
    for n in range(count):  # one transaction (one commit) per row
        async with store.begin() as uow:
            await uow.conn.execute(INSERT, {"n": n, "v": os.urandom(ROW)})


async def eventually(check: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_the_server_store_checkpoints_committed_pages_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "onehazel.db"
    services = await open_services(Config.load(f"sqlite:///{path}", env=keyed_env()), run_migrations=True)
    store = services.core.store
    try:
        assert store.checkpointer is not None
        async with store.begin() as uow:
            autocheckpoint = (await uow.conn.execute(sa.text("PRAGMA wal_autocheckpoint"))).scalar_one()
        assert autocheckpoint == checkpoints.BACKSTOP_PAGES
        await write_rows(store, 8)  # ~2 MB: far below the backstop, so only the thread copies it
        await eventually(lambda: in_database_file(path) == 8)
    finally:
        await services.close()
    assert not store.checkpointer._thread.is_alive()


async def test_the_log_stays_bounded_under_a_steady_stream_of_commits(tmp_path: Path) -> None:
    path = tmp_path / "bounded.db"
    engine = create_engine(f"sqlite:///{path}")
    checkpoints.configure(engine, backstop_pages=256)  # 1 MB
    store = Store(engine, checkpointer=checkpoints.WalCheckpointer(path, interval=0.001))
    try:
        await write_rows(store, 80)  # 20 MB through the log
        await eventually(lambda: in_database_file(path) == 80)
        wal = Path(f"{path}-wal")
        # Without a restart of the log it would hold all 20 MB; it restarts once every page
        # was copied back, which the backstop's own checkpoint ensures between the thread's.
        assert wal.stat().st_size < 6 * 1024 * 1024
        assert store.checkpointer is not None
        assert store.checkpointer.checkpoints > 0
    finally:
        await store.close()


async def test_short_lived_commands_leave_checkpoints_to_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "cli.db"
    services = await open_services(
        Config.load(f"sqlite:///{path}", env=keyed_env()), run_migrations=True, null_pool=True
    )
    try:
        assert services.core.store.checkpointer is None
        async with services.core.store.begin() as uow:
            autocheckpoint = (await uow.conn.execute(sa.text("PRAGMA wal_autocheckpoint"))).scalar_one()
        assert autocheckpoint == 1000  # SQLite's default
    finally:
        await services.close()
