"""Single-event write throughput of the real server, against a bare FastAPI baseline.

Run by hand (from the repository root)::

    .venv/bin/python bench/single_writes.py [--duration 20] [--concurrency 32] [--workers 1]
        [--database-url postgresql://postgres@127.0.0.1:5432/test]

What it does, in one run:

1. creates a fresh database ``onehazel_bench_<random>`` on the given PostgreSQL server, runs
   ``onehazel migrate``, ``onehazel operators create bench --json`` and ``onehazel operators
   limits`` (rates far above the target: the limiter runs, it never refuses) against it, and starts
   the real ``python -m onehazel serve`` (fresh base64 master key in ``ONEHAZEL_MASTER_KEY``);
   chooses ``tpl_igaming`` with ``PUT /settings`` and upserts ``--players`` players;
2. after a warm-up, drives ``POST /operator-data-api/entities/{id}/events`` with
   ``--concurrency`` keep-alive clients for ``--duration`` seconds, each request a transaction
   event (deposit/bet/win, decimal amount as a string, currency) with a unique eventId;
3. does the same against ``bench/echo_app.py`` (one FastAPI route that parses the JSON body
   and echoes a small JSON answer) under uvicorn with the same worker count, httptools and
   uvloop, with byte-for-byte the same requests;
4. prints requests, errors, req/s, p50 and p99 for both and the onehazel/echo ratio, checks
   with SQL that the events table holds exactly one row per 201 answer, drops the database
   and stops every process it started.

The load generator is ``wrk`` (a C event loop; a Lua script written to a temporary file
builds each request) when it is on the PATH; otherwise a pure-asyncio HTTP/1.1 generator in
this process, which on a 2-core machine may itself be the bottleneck: the output says which
one ran. Nothing here asserts a speed: the target is printed beside the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import sqlalchemy as sa

BENCH_DIR = Path(__file__).resolve().parent
BASE = "/operator-data-api"
TARGET_RPS = 4_000
TARGET_P99_MS = 30.0
HOST = "127.0.0.1"

# One event body, shared by the Lua script and the Python generator so both send the same bytes.
EVENT_BODY = (
    '{"eventId":"%s","type":"transaction","timestamp":"%s","data":{"type":"%s",'
    '"amount":"%d.%02d","currency":"%s","method":"card","transaction_id":"tx-%s"}}'
)
EVENT_PATH = BASE + "/entities/player-%05d/events"
TX_TYPES = ("deposit", "bet", "win")
CURRENCIES = ("EUR", "GBP", "USD", "CAD")

WRK_SCRIPT = """\
-- Written by bench/single_writes.py: one transaction event with a unique eventId per request.
local counter = 0
local threads = {}
local types = {"deposit", "bet", "win"}
local currencies = {"EUR", "GBP", "USD", "CAD"}
local players = @PLAYERS@
local body_format = [[@BODY@]]
local path_format = [[@PATH@]]

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function init(args)
  prefix = args[1] .. "-" .. tid .. "-"
  sent = 0
  statuses = {}
  outstanding = {}
  wrk.headers["Authorization"] = "Bearer @KEY@"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  sent = sent + 1
  local id = prefix .. sent
  outstanding[id] = true
  local p = (sent * 7 + tid * 31) % players
  local body = string.format(body_format, id, os.date("!%Y-%m-%dT%H:%M:%SZ"), types[sent % 3 + 1],
    1 + sent % 500, sent % 100, currencies[p % 4 + 1], id)
  return wrk.format("POST", string.format(path_format, p), nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 201 then
    local id = string.match(body, '"eventId":"([^"]*)"')
    if id then outstanding[id] = nil end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH summary %d %d %d %d %d %d\\n", summary.duration, summary.requests,
    e.connect, e.read, e.write, e.timeout))
  io.write(string.format("BENCH latency %f %f\\n", latency:percentile(50), latency:percentile(99)))
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do
      io.write(string.format("BENCH status %d %d\\n", code, n))
    end
    for id, _ in pairs(t:get("outstanding")) do
      io.write("BENCH outstanding " .. id .. "\\n")
    end
  end
