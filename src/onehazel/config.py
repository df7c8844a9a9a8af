"""Configuration from the environment and command-line flags, validated at start-up.

With no configuration the server uses the embedded default: SQLite at
``./onehazel-data/onehazel.db`` and a master key file beside it, both created
on first start. A SQLite URL given explicitly also keeps its key file beside
the database; a PostgreSQL server must be given its master key
(``ONEHAZEL_MASTER_KEY`` or ``ONEHAZEL_MASTER_KEY_FILE``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from onehazel.crypto.keys import KeyRing, load_key_ring
from onehazel.storage.engine import async_url

DEFAULT_DATABASE_URL = "sqlite:///./onehazel-data/onehazel.db"


@dataclass(frozen=True)
class Config:
    database_url: str
    env: dict[str, str]

    @classmethod
    def load(cls, database_url: str | None = None, env: dict[str, str] | None = None) -> Config:
        environ = dict(os.environ if env is None else env)
        url = database_url or environ.get("ONEHAZEL_DATABASE_URL") or DEFAULT_DATABASE_URL
        async_url(url)  # validates the scheme
        return cls(database_url=url, env=environ)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        return Path(self.database_url.split(":///", 1)[1])

    def key_ring(self) -> KeyRing:
        path = self.sqlite_path
        default_file = path.parent / "master.key" if path is not None else None
        return load_key_ring(env=self.env, default_file=default_file)

    @property
    def pool_size(self) -> int:
        """PostgreSQL connections per process (ONEHAZEL_DB_POOL_SIZE, default 40)."""
        return int(_positive(self.env, "ONEHAZEL_DB_POOL_SIZE", 40))

    @property
    def redis_url(self) -> str | None:
        """ONEHAZEL_REDIS_URL: where the API processes share rate-limit buckets (default: the
        database on PostgreSQL, this process alone on SQLite)."""
        return self.env.get("ONEHAZEL_REDIS_URL") or None

    @property
    def inprocess_worker(self) -> bool:
        return self.env.get("ONEHAZEL_INPROCESS_WORKER", "1") != "0"

    def worker_options(self) -> dict[str, float]:
        """Batch worker settings: job retention (default 7 days), lease (15 s) and
        events per transaction (5000: a whole batch)."""
        return {
            "retention_days": _positive(self.env, "ONEHAZEL_JOB_RETENTION_DAYS", 7.0),
            "lease_seconds": _positive(self.env, "ONEHAZEL_JOB_LEASE_SECONDS", 15.0),
            "events_chunk": _positive(self.env, "ONEHAZEL_BATCH_EVENTS_CHUNK", 5000),
        }

    def retention_options(self) -> dict[str, float]:
        """Retention sweep settings: how often ``serve`` sweeps (ONEHAZEL_RETENTION_INTERVAL_SECONDS,
        default 3600; 0 turns the in-process sweep off), how long a purged externalId stays
        refused (ONEHAZEL_SUPPRESSION_DAYS, default 365; 0 = until the next sweep) and rows per
        transaction (ONEHAZEL_RETENTION_CHUNK, default 5000)."""
        return {
            "interval_seconds": _non_negative(self.env, "ONEHAZEL_RETENTION_INTERVAL_SECONDS", 3600.0),
            "suppression_days": _non_negative(self.env, "ONEHAZEL_SUPPRESSION_DAYS", 365.0),
            "chunk": int(_positive(self.env, "ONEHAZEL_RETENTION_CHUNK", 5000)),
            "pause_seconds": _non_negative(self.env, "ONEHAZEL_RETENTION_PAUSE_SECONDS", 0.0),
        }

    def analytics_compact_seconds(self) -> float:
        """How often ``serve`` folds pending analytics deltas into the rollups
        (ONEHAZEL_ANALYTICS_COMPACT_SECONDS, default 10; 0 turns it off: answers stay exact,
        they only get slower as deltas pile up)."""
        return _non_negative(self.env, "ONEHAZEL_ANALYTICS_COMPACT_SECONDS", 10.0)

    def head_timeout_seconds(self) -> float:
        """How long ``serve`` waits for a request's line and headers, from the connection's
        opening (its first request) or the request's first byte (later ones)
        (ONEHAZEL_HEAD_TIMEOUT_SECONDS, default 20), and for a body (then extended by a
        second for every 500 bytes received: ``api.http_protocol.BODY_MIN_RATE``): a client
        that opens connections and sends nothing, or headers a byte at a time, would
        otherwise hold each connection for ever."""
        return _positive(self.env, "ONEHAZEL_HEAD_TIMEOUT_SECONDS", 20.0)

    def prepare_sqlite_dir(self) -> None:
        """Create the SQLite database's directory (0700) and an empty database file (0600)
        when they do not exist yet: SQLite would create the file world-readable (0644
        under the usual umask), and gives its -wal and -shm files the database file's
        permissions. Existing files keep the permissions they have."""
        path = self.sqlite_path
        if path is None:
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.name == ":memory:" or "?" in path.name:
            return  # not a plain file path: SQLite's own business
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _number(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _positive(env: dict[str, str], name: str, default: float) -> float:
    value = _number(env, name, default)
    if not 0 < value < 1e6:
        raise ValueError(f"{name} must be a positive number")
    return value


def _non_negative(env: dict[str, str], name: str, default: float) -> float:
    value = _number(env, name, default)
    if not 0 <= value < 1e6:
        raise ValueError(f"{name} must be a number from 0 to 999999")
    return value
