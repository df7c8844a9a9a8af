"""The retention sweep over 1,000,000 expired events on PostgreSQL, and ingestion beside it.

Run by hand (from the repository root)::

    .venv/bin/python bench/retention.py [--events 1000000] [--window 4] [--windows 4]
        [--concurrency 32] [--chunk 5000] [--pause 0]
        [--database-url postgresql://postgres@127.0.0.1:5432/test]

One run:

1. creates a fresh database ``onehazel_bench_<random>``, runs ``onehazel migrate`` and
   ``onehazel operators create``, starts the real ``onehazel serve`` (its own sweep turned off:
   ``ONEHAZEL_RETENTION_INTERVAL_SECONDS=0``), chooses ``tpl_igaming``, upserts ``--players``
   players and sets ``retention.eventsDays`` to 30;
2. loads ``--events`` events dated 40 days ago straight into the server's ``events`` table with
   ``COPY`` (then ``VACUUM ANALYZE``, as a steady-state table would be), and runs
   ``onehazel retention run --json`` alone: rows/s and the longest single transaction;
3. loads them again, measures single-event ingestion (``POST .../events`` with ``--concurrency``
   keep-alive clients, the load generator of ``single_writes.py``) alone in ``--windows``
   windows of ``--window`` seconds, then starts the same sweep and measures ingestion in the
   same windows while it runs (only windows that end before the sweep does count);
4. prints the sweep figures, ingestion solo vs beside the sweep and the ratio (target >= 80 %),
   and checks with SQL that no expired event is left and every 201 answer has its row. The
   database is dropped and every process stopped at the end, even after an error or Ctrl-C.

Nothing is asserted: targets are printed beside the measurements. On a small machine the load
generator, the server, the sweep and PostgreSQL share the cores; compare runs made back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import single_writes as sw  # noqa: E402  (a sibling script, not a package)

DAY_MICROS = 86_400 * 1_000_000
TARGET_RATIO = 0.80
COLUMNS = [
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
]
DATA = '{"type": "deposit", "amount": "10.00", "currency": "EUR", "method": "card"}'


@dataclass
class Sweep:
    seconds: float
    report: dict[str, Any]

    @property
    def rows(self) -> int:
        return int(self.report["totals"]["eventsExpired"])

    @property
    def sweep_seconds(self) -> float:
        """The sweep's own time (without the CLI process starting up)."""
        return float(self.report["elapsedMs"]) / 1000

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.sweep_seconds if self.sweep_seconds else 0.0

    @property
    def longest_ms(self) -> float:
        return float(self.report["longestTransactionMs"])


async def seed_expired(database_url: str, workspace_id: str, *, count: int, players: int, tag: str) -> float:
    """COPY ``count`` events dated 40 days ago into the server's own events table; seconds taken."""
    started = time.perf_counter()
    old = int(time.time() * 1_000_000) - 40 * DAY_MICROS
    records = (
        (
            workspace_id,
            f"{tag}-{i}",
            f"player-{i % players:05d}",
            "transaction",
            DATA,
            None,
            "bench",
            None,
            old + i,
            old,
            i,
        )
        for i in range(count)
    )
    conn = await asyncpg.connect(sw.asyncpg_dsn(database_url), timeout=10)
    try:
        await conn.copy_records_to_table("events", records=records, columns=COLUMNS)
        await conn.execute("VACUUM ANALYZE events")
    finally:
        await conn.close()
    return time.perf_counter() - started


def start_sweep(database_url: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], float]:
    command = [sys.executable, "-m", "onehazel", "retention", "run", "--json", "--database-url", database_url]
    with log.open("wb") as err:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=err, cwd=sw.BENCH_DIR.parent)
    return proc, time.perf_counter()


def finish_sweep(proc: subprocess.Popen[bytes], started: float, log: Path) -> Sweep:
    out, _ = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"onehazel retention run failed ({proc.returncode}): {log.read_text()}")
    return Sweep(seconds, json.loads(out))