end
"""


def event_request(*, prefix: str, tid: int, n: int, players: int) -> tuple[str, str, str]:
    """(path, eventId, body) of request ``n`` of client ``tid``: what the Lua script builds."""
    event_id = f"{prefix}-{tid}-{n}"
    p = (n * 7 + tid * 31) % players
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = EVENT_BODY % (event_id, stamp, TX_TYPES[n % 3], 1 + n % 500, n % 100, CURRENCIES[p % 4], event_id)
    return EVENT_PATH % p, event_id, body


@dataclass
class LoadResult:
    seconds: float
    statuses: Counter[int]
    socket_errors: int
    p50_ms: float
    p99_ms: float
    outstanding: list[str]
    """eventIds sent without a 201 answer: cut off in flight when the run stopped, or refused."""
    cpu_seconds: float | None = None
    """CPU time the target's processes used during the run (Linux /proc), when known."""

    @property
    def responses(self) -> int:
        return sum(self.statuses.values())

    @property
    def created(self) -> int:
        return self.statuses.get(201, 0)

    @property
    def errors(self) -> int:
        return self.responses - self.created + self.socket_errors

    @property
    def rps(self) -> float:
        return self.responses / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> str:
        if self.cpu_seconds is None or not self.responses:
            return "-"
        return f"{1000 * self.cpu_seconds / self.responses:.2f}"


@dataclass
class Target:
    name: str
    port: int
    key: str
    players: int
    runs: list[LoadResult] = field(default_factory=list)


class Generator:
    name = ""

    async def run(self, target: Target, *, prefix: str, seconds: float, concurrency: int) -> LoadResult:
        raise NotImplementedError


# -- wrk ------------------------------------------------------------------------------------------


class WrkGenerator(Generator):
    def __init__(self, wrk: str, *, threads: int, workdir: Path) -> None:
        self.wrk = wrk
        self.threads = threads
        self.workdir = workdir
        version = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
        first = (version.stdout or version.stderr).splitlines()
        self.name = (
            f"{first[0].split('[')[0].strip() if first else 'wrk'} ({threads} thread(s), C event loop)"
        )

    def _script(self, target: Target) -> Path:
        text = (
            WRK_SCRIPT.replace("@PLAYERS@", str(target.players))
            .replace("@BODY@", EVENT_BODY)
            .replace("@PATH@", EVENT_PATH)
            .replace("@KEY@", target.key)
        )
        path = self.workdir / f"events-{target.name}.lua"
        path.write_text(text)
        return path

    async def run(self, target: Target, *, prefix: str, seconds: float, concurrency: int) -> LoadResult:
        command = [
            self.wrk,
            f"-t{min(self.threads, concurrency)}",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(self._script(target)),
            f"http://{HOST}:{target.port}/",
            "--",
            prefix,
        ]
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            out, _ = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        text = out.decode(errors="replace")
        if proc.returncode != 0 or "BENCH summary" not in text:
            raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{text}")
        return parse_wrk(text)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(text: str) -> LoadResult:
    """Statuses and cut-off eventIds from the script's ``done()``; p50/p99 from ``--latency``."""
    statuses: Counter[int] = Counter()
    outstanding: list[str] = []
    seconds, socket_errors = 0.0, 0
    p50 = p99 = float("nan")
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("BENCH summary"):
            duration_us, _requests, *errors = (int(x) for x in parts[2:])
            seconds, socket_errors = duration_us / 1e6, sum(errors)
        elif line.startswith("BENCH latency"):
            p50, p99 = float(parts[2]) / 1000, float(parts[3]) / 1000
        elif line.startswith("BENCH status"):
            statuses[int(parts[2])] += int(parts[3])
        elif line.startswith("BENCH outstanding"):
            outstanding.append(parts[2])
    distribution = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+(?:us|ms|s|m|h))\s*$", text, re.MULTILINE))
    for pct, value in distribution.items():
        number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
        ms = float(number) * _UNITS_MS[unit]
        if pct == "50":
            p50 = ms
        else:
            p99 = ms
    return LoadResult(seconds, statuses, socket_errors, p50, p99, outstanding)


# -- pure asyncio -----------------------------------------------------------------------------------


