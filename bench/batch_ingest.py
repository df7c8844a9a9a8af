"""Batch event ingestion throughput of the real server, against the database's own insert rate.

Run by hand (from the repository root)::

    .venv/bin/python bench/batch_ingest.py [--backend postgres|sqlite|both] [--events 100000]
        [--players 1000] [--database-url postgresql://postgres@127.0.0.1:5432/test] [--py-spy DIR]

For each backend, in one run:

1. starts the real ``python -m onehazel serve`` (with its in-process batch worker) on a free
   port: for PostgreSQL against a fresh database ``onehazel_bench_<random>`` created here,
   migrated with ``onehazel migrate``, with a fresh ``ONEHAZEL_MASTER_KEY``; for SQLite the
   embedded default (``./onehazel-data`` in a temporary directory, master key file created on
   first use). ``onehazel operators create bench --json`` makes the operator, ``PUT
   /settings`` chooses ``tpl_igaming`` and ``POST /batch/entities`` creates the players;
2. measures the freshly started server's peak RSS while it accepts and applies one
   5000-event batch: ``VmHWM`` of the server process (reset through
   ``/proc/<pid>/clear_refs`` just before) and ``VmRSS`` polled every 5 ms;
3. sends ``--events`` transaction events (unique eventIds, decimal amounts as strings, a
   timestamp and a few more fields) as 5000-event ``POST /batch/events`` jobs and times first
   submit -> the last job seen ``completed`` (polling ``GET /batch/jobs/{id}`` of the last job every
   ``POLL_SECONDS``: each poll costs the server a request, so not much more often than that;
   the timing error it allows is under 2% of a run; every job's status is read after the
   clock stops); then checks with SQL
   that exactly that many of them are stored;
4. re-sends the very same batches (every item a duplicate) and times that too;
5. measures the database's own rate for the same rows in 5000-row transactions, twice:
   once just before the first send (the server idle) and once after the re-send (the server
   stopped), each time in a fresh database migrated by ``onehazel migrate`` (so: the
   server's own table, columns and indexes): PostgreSQL ``COPY`` (asyncpg
   ``copy_records_to_table``) into a temporary staging table + ``INSERT INTO events SELECT
   ... ON CONFLICT DO NOTHING RETURNING event_id``; SQLite ``executemany`` ``INSERT OR
   IGNORE`` with the server's pragmas (WAL, ``synchronous=FULL``), in the same directory as
   the server's file. The rows are built before the clock starts; each measurement inserts
   them twice, the second time every row is a conflict. The raw rate is taken over both
   measurements (total rows / total seconds): the machine's speed drifts by 10-20% within a
   minute here, and a raw rate measured on both sides of the API run is what the API run
   is compared against most fairly; both measurements are printed;
6. prints one table: API events/s, re-send events/s, raw events/s (and the raw re-insert),
   the API/raw ratio and peak RSS, with the targets beside them.

Nothing here asserts a speed. Every subprocess is stopped and every database dropped, also on
Ctrl-C or failure. On a 2-core machine the client (this process) shares the CPU with the
server; it does little (the bodies are encoded before the clock starts), but concurrent test
runs make the figures noisy: run it twice.

``--py-spy DIR`` (needs ``py-spy`` on the PATH or in the virtualenv; not a project dependency)
also records the server during the first send and the re-send into collapsed-stack files in
DIR and prints the functions with the most samples. Profiling slows the server a little.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import calendar
import contextlib
import inspect
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import sqlalchemy as sa

from onehazel.storage.engine import SQLITE_PRAGMAS

HOST = "127.0.0.1"
BASE = "/operator-data-api"
BATCH = 5000
ENTITY_BATCH = 1000
TARGET_RATIO = {"postgres": 0.6, "sqlite": 0.6}
POLL_SECONDS = 0.05
AIM_RATIO = {"postgres": 0.8, "sqlite": 0.6}
TARGET_RSS_MB = 200.0
TX_TYPES = ("deposit", "bet", "win", "bet", "withdrawal")
CURRENCIES = ("EUR", "GBP", "USD", "CAD")
METHODS = ("card", "bank_transfer", "e_wallet")
EVENT_COLUMNS = (
    "workspace_id",
    "event_id",
    "external_id",
    "type",
    "data",
    "pii",
    "fingerprint",
    "timestamp",
    "ts",
    "received_at",
    "seq",
)
# Keep the server's own configuration out of the subprocesses' environment.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("ONEHAZEL_")}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- workload ---------------------------------------------------------------------------------------


def player_id(n: int) -> str:
    return f"player-{n:06d}"


def player_batches(players: int) -> list[bytes]:
    entities = [
        {
            "externalId": player_id(n),
            "type": "player",
            "attributes": {
                "email": f"player{n}@example.com",
                "first_name": f"First{n}",
                "country": ("GB", "DE", "SE", "CA")[n % 4],
                "currency": CURRENCIES[n % 4],
            },
        }
        for n in range(players)
    ]
    return [
        orjson.dumps({"entities": entities[i : i + ENTITY_BATCH]}) for i in range(0, players, ENTITY_BATCH)
    ]


def make_events(prefix: str, count: int, players: int) -> list[dict[str, Any]]:
    """``count`` realistic transaction events with unique eventIds, spread over the players."""
    base = int(time.time()) - 86_400
    events = []
    for n in range(count):
        p = (n * 7919) % players
        events.append(
            {
                "externalId": player_id(p),
                "type": "transaction",
                "eventId": f"{prefix}-{n:07d}",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + n // 10)),
                "data": {
                    "type": TX_TYPES[n % len(TX_TYPES)],
                    "amount": f"{1 + n % 500}.{n % 100:02d}",
                    "currency": CURRENCIES[p % 4],
                    "method": METHODS[n % 3],
                    "status": "completed",
                    "transaction_id": f"tx-{prefix}-{n}",
                },
            }
        )
    return events


def event_batches(events: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps({"events": events[i : i + BATCH]}) for i in range(0, len(events), BATCH)]


# -- processes --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def onehazel(args: list[str], *, env: dict[str, str], cwd: Path) -> str:
    """Run one ``onehazel`` command; its stdout, or an error naming its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "onehazel", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"onehazel {' '.join(args[:2])} failed: {done.stderr.strip()[-800:]}")
    return done.stdout


