"""SQLite WAL checkpoints in a thread of their own, off the writers' path.

In WAL mode a commit appends pages to the ``-wal`` file; a *checkpoint* copies them
back into the database file (and fsyncs it) so the log can start over. By default
SQLite runs one inside the COMMIT that takes the log past ``wal_autocheckpoint``
(1000 pages): the committing connection writes ~4 MB and waits for the disk. The
server's single connection is the batch path's bottleneck on SQLite, and in the
batch bench that commit took 16-36 ms per 5000-event chunk, half of it the checkpoint.

:class:`WalCheckpointer` runs passive checkpoints on a second connection in a daemon
thread, woken after each committed transaction (at most one every ``interval``
seconds), while the server goes on with its next statements: a passive checkpoint
never waits for, nor blocks, a reader or writer. The server's connection keeps an
automatic checkpoint as a backstop at ``BACKSTOP_PAGES`` (see :func:`configure`):
SQLite can only restart the log from its beginning once every page in it was copied
back, which under a steady stream of writes is mostly when that backstop runs (its
checkpoint then finds little left to copy). So the log stays under ~32 MB, and if
this thread falls behind or stops, SQLite checkpoints as before, only less often.

Durability is unchanged: a commit is durable once its log pages are synced
(``synchronous=FULL``); where they are copied later does not matter for a crash.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("onehazel.storage")

# The server connection's own automatic checkpoint (pages of 4 KB): the backstop.
BACKSTOP_PAGES = 8192
INTERVAL_SECONDS = 0.05


def configure(engine: AsyncEngine, *, backstop_pages: int = BACKSTOP_PAGES) -> None:
    """Raise the automatic checkpoint of ``engine``'s connections to ``backstop_pages``
    (call before the engine's first connection; a checkpointer does the usual work)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA wal_autocheckpoint={int(backstop_pages)}")
        cur.close()


class WalCheckpointer:
    """Passive checkpoints of the SQLite database at ``path``, after :meth:`poke`."""

    def __init__(self, path: Path, *, interval: float = INTERVAL_SECONDS) -> None:
        self.path = path
        self.interval = interval
        self.checkpoints = 0
        """Checkpoints run so far (for tests and diagnostics)."""
        self._wake = threading.Event()
        self._stopping = False
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="onehazel-wal-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A transaction committed: checkpoint soon. Cheap; call from any thread."""
        self._wake.set()

    def close(self) -> None:
        """Stop the thread after the checkpoint in progress (if any), and wait for it."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                if self._stopping:
                    return
                self._wake.clear()
                if conn is None:
                    conn = sqlite3.connect(self.path, isolation_level=None)
                    conn.execute("PRAGMA synchronous=FULL")
                self._checkpoint(conn)
                time.sleep(self.interval)  # pokes meanwhile: one checkpoint for all of them
        finally:
            if conn is not None:
                conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as exc:  # the backstop still checkpoints: report once, go on
            if not self._failed:
                self._failed = True
                log.warning(
                    "background WAL checkpoint failed; SQLite's automatic checkpoint remains",
                    extra={"fields": {"error": str(exc)}},
                )