class AsyncioGenerator(Generator):
    """Keep-alive HTTP/1.1 over raw asyncio streams: far cheaper per request than httpx."""

    name = "pure-asyncio HTTP/1.1 client in the bench process (uvloop)"

    async def run(self, target: Target, *, prefix: str, seconds: float, concurrency: int) -> LoadResult:
        statuses: Counter[int] = Counter()
        latencies: list[float] = []
        outstanding: set[str] = set()
        errors = [0]
        started = time.perf_counter()
        deadline = started + seconds

        async def client(tid: int) -> None:
            n = 0
            while time.perf_counter() < deadline:
                try:
                    reader, writer = await asyncio.open_connection(HOST, target.port)
                except OSError:
                    errors[0] += 1
                    await asyncio.sleep(0.05)
                    continue
                try:
                    while time.perf_counter() < deadline:
                        n += 1
                        path, event_id, body = event_request(
                            prefix=prefix, tid=tid, n=n, players=target.players
                        )
                        outstanding.add(event_id)
                        sent_at = time.perf_counter()
                        writer.write(_http_post(path, body, key=target.key, port=target.port))
                        status, answer = await asyncio.wait_for(_read_response(reader), timeout=10)
                        latencies.append(time.perf_counter() - sent_at)
                        statuses[status] += 1
                        if status == 201 and json.loads(answer).get("eventId") == event_id:
                            outstanding.discard(event_id)
                except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError):
                    errors[0] += 1
                finally:
                    writer.close()

        await asyncio.gather(*(client(tid) for tid in range(1, concurrency + 1)))
        elapsed = time.perf_counter() - started
        latencies.sort()
        return LoadResult(
            elapsed,
            statuses,
            errors[0],
            _percentile(latencies, 50) * 1000,
            _percentile(latencies, 99) * 1000,
            sorted(outstanding),
        )


def _http_post(path: str, body: str, *, key: str, port: int) -> bytes:
    payload = body.encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = next(
        (int(v) for k, _, v in (x.partition(":") for x in lines[1:]) if k.lower() == "content-length")
    )
    return status, await reader.readexactly(length)


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))]


# -- processes and the database ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running(command: list[str], *, env: dict[str, str], log: Path, port: int) -> AsyncIterator[int]:
    """Start ``command`` in its own process group, wait for /healthz, always stop the group."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=BENCH_DIR.parent,
        )
    try:
        await _wait_healthy(proc, port, log)
        yield proc.pid
    finally:
        stop_group(proc)


def group_cpu_seconds(pgid: int) -> float | None:
    """User + system CPU of every live process in a process group (server and its workers)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    ticks = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # pgrp; then utime, stime, cutime, cstime
            ticks += sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole group (uvicorn's workers too), then SIGKILL whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


async def _wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://{HOST}:{port}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{proc.args!r} did not answer /healthz within 60 s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def onehazel_cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "onehazel", *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"onehazel {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


def with_database(url: str, name: str) -> str:
    return str(sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False))


def asyncpg_dsn(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+asyncpg)?://", "postgresql://", url)