async def windows(
    generator: Any, target: Any, *, prefix: str, count: int, seconds: float, concurrency: int
) -> list[Any]:
    return [
        await generator.run(target, prefix=f"{prefix}{i}", seconds=seconds, concurrency=concurrency)
        for i in range(count)
    ]


async def windows_during(
    generator: Any,
    target: Any,
    proc: subprocess.Popen[bytes],
    *,
    prefix: str,
    seconds: float,
    concurrency: int,
) -> tuple[list[Any], list[Any]]:
    """Load windows while the sweep runs: (those that ended before it did, the rest)."""
    inside, after, i = [], [], 0
    while proc.poll() is None:
        result = await generator.run(target, prefix=f"{prefix}{i}", seconds=seconds, concurrency=concurrency)
        (inside if proc.poll() is None else after).append(result)
        i += 1
    return inside, after


def rps(results: list[Any]) -> float:
    seconds = sum(r.seconds for r in results)
    return sum(r.responses for r in results) / seconds if seconds else 0.0


async def workspace_of(database_url: str, operator_id: str) -> str:
    conn = await asyncpg.connect(sw.asyncpg_dsn(database_url), timeout=10)
    try:
        found = await conn.fetchval(
            "SELECT id FROM workspaces WHERE operator_id = $1 AND mode = 'live'", operator_id
        )
    finally:
        await conn.close()
    return str(found)


async def leftovers(database_url: str, tags: list[str]) -> int:
    conn = await asyncpg.connect(sw.asyncpg_dsn(database_url), timeout=10)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM events WHERE split_part(event_id, '-', 1) = ANY($1::text[])", tags
            )
        )
    finally:
        await conn.close()