class Server:
    """``python -m onehazel serve`` in its own process group; always stopped by ``stop()``."""

    def __init__(self, *, env: dict[str, str], cwd: Path, database_url: str | None) -> None:
        self.port = free_port()
        self.log_path = cwd / f"server-{self.port}.log"
        args = [sys.executable, "-m", "onehazel", "serve", "--host", HOST, "--port", str(self.port)]
        if database_url:
            args += ["--database-url", database_url]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.url = f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the server was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


# -- memory -----------------------------------------------------------------------------------------


def proc_status_kb(pid: int, field_name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU time of a process (with its reaped children's, if asked), 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(f) for f in fields[11 : 15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float | None:
    """CPU time of every local ``postgres`` process, ended backends included (they are the
    postmaster's reaped children); None when none is visible (e.g. a remote server)."""
    total, seen = 0.0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().split(" (", 1)[1].startswith("postgres)"):
                total += cpu_seconds(int(stat.parent.name), children=True)
                seen = True
        except (OSError, IndexError, ValueError):
            continue
    return total if seen else None


class CpuMeter:
    """CPU seconds the server process, the local PostgreSQL and this client spent between start
    and stop: where the time went (a CPU-bound side, or both waiting on each other)."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.server = self.database = 0.0

    def __enter__(self) -> CpuMeter:
        self._server = cpu_seconds(self.server_pid) if self.server_pid else 0.0
        self._database = postgres_cpu_seconds()
        self._client = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server = (cpu_seconds(self.server_pid) if self.server_pid else 0.0) - self._server
        after = postgres_cpu_seconds()
        self.database = after - self._database if after is not None and self._database is not None else 0.0
        self.client = time.process_time() - self._client

    def describe(self, seconds: float, *, postgres: bool) -> str:
        parts = [f"server CPU {self.server:.2f} s ({self.server / seconds:.0%})"] if self.server_pid else []
        if postgres:
            parts.append(f"PostgreSQL CPU {self.database:.2f} s ({self.database / seconds:.0%})")
        parts.append(f"this client's CPU {self.client:.2f} s")
        return ", ".join(parts)


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Polls VmRSS of one process every ``interval`` seconds in a thread; keeps the maximum."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = proc_status_kb(self.pid, "VmRSS")
            if value is not None:
                self.peak_kb = max(self.peak_kb, value)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- profiling (optional) ---------------------------------------------------------------------------


def find_py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class PySpy:
    """``py-spy record`` of one process into a collapsed-stack file until ``stop()``."""

    def __init__(self, exe: str, pid: int, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            _, err = self.proc.communicate()
        if not self.out.exists():
            log(f"py-spy wrote nothing: {err.decode(errors='replace').strip()[-300:]}")


# (label, a substring of a frame): the busy samples whose stack holds such a frame.
# SQLAlchemy's asyncio layer runs its sync core in a greenlet, so a statement's compile shows up
# under a stack rooted at Connection.execute, not under the repository method that issued it.
PROFILE_GROUPS = (
    ("HTTP requests (accept batch, poll job)", "RequestResponseCycle.run_asgi"),
    ("batch worker (onehazel/jobs)", "Worker.run ("),
    ("SQLAlchemy statement compile (any)", "ClauseElement._compile_w_cache"),
    ("  multi-row INSERT .. VALUES compile", "_extend_values_for_multiparams"),
    ("validate_event", "validate_event ("),
    ("check_item / json_problem", "json_problem ("),
    ("parse_json (json.loads, Decimal)", "parse_json ("),
    ("fingerprint (keyed BLAKE2b over orjson)", "Fingerprinter.of ("),
    ("open_blob / seal_blob", "_blob ("),
    ("job bookkeeping: advance", "advance ("),
    ("asyncpg", "(asyncpg/"),
    ("aiosqlite / sqlite3", "(aiosqlite/"),
    ("logging", "(logging/"),
)
IDLE_LEAVES = ("Condition.wait (threading.py)", "Event.wait (threading.py)", "Queue.get (queue.py)")


def summarise_profile(path: Path, top: int = 20) -> str:
    """Where the server's busy samples went, from a collapsed-stack file.

    Samples of threads parked waiting (SQLite's driver thread, the idle thread pool) are left out. Three
    lists: the shares of PROFILE_GROUPS, onehazel's own functions by inclusive samples (each
    counted once per stack), and every function by the samples spent in its own code.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    parked = _parked_frames()
    busy = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw_frames = stack.split(";")
        frames = [_short_frame(f) for f in raw_frames]
        if frames[-1] in IDLE_LEAVES or raw_frames[-1] in parked:
            idle += count
            continue
        busy += count
        joined = ";".join(frames)
        for label, marker in PROFILE_GROUPS:
            if marker in joined:
                groups[label] += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    if not busy:
        return "  (no busy samples)"
    lines = [f"  {busy} busy samples ({idle} idle-thread samples left out)", "  share%  group"]
    lines += [f"  {100 * groups[label] / busy:6.1f}  {label}" for label, _ in PROFILE_GROUPS]
    lines.append("  inclusive%  onehazel function")
    ours = [(f, c) for f, c in inclusive.most_common() if "(onehazel/" in f and "cli.py" not in f]
    lines += [f"  {100 * c / busy:9.1f}  {f}" for f, c in ours[:top]]
    lines.append("  own%  function")
    lines += [f"  {100 * c / busy:4.1f}  {f}" for f, c in own.most_common(top)]
    return "\n".join(lines)


def _parked_frames() -> set[str]:
    """Frames of threads parked on a queue inside a C call, which py-spy counts as busy:
    aiosqlite's driver thread and the idle threads of asyncio's default thread pool."""
    import concurrent.futures.thread

    places: list[tuple[Any, str, str]] = [
        (concurrent.futures.thread._worker, "work_queue.get(block=True)", "concurrent/futures/thread.py")
    ]
    with contextlib.suppress(ImportError, AttributeError):
        import aiosqlite.core

        places.append((aiosqlite.core._connection_worker_thread, "tx.get()", "aiosqlite/core.py"))
    frames = set()
    for function, call, where in places:
        try:
            lines, first = inspect.getsourcelines(function)
        except (OSError, TypeError):
            continue
        for offset, text in enumerate(lines):
            if call in text:
                frames.add(f"{function.__name__} ({where}:{first + offset})")
    return frames


def _short_frame(frame: str) -> str:
    # py-spy frames look like "function (path/to/file.py:123)": drop the line number and the
    # path up to the package, so one function's samples add up.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("/site-packages/", "/src/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


# -- the API side -----------------------------------------------------------------------------------


@dataclass
class Phase:
    events: int
    seconds: float
    jobs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def totals(self) -> dict[str, int]:
        return {k: sum(j[k] for j in self.jobs) for k in ("total", "succeeded", "failed", "duplicates")}


class Client:
    """The benchmark's HTTP client. A 503 (the server's "retry later") is retried and counted."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=url + BASE,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=300,
        )
        self.unavailable: Counter[str] = Counter()
        self.slowest: dict[str, float] = {}

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        what = f"{method} {path.split('/job_')[0]}"
        while True:
            start = time.perf_counter()
            response = self.http.request(method, path, **kwargs)
            took = time.perf_counter() - start
            self.slowest[what] = max(self.slowest.get(what, 0.0), took)
            if response.status_code != 503:
                return response
            self.unavailable[what] += 1
            if self.unavailable[what] > 100:
                raise RuntimeError(f"{what}: 503 more than 100 times: {response.text[:300]}")
            time.sleep(float(response.headers.get("retry-after", "1")))

    def submit(self, kind: str, body: bytes) -> str:
        response = self.request("POST", f"/batch/{kind}", content=body)
        if response.status_code != 202:
            raise RuntimeError(f"POST /batch/{kind}: {response.status_code} {response.text[:300]}")
        return str(response.json()["jobId"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.request("GET", f"/batch/jobs/{job_id}")
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        return job

    def wait_finished(self, job_ids: list[str], *, poll: float = POLL_SECONDS, timeout: float = 1800) -> None:
        """Wait until every job is finished; a workspace's jobs finish in order, so poll the last."""
        deadline = time.monotonic() + timeout
        for job_id in reversed(job_ids):
            while self.job(job_id)["status"] not in ("completed", "failed"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job_id} did not finish within {timeout:.0f} s")
                time.sleep(poll)

    def wait(self, job_ids: list[str]) -> list[dict[str, Any]]:
        """Every job's status once all are finished."""
        self.wait_finished(job_ids)
        return [self.job(j) for j in job_ids]

    def send(self, kind: str, bodies: list[bytes], items: int) -> Phase:
        """Submit every batch, then wait for all; timed from the first submit until the last
        job is seen finished (reading every job's status afterwards is not part of it: with
        20 jobs those reads took ~3-8% of a run's time)."""
        start = time.perf_counter()
        job_ids = [self.submit(kind, body) for body in bodies]
        self.wait_finished(job_ids)
        seconds = time.perf_counter() - start
        return Phase(events=items, seconds=seconds, jobs=[self.job(j) for j in job_ids])


# -- the database's own rate ------------------------------------------------------------------------


def raw_rows(events: list[dict[str, Any]], workspace_id: str) -> list[tuple[Any, ...]]:
    """The rows the server stores for these events (data as JSON text, a fingerprint-sized hash)."""
    now = time.time_ns() // 1000
    rows = []
    for n, e in enumerate(events):
        ts = calendar.timegm(time.strptime(e["timestamp"], "%Y-%m-%dT%H:%M:%SZ")) * 1_000_000
        fingerprint = "k0000000." + uuid.uuid5(uuid.NAMESPACE_URL, e["eventId"]).hex * 2
        rows.append(
            (
                workspace_id,
                e["eventId"],
                e["externalId"],
                e["type"],
                orjson.dumps(e["data"]).decode(),
                None,
                fingerprint,
                e["timestamp"],
                ts,
                now,
                now + n,
            )
        )
    return rows


async def postgres_raw(url: str, rows: list[tuple[Any, ...]]) -> tuple[float, float]:
    """(first insert s, re-insert s): COPY into a staging table + INSERT .. SELECT .. ON CONFLICT."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(
            "CREATE TEMP TABLE events_stage (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
        insert = (
            f"INSERT INTO events ({columns}) SELECT {columns} FROM events_stage "
            "ON CONFLICT (workspace_id, event_id) DO NOTHING RETURNING event_id"
        )
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            for i in range(0, len(rows), BATCH):
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "events_stage", records=rows[i : i + BATCH], columns=EVENT_COLUMNS
                    )
                    await conn.fetch(insert)
            timings.append(time.perf_counter() - start)
        count = await conn.fetchval("SELECT count(*) FROM events")
        if count != len(rows):
            log(f"WARNING: raw PostgreSQL table holds {count} rows, expected {len(rows)}")
        return timings[0], timings[1]
    finally:
        await conn.close()


def sqlite_raw(path: Path, rows: list[tuple[Any, ...]]) -> tuple[float, float]:
    """(first insert s, re-insert s): executemany INSERT OR IGNORE, the server's pragmas."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in SQLITE_PRAGMAS:  # the server's own (storage/engine.py)
            conn.execute(f"PRAGMA {pragma}")
        columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
        insert = f"INSERT OR IGNORE INTO events ({columns}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            for i in range(0, len(rows), BATCH):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(insert, rows[i : i + BATCH])
                conn.execute("COMMIT")
            timings.append(time.perf_counter() - start)
        count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        if count != len(rows):
            log(f"WARNING: raw SQLite table holds {count} rows, expected {len(rows)}")
        return timings[0], timings[1]
    finally:
        conn.close()


# -- databases --------------------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    return str(sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False))


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def pg_admin(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server_url), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def pg_count(url: str, prefix: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE event_id LIKE $1", prefix + "-%"))
    finally:
        await conn.close()


def sqlite_count(path: Path, prefix: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(
            conn.execute("SELECT count(*) FROM events WHERE event_id LIKE ?", (prefix + "-%",)).fetchone()[0]
        )
    finally:
        conn.close()


@contextlib.contextmanager
def pg_databases(server_url: str, count: int) -> Iterator[list[str]]:
    """``count`` fresh PostgreSQL databases (URLs), dropped on exit whatever happens."""
    names = [f"onehazel_bench_{uuid.uuid4().hex[:10]}" for _ in range(count)]
    created: list[str] = []
    try:
        for name in names:
            asyncio.run(pg_admin(server_url, f'CREATE DATABASE "{name}"'))
            created.append(name)
        yield [with_database(server_url, n) for n in names]
    finally:
        for name in created:
            try:
                asyncio.run(pg_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            except (OSError, asyncpg.PostgresError) as exc:
                log(f"WARNING: could not drop database {name}: {exc}")


# -- one backend ------------------------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    first: Phase
    resend: Phase
    raw_runs: list[tuple[float, float]]
    """(insert s, re-insert s) of each raw measurement: before the first send, after the re-send."""
    stored: int
    expected: int
    base_mb: float
    peak_batch_mb: float
    peak_run_mb: float
    notes: list[str] = field(default_factory=list)

    @property
    def raw_rate(self) -> float:
        seconds = sum(first for first, _ in self.raw_runs)
        return self.expected * len(self.raw_runs) / seconds if seconds else 0.0

    @property
    def raw_resend_rate(self) -> float:
        seconds = sum(again for _, again in self.raw_runs)
        return self.expected * len(self.raw_runs) / seconds if seconds else 0.0

    @property
    def ratio(self) -> float:
        return self.first.rate / self.raw_rate if self.raw_rate else 0.0


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> Result:
    cwd = workdir / backend
    cwd.mkdir()
    env = dict(CLEAN_ENV)
    if backend == "postgres":
        env["ONEHAZEL_MASTER_KEY"] = "bench:" + base64.b64encode(os.urandom(32)).decode()
        with pg_databases(args.database_url, 3) as (url, *raw_urls):
            for target in (url, *raw_urls):
                onehazel(["migrate", "--database-url", target], env=env, cwd=cwd)
            created = json.loads(
                onehazel(["operators", "create", "bench", "--json", "--database-url", url], env=env, cwd=cwd)
            )
            server = Server(env=env, cwd=cwd, database_url=url)
            return _measure(
                backend,
                args,
                cwd,
                server,
                created,
                count=lambda prefix: asyncio.run(pg_count(url, prefix)),
                raw=lambda rows, n: asyncio.run(postgres_raw(raw_urls[n], rows)),
            )
    # SQLite: the embedded default (./onehazel-data in cwd), created by the first command.
    data = cwd / "onehazel-data" / "onehazel.db"
    created = json.loads(onehazel(["operators", "create", "bench", "--json"], env=env, cwd=cwd))
    raw_paths = [cwd / "raw" / f"raw{n}.db" for n in range(2)]
    for raw_path in raw_paths:
        onehazel(["migrate", "--database-url", f"sqlite:///{raw_path}"], env=env, cwd=cwd)
    server = Server(env=env, cwd=cwd, database_url=None)
    return _measure(
        backend,
        args,
        cwd,
        server,
        created,
        count=lambda prefix: sqlite_count(data, prefix),
        raw=lambda rows, n: sqlite_raw(raw_paths[n], rows),
    )


def _measure(
    backend: str,
    args: argparse.Namespace,
    cwd: Path,
    server: Server,
    created: dict[str, str],
    *,
    count: Any,
    raw: Any,
) -> Result:
    notes: list[str] = []
    raw_runs: list[tuple[float, float]] = []
    client: Client | None = None
    spy_exe = find_py_spy() if args.py_spy else None
    if args.py_spy and spy_exe is None:
        notes.append("py-spy not found: no profile recorded")
    try:
        server.wait_ready()
        log(f"{backend}: server pid {server.pid} on port {server.port}")
        client = Client(server.url, created["liveKey"])
        client.http.put("/settings", json={"templateId": "tpl_igaming"}).raise_for_status()

        jobs = client.wait([client.submit("entities", body) for body in player_batches(args.players)])
        made = sum(j["succeeded"] for j in jobs)
        if made != args.players:
            raise RuntimeError(f"only {made} of {args.players} players were created: {jobs[0]['errors'][:3]}")
        log(f"{backend}: {made} players created")

        # Peak memory while the fresh server accepts and applies one 5000-event batch.
        probe = event_batches(make_events(f"memprobe-{uuid.uuid4().hex[:8]}", BATCH, args.players))
        before_kb = proc_status_kb(server.pid, "VmRSS") or 0
        if not reset_peak_rss(server.pid):
            notes.append("could not reset VmHWM: peak RSS for the batch is the polled VmRSS only")
        with RssSampler(server.pid, interval=0.005) as batch_rss:
            client.send("events", probe, BATCH)
        hwm = proc_status_kb(server.pid, "VmHWM") or 0
        peak_batch_kb = max(batch_rss.peak_kb, hwm)
        log(
            f"{backend}: RSS before one {BATCH}-event batch {before_kb / 1024:.0f} MB, peak while it was "
            f"accepted and applied {peak_batch_kb / 1024:.0f} MB (VmHWM {hwm / 1024:.0f} MB, "
            f"polled VmRSS {batch_rss.peak_kb / 1024:.0f} MB)"
        )

        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        events = make_events(prefix, args.events, args.players)
        bodies = event_batches(events)
        log(
            f"{backend}: {len(events)} events in {len(bodies)} batches ({sum(map(len, bodies)) / 1e6:.1f} MB)"
        )
        rows = raw_rows(events, raw_workspace_id())
        raw_runs.append(measure_raw(backend, raw, rows, 0, "before the first send, the server idle"))
        with RssSampler(server.pid) as run_rss:
            spy = PySpy(spy_exe, server.pid, Path(args.py_spy) / f"{backend}-first.txt") if spy_exe else None
            with CpuMeter(server.pid) as cpu:
                first = client.send("events", bodies, len(events))
            if spy:
                spy.stop()
            totals = first.totals()
            log(f"{backend}: first send {first.seconds:.2f} s = {first.rate:,.0f} events/s; jobs {totals}")
            log(f"{backend}: first send {cpu.describe(first.seconds, postgres=backend == 'postgres')}")
            if totals["succeeded"] != len(events):
                notes.append(f"first send: {totals} (expected every item succeeded)")
            stored = count(prefix)
            log(f"{backend}: SQL count of this run's events = {stored} (expected {len(events)})")

            spy = PySpy(spy_exe, server.pid, Path(args.py_spy) / f"{backend}-resend.txt") if spy_exe else None
            with CpuMeter(server.pid) as cpu:
                resend = client.send("events", bodies, len(events))
            if spy:
                spy.stop()
            totals = resend.totals()
            log(f"{backend}: re-send {resend.seconds:.2f} s = {resend.rate:,.0f} events/s; jobs {totals}")
            log(f"{backend}: re-send {cpu.describe(resend.seconds, postgres=backend == 'postgres')}")
            if totals["duplicates"] != len(events):
                notes.append(f"re-send: {totals} (expected every item a duplicate)")
            after = count(prefix)
            if after != stored:
                notes.append(f"re-send changed the event count: {stored} -> {after}")
        peak_run_kb = max(run_rss.peak_kb, proc_status_kb(server.pid, "VmHWM") or 0)
        for what, n in client.unavailable.items():
            notes.append(f"{what} answered 503 {n} time(s) (retried)")
        for what, took in client.slowest.items():
            if took > 5:
                notes.append(f"slowest {what}: {took:.1f} s")
    except BaseException:
        server.stop()
        log(f"{backend}: failed; the server's log ends with:\n{server.log_tail()}")
        raise
    finally:
        if client is not None:
            client.close()
        server.stop()

    if args.py_spy and spy_exe:
        for phase in ("first", "resend"):
            path = Path(args.py_spy) / f"{backend}-{phase}.txt"
            if path.exists():
                print(f"\npy-spy, {backend}, {phase} send ({path}):\n{summarise_profile(path)}\n", flush=True)

    raw_runs.append(measure_raw(backend, raw, rows, 1, "after the re-send, the server stopped"))
    return Result(
        backend=backend,
        first=first,
        resend=resend,
        raw_runs=raw_runs,
        stored=stored,
        expected=len(events),
        base_mb=before_kb / 1024,
        peak_batch_mb=peak_batch_kb / 1024,
        peak_run_mb=peak_run_kb / 1024,
        notes=notes,
    )


def measure_raw(
    backend: str, raw: Any, rows: list[tuple[Any, ...]], n: int, when: str
) -> tuple[float, float]:
    """Raw measurement ``n`` (its own fresh database): (insert s, re-insert s), logged."""
    seconds, again = raw(rows, n)
    log(
        f"{backend}: raw insert {seconds:.2f} s = {len(rows) / seconds:,.0f} rows/s; "
        f"raw re-insert {again:.2f} s = {len(rows) / again:,.0f} rows/s ({when})"
    )
    return seconds, again


def raw_workspace_id() -> str:
    # The raw database is fresh and empty: the workspace id only has to look like the server's.
    return f"ws_{int(time.time() * 1000):012x}{uuid.uuid4().hex[:16]}"


# -- report -----------------------------------------------------------------------------------------


def report(results: list[Result]) -> None:
    header = (
        f"{'backend':<9} {'events':>7} {'API ev/s':>9} {'re-send ev/s':>12} {'raw ev/s':>9} "
        f"{'raw re-ins/s':>12} {'API/raw':>8} {'target':>11} {'peak RSS MB':>11} {'run peak MB':>11} "
        f"{'SQL count':>9}"
    )
    print("\n" + header)
    print("-" * len(header))
    for r in results:
        target = f">={TARGET_RATIO[r.backend]:.1f}x"
        if AIM_RATIO[r.backend] != TARGET_RATIO[r.backend]:
            target += f" ({AIM_RATIO[r.backend]:.1f})"
        print(
            f"{r.backend:<9} {r.expected:>7} {r.first.rate:>9,.0f} {r.resend.rate:>12,.0f} "
            f"{r.raw_rate:>9,.0f} {r.raw_resend_rate:>12,.0f} {r.ratio:>7.2f}x {target:>11} "
            f"{r.peak_batch_mb:>11.0f} {r.peak_run_mb:>11.0f} {r.stored:>9}"
        )
    print()
    for r in results:
        verdicts = [
            f"API/raw {r.ratio:.2f}x {'meets' if r.ratio >= TARGET_RATIO[r.backend] else 'MISSES'} "
            f">={TARGET_RATIO[r.backend]:.1f}x",
            f"re-send {'at least as fast as' if r.resend.rate >= r.first.rate else 'SLOWER than'} "
            f"the first send ({r.resend.rate / r.first.rate:.2f}x)",
            f"peak RSS {r.peak_batch_mb:.0f} MB {'<' if r.peak_batch_mb < TARGET_RSS_MB else 'NOT <'} "
            f"{TARGET_RSS_MB:.0f} MB (idle before: {r.base_mb:.0f} MB)",
            f"SQL count {'==' if r.stored == r.expected else '!='} {r.expected}",
        ]
        print(f"{r.backend}: " + "; ".join(verdicts))
        measured = ", ".join(f"{r.expected / first:,.0f}" for first, _ in r.raw_runs)
        print(f"{r.backend}: raw rows/s before and after the API run: {measured}")
        for note in r.notes:
            print(f"{r.backend}: NOTE {note}")
    print(
        "\npeak RSS MB: the freshly started server process while it accepts and applies one 5000-event "
        f"batch (target < {TARGET_RSS_MB:.0f} MB); run peak MB: its highest RSS during the first send "
        "and the re-send. SQL count: this run's events in the server's database.\n"
        "raw: the same rows in 5000-row transactions straight into the server's own "
        "schema (PostgreSQL: COPY + INSERT..SELECT..ON CONFLICT; SQLite: executemany INSERT OR IGNORE), "
        "measured before the first send and after the re-send, each in a fresh database: total rows / "
        "total seconds of both."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("postgres", "sqlite", "both"), default="both")
    parser.add_argument("--events", type=int, default=100_000, help="events per send (default 100000)")
    parser.add_argument("--players", type=int, default=1000, help="players the events spread over")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("ONEHAZEL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL server to create the benchmark databases on (any existing database in the URL)",
    )
    parser.add_argument("--py-spy", metavar="DIR", help="record the server with py-spy into DIR")
    args = parser.parse_args()
    if args.events < 1 or args.players < 1:
        parser.error("--events and --players must be positive")
    if args.py_spy:
        Path(args.py_spy).mkdir(parents=True, exist_ok=True)
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    results = []
    with tempfile.TemporaryDirectory(prefix="onehazel-batch-bench-") as tmp:
        for backend in backends:
            log(f"=== {backend} ===")
            results.append(run_backend(backend, args, Path(tmp)))
    report(results)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
