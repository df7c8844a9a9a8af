"""The embedded SQLite database: durable commits, and a write-ahead log that stays bounded.

Every connection runs in WAL mode with ``synchronous=FULL`` (a committed write survives a
power loss) and copies the log back into the database file once it holds
``SQLITE_AUTOCHECKPOINT_PAGES`` pages, so under a steady stream of writes the ``-wal``
file starts over instead of growing with everything ever written.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from onehazel.bootstrap import open_services
from onehazel.config import Config
from onehazel.storage.engine import SQLITE_AUTOCHECKPOINT_PAGES
from tests.conftest import keyed_env

ROW = 256 * 1024  # bytes per transaction: 64 pages of the log each
INSERT = sa.text("INSERT INTO scratch VALUES (:n, :v)")


async def test_commits_are_durable_and_the_log_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "onehazel.db"
    services = await open_services(Config.load(f"sqlite:///{path}", env=keyed_env()), run_migrations=True)
    store = services.core.store
    try:
        async with store.begin() as uow:
            pragma = uow.conn.exec_driver_sql
            assert (await pragma("PRAGMA journal_mode")).scalar_one() == "wal"
            assert (await pragma("PRAGMA synchronous")).scalar_one() == 2  # FULL
            assert (await pragma("PRAGMA wal_autocheckpoint")).scalar_one() == SQLITE_AUTOCHECKPOINT_PAGES
            await uow.conn.execute(sa.text("CREATE TABLE scratch (n INTEGER, v BLOB)"))
        log_limit = SQLITE_AUTOCHECKPOINT_PAGES * 4096
        rows = 2 * log_limit // ROW  # twice what the log holds before it is copied back
        for n in range(rows):
            async with store.begin() as uow:
                await uow.conn.execute(INSERT, {"n": n, "v": os.urandom(ROW)})
        async with store.begin() as uow:
            assert (await uow.conn.execute(sa.text("SELECT count(*) FROM scratch"))).scalar_one() == rows
        # Still open (closing the last connection checkpoints and removes the log anyway). The
        # log peaks at the threshold plus the transaction that crossed it, plus 24 bytes a page;
        # without checkpoints it would hold all that was written (2x the threshold).
        assert Path(f"{path}-wal").stat().st_size < log_limit * 5 // 4
    finally:
        await services.close()