async def bench(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
    env = {**os.environ, "ONEHAZEL_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    env.pop("ONEHAZEL_DATABASE_URL", None)
    env.update(
        ONEHAZEL_RETENTION_INTERVAL_SECONDS="0",
        ONEHAZEL_RETENTION_CHUNK=str(args.chunk),
        ONEHAZEL_RETENTION_PAUSE_SECONDS=str(args.pause),
    )
    name = f"onehazel_bench_{uuid.uuid4().hex[:10]}"
    database_url = sw.with_database(args.database_url, name)
    await sw.admin(args.database_url, f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="onehazel-bench-") as tmp:
            workdir = Path(tmp)
            wrk = shutil.which("wrk")
            generator: Any = (
                sw.WrkGenerator(wrk, threads=1, workdir=workdir)
                if wrk and not args.python_generator
                else sw.AsyncioGenerator()
            )
            sw.onehazel_cli(["migrate", "--database-url", database_url], env)
            operator = json.loads(
                sw.onehazel_cli(
                    ["operators", "create", "bench", "--json", "--database-url", database_url], env
                )
            )
            workspace_id = await workspace_of(database_url, operator["operatorId"])
            port = sw.free_port()
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
            serve += ["--log-level", "warning"]
            target = sw.Target("onehazel", port, operator["liveKey"], args.players)
            print(f"database {name}; load generator: {generator.name}", flush=True)
            async with sw.running(serve, env=env, log=workdir / "serve.log", port=port):
                await sw.prepare(port, target.key, args.players)
                async with httpx.AsyncClient(timeout=30) as http:
                    answer = await http.put(
                        f"http://{sw.HOST}:{port}{sw.BASE}/settings",
                        json={"retention": {"eventsDays": 30}},
                        headers={"Authorization": f"Bearer {target.key}"},
                    )
                    answer.raise_for_status()

                seeded = await seed_expired(
                    database_url, workspace_id, count=args.events, players=args.players, tag="old1"
                )
                print(f"COPY of {args.events:,} expired events + VACUUM ANALYZE: {seeded:.1f} s", flush=True)
                print("sweep alone ...", flush=True)
                alone = finish_sweep(
                    *start_sweep(database_url, env, workdir / "sweep1.log"), workdir / "sweep1.log"
                )

                seeded = await seed_expired(
                    database_url, workspace_id, count=args.events, players=args.players, tag="old2"
                )
                print(f"COPY again: {seeded:.1f} s; warm-up {args.window:g} s", flush=True)
                warmup = await windows(
                    generator, target, prefix="w", count=1, seconds=args.window, concurrency=args.concurrency
                )
                print(f"ingestion alone: {args.windows} x {args.window:g} s ...", flush=True)
                solo = await windows(
                    generator,
                    target,
                    prefix="s",
                    count=args.windows,
                    seconds=args.window,
                    concurrency=args.concurrency,
                )
                print("ingestion beside the sweep ...", flush=True)
                proc, started = start_sweep(database_url, env, workdir / "sweep2.log")
                inside, after = await windows_during(
                    generator, target, proc, prefix="d", seconds=args.window, concurrency=args.concurrency
                )
                beside = finish_sweep(proc, started, workdir / "sweep2.log")
            left = await leftovers(database_url, ["old1", "old2"])
            checked = await sw.verify(database_url, [*warmup, *solo, *inside, *after])
    finally:
        await sw.admin(args.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return report(args, alone, beside, solo, inside, left=left, checked=checked)


def report(
    args: argparse.Namespace,
    alone: Sweep,
    beside: Sweep,
    solo: list[Any],
    inside: list[Any],
    *,
    left: int,
    checked: Any,
) -> int:
    print()
    print(f"retention sweep of {args.events:,} expired events (chunk {args.chunk}, pause {args.pause:g} s)")
    print(
        f"{'':18} {'rows':>10} {'sweep s':>8} {'process s':>9} {'rows/s':>9} "
        f"{'transactions':>13} {'longest tx':>11}"
    )
    for label, sweep in (("alone", alone), ("beside ingestion", beside)):
        print(
            f"{label:18} {sweep.rows:>10,} {sweep.sweep_seconds:>8.1f} {sweep.seconds:>9.1f} "
            f"{sweep.rows_per_second:>9,.0f} {sweep.report['transactions']:>13} {sweep.longest_ms:>8.1f} ms"
        )
    solo_rps, inside_rps = rps(solo), rps(inside)
    errors = sum(r.errors for r in [*solo, *inside])
    print()
    print(f"single-event ingestion, {args.concurrency} clients, {args.window:g} s windows")
    print(f"  alone:            {solo_rps:8.0f} req/s ({len(solo)} windows)")
    if inside:
        ratio = inside_rps / solo_rps if solo_rps else 0.0
        p99 = max(r.p99_ms for r in inside)
        print(f"  beside the sweep: {inside_rps:8.0f} req/s ({len(inside)} windows, worst p99 {p99:.1f} ms)")
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(f"  ratio:            {ratio:8.1%}   (target >= {TARGET_RATIO:.0%}: {verdict})")
    else:
        print(
            "  beside the sweep: the sweep ended before one window did; "
            "use more --events or a shorter --window"
        )
    print()
    print(f"expired events left: {left}; non-201 answers: {errors}; every 201 stored: {checked.ok}")
    return 0 if left == 0 and checked.ok and not errors else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    default_url = os.environ.get("ONEHAZEL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="expired events to sweep (1,000,000)")
    parser.add_argument("--window", type=float, default=1.0, help="seconds per ingestion window (1)")
    parser.add_argument("--windows", type=int, default=8, help="ingestion windows measured alone (8)")
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive ingestion clients (32)")
    parser.add_argument("--players", type=int, default=300, help="players the events are spread over (300)")
    parser.add_argument("--chunk", type=int, default=5000, help="ONEHAZEL_RETENTION_CHUNK (5000)")
    parser.add_argument("--pause", type=float, default=0.0, help="ONEHAZEL_RETENTION_PAUSE_SECONDS (0)")
    parser.add_argument(
        "--python-generator", action="store_true", help="the asyncio generator even if wrk exists"
    )
    parser.add_argument(
        "--database-url", default=default_url, help="a PostgreSQL server (CREATE DATABASE rights)"
    )
    return parser.parse_args(argv)


def main() -> int:
    try:
        return asyncio.run(bench(parse_args()))
    except asyncio.CancelledError:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