async def admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def prepare(port: int, key: str, players: int) -> None:
    """Choose tpl_igaming and upsert the players the events will be spread over."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}{BASE}", headers=headers, timeout=30) as http:
        answer = await http.put("/settings", json={"templateId": "tpl_igaming"})
        if answer.status_code != 200:
            raise RuntimeError(f"PUT /settings answered {answer.status_code}: {answer.text}")
        gate = asyncio.Semaphore(16)

        async def upsert(i: int) -> None:
            body = {
                "externalId": f"player-{i:05d}",
                "type": "player",
                "attributes": {
                    "email": f"player{i}@example.com",
                    "first_name": "Bench",
                    "last_name": f"Player{i}",
                    "country": "MT",
                    "currency": CURRENCIES[i % 4],
                    "vip": i % 10 == 0,
                },
            }
            async with gate:
                answer = await http.post("/entities", json=body)
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"POST /entities answered {answer.status_code}: {answer.text}")

        await asyncio.gather(*(upsert(i) for i in range(players)))


@dataclass
class Verification:
    rows: int
    distinct: int
    created: int
    cut_off: int
    cut_off_stored: int

    @property
    def ok(self) -> bool:
        return self.rows == self.distinct and self.rows - self.cut_off_stored == self.created


async def verify(database_url: str, runs: list[LoadResult]) -> Verification:
    """Every 201 has its row, and no row exists for a request that was not sent."""
    cut_off = sorted({event_id for run in runs for event_id in run.outstanding})
    conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM events")
        distinct = await conn.fetchval("SELECT count(DISTINCT (workspace_id, event_id)) FROM events")
        stored = await conn.fetchval("SELECT count(*) FROM events WHERE event_id = ANY($1::text[])", cut_off)
    finally:
        await conn.close()
    return Verification(rows, distinct, sum(r.created for r in runs), len(cut_off), stored)


# -- the run --------------------------------------------------------------------------------------


async def measure(
    generator: Generator, target: Target, args: argparse.Namespace, *, pgid: int, log: Path
) -> LoadResult:
    print(f"  {target.name}: warm-up {args.warmup:g} s ...", flush=True)
    target.runs.append(
        await generator.run(target, prefix="w", seconds=args.warmup, concurrency=args.concurrency)
    )
    print(f"  {target.name}: measuring {args.duration:g} s at {args.concurrency} clients ...", flush=True)
    cpu_before = group_cpu_seconds(pgid)
    result = await generator.run(target, prefix="m", seconds=args.duration, concurrency=args.concurrency)
    cpu_after = group_cpu_seconds(pgid)
    if cpu_before is not None and cpu_after is not None:
        result.cpu_seconds = cpu_after - cpu_before
    target.runs.append(result)
    if result.errors:
        print(f"  {target.name}: non-201 answers {dict(result.statuses)}; server log tail:\n{_tail(log, 10)}")
    return result


async def bench(args: argparse.Namespace) -> int:
    # Ctrl-C or a plain kill cancels the run; the finally blocks stop the servers and drop the database.
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
    generator_choice = _generator_choice(args)
    load_before = os.getloadavg()[0]
    env = {**os.environ, "ONEHAZEL_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    env.pop("ONEHAZEL_DATABASE_URL", None)
    name = f"onehazel_bench_{uuid.uuid4().hex[:10]}"
    database_url = with_database(args.database_url, name)
    await admin(args.database_url, f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="onehazel-bench-") as tmp:
            workdir = Path(tmp)
            generator = generator_choice(workdir)
            onehazel_cli(["migrate", "--database-url", database_url], env)
            operator = json.loads(
                onehazel_cli(["operators", "create", "bench", "--json", "--database-url", database_url], env)
            )
            # Throughput is measured here, not the rate limiter's refusals: lift the operator's
            # limits far above the target (the limiter still runs on every request).
            limits = ["--writes", "1000000", "--reads", "1000000", "--database-url", database_url]
            onehazel_cli(["operators", "limits", operator["operatorId"], *limits], env)
            print(f"database {name}; load generator: {generator.name}", flush=True)
            port = free_port()
            serve = [
                sys.executable,
                "-m",
                "onehazel",
                "serve",
                "--port",
                str(port),
                "--database-url",
                database_url,
            ]
            serve += ["--workers", str(args.workers), "--log-level", args.log_level]
            onehazel = Target("onehazel", port, operator["liveKey"], args.players)
            async with running(serve, env=env, log=workdir / "onehazel.log", port=port) as pid:
                print(
                    f"onehazel serve pid {pid} on port {port}; upserting {args.players} players", flush=True
                )
                await prepare(port, onehazel.key, args.players)
                ours = await measure(generator, onehazel, args, pgid=pid, log=workdir / "onehazel.log")
            checked = await verify(database_url, onehazel.runs)

            port = free_port()
            uvicorn = [sys.executable, "-m", "uvicorn", "echo_app:app", "--app-dir", str(BENCH_DIR)]
            uvicorn += ["--host", HOST, "--port", str(port), "--workers", str(args.workers)]
            uvicorn += [
                "--http",
                "httptools",
                "--loop",
                "uvloop",
                "--no-access-log",
                "--log-level",
                "warning",
            ]
            echo = Target("echo", port, onehazel.key, args.players)
            async with running(uvicorn, env=env, log=workdir / "echo.log", port=port) as pid:
                baseline = await measure(generator, echo, args, pgid=pid, log=workdir / "echo.log")
    finally:
        await admin(args.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    report(args, generator.name, ours, baseline, checked, load_before=load_before)
    return 0 if checked.ok and not ours.errors and not baseline.errors else 1


def _generator_choice(args: argparse.Namespace) -> Callable[[Path], Generator]:
    wrk = shutil.which("wrk")
    if args.generator == "wrk" and wrk is None:
        raise SystemExit("error: --generator wrk but wrk is not on the PATH (apt-get install wrk)")
    if args.generator == "python" or wrk is None:
        if wrk is None:
            print("wrk not found: falling back to the pure-asyncio generator (may be the bottleneck)")
        return lambda _workdir: AsyncioGenerator()
    return lambda workdir: WrkGenerator(wrk, threads=args.wrk_threads, workdir=workdir)


def _row(*cells: object) -> str:
    widths = (15, 10, 8, 10, 9, 9, 13)
    return "".join(
        f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def report(
    args: argparse.Namespace,
    generator: str,
    ours: LoadResult,
    echo: LoadResult,
    v: Verification,
    *,
    load_before: float,
) -> None:
    sample = event_request(prefix="m", tid=1, n=1, players=args.players)[2]
    path = EVENT_PATH.replace("player-%05d", "{id}")
    print()
    print(f"POST {path}: {args.duration:g} s measured after {args.warmup:g} s warm-up,")
    print(f"{args.concurrency} keep-alive clients, --workers {args.workers} (uvicorn, httptools, uvloop),")
    print(f"onehazel serve --log-level {args.log_level}, {args.players} players, bodies ~{len(sample)} bytes")
    print(f"load generator: {generator}")
    cores, load_after = os.cpu_count() or 1, os.getloadavg()[0]
    print(f"machine: {cores} cores, 1-minute load average {load_before:.1f} before, {load_after:.1f} after")
    if load_before > cores / 2:
        print("  (other work was running on this machine before the bench started: figures will be low)")
    print()
    print(_row("target", "requests", "errors", "req/s", "p50 ms", "p99 ms", "cpu ms/req"))
    for label, r in (("onehazel", ours), ("echo", echo)):
        cells = (f"{r.rps:.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", r.cpu_ms_per_request)
        print(_row(label, r.responses, r.errors, *cells))
    ratios = (_ratio(ours.rps, echo.rps), _ratio(ours.p50_ms, echo.p50_ms), _ratio(ours.p99_ms, echo.p99_ms))
    cpu = (
        _ratio(ours.cpu_seconds / ours.responses, echo.cpu_seconds / echo.responses)
        if ours.cpu_seconds is not None and echo.cpu_seconds is not None and ours.responses and echo.responses
        else "-"
    )
    print(_row("onehazel/echo", "", "", *ratios, cpu))
    print(_row("target", "", "", f">= {TARGET_RPS:,}", "", f"<= {TARGET_P99_MS:g}", ""))
    print("(cpu ms/req: CPU time of the target's own processes per answer; PostgreSQL not included)")
    events_per_s = ours.created / ours.seconds if ours.seconds else 0.0
    met = events_per_s >= TARGET_RPS and ours.p99_ms <= TARGET_P99_MS
    print()
    print(
        f"onehazel: {events_per_s:,.0f} events/s (201s), p99 {ours.p99_ms:.1f} ms; target >= "
        f"{TARGET_RPS:,} events/s with p99 <= {TARGET_P99_MS:g} ms: {'met' if met else 'NOT met'}"
    )
    for label, r in (("onehazel", ours), ("echo", echo)):
        other = {code: n for code, n in sorted(r.statuses.items()) if code != 201}
        if other or r.socket_errors:
            print(f"{label}: NON-201 answers {other}, socket errors/timeouts {r.socket_errors}")
        else:
            print(f"{label}: every answer was 201")
    verdict = "OK, nothing lost, nothing doubled" if v.ok else "MISMATCH"
    print(
        f"database check (warm-up + measured): {v.rows} events rows for {v.created} 201 answers; "
        f"{v.cut_off} requests cut off without an answer at the stop, {v.cut_off_stored} of them "
        f"stored: {verdict}"
    )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=20, help="measured seconds per target (default 20)")
    parser.add_argument("--warmup", type=float, default=5, help="warm-up seconds per target (default 5)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent keep-alive clients (32)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes for both targets")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("ONEHAZEL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL server (and a database to connect to) where the bench database is created",
    )
    parser.add_argument("--players", type=int, default=300, help="players the events are spread over (300)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--wrk-threads", type=int, default=1, help="wrk threads (1 leaves a core to the server)"
    )
    parser.add_argument("--log-level", default="info", help="onehazel serve --log-level (default info)")
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        return run(bench(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted: servers stopped, bench database dropped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
