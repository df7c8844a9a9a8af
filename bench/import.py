"""``onehazel import`` of 1,000,000 events from a file into PostgreSQL, against the database's own rate.

Run by hand (from the repository root)::

    .venv/bin/python bench/import.py [--events 1000000] [--players 1000] [--raw-events N]
        [--database-url postgresql://postgres@127.0.0.1:5432/test]

One run:

1. writes ``--events`` transaction events as NDJSON into a temporary file, streaming (one line
   at a time), **without eventIds**, so the importer derives every one (``imp_`` + SHA-256 of the
   file's identity, line number and line), as it does for real history files;
2. starts the real ``python -m onehazel serve`` (with its in-process batch worker) on a fresh
   PostgreSQL database ``onehazel_bench_<random>`` migrated by ``onehazel migrate``, with a fresh
   master key, creates an operator, chooses ``tpl_igaming`` and creates the players (the same
   helpers as ``bench/batch_ingest.py``);
3. runs ``python -m onehazel import FILE --kind events --json`` as a subprocess, timed from its
   start (including its first pass that hashes and counts the file) to its exit, and reads its
   peak memory: ``ru_maxrss`` of that very child from ``wait4`` (the kernel's high-water mark,
   the same figure as ``VmHWM``), cross-checked with ``VmHWM`` polled from ``/proc`` while it
   runs; then checks with SQL that exactly ``--events`` events are stored;
4. runs the very same command again: every batch's Idempotency-Key returns the job already
   made, so nothing new is stored (checked with SQL) and the run shows the cost of a re-run;
5. stops the server and measures the database's own rate for ``--raw-events`` rows of the same
   kind (default: as many as ``--events``, since a table's insert rate falls as it grows) with
   ``bench/batch_ingest.py``'s measurement (COPY into a staging table + ``INSERT .. SELECT ..
   ON CONFLICT DO NOTHING`` in 5000-row transactions, into a second fresh database with the
   server's own schema);
6. prints events/s of the import and of the raw inserts, their ratio, and the importer's peak
   memory beside its target (< 150 MB).

Nothing is asserted. Every process is stopped and both databases are dropped, also on Ctrl-C.
On a 2-core machine the importer, the server and PostgreSQL share the CPU: run it twice.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batch_ingest as bi  # noqa: E402  (the sibling benchmark's helpers)

TARGET_MEMORY_MB = 150.0


def write_events(path: Path, count: int, players: int) -> int:
    """``count`` transaction events as NDJSON, without eventIds; the file's size in bytes."""
    base = int(time.time()) - 86_400 * 30
    with path.open("wb", buffering=1 << 20) as f:
        for n in range(count):
            p = (n * 7919) % players
            event = {
                "externalId": bi.player_id(p),
                "type": "transaction",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + n)),
                "data": {
                    "type": bi.TX_TYPES[n % len(bi.TX_TYPES)],
                    "amount": f"{1 + n % 500}.{n % 100:02d}",
                    "currency": bi.CURRENCIES[p % 4],
                    "method": bi.METHODS[n % 3],
                    "status": "completed",
                    "transaction_id": f"tx-{n}",
                },
            }
            f.write(orjson.dumps(event) + b"\n")
    return path.stat().st_size


class HwmSampler:
    """Polls VmHWM of one process every 50 ms while it runs; keeps the last value seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            value = bi.proc_status_kb(self.pid, "VmHWM")
            if value is not None:
                self.kb = max(self.kb, value)
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_import(path: Path, *, url: str, key: str, cwd: Path) -> tuple[float, float, dict[str, Any]]:
    """(seconds, peak RSS MB, --json summary) of one ``onehazel import`` subprocess."""
    env = dict(bi.CLEAN_ENV, ONEHAZEL_API_URL=url, ONEHAZEL_API_KEY=key)
    args = [sys.executable, "-m", "onehazel", "import", str(path), "--kind", "events", "--json"]
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = HwmSampler(proc.pid)
    out_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read() if proc.stdout else b""))
    reader.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        raise
    seconds = time.perf_counter() - start
    sampler.stop()
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"onehazel import exited {proc.returncode}: {err.strip()[-800:]}")
    peak_kb = max(usage.ru_maxrss, sampler.kb)  # ru_maxrss is in KiB on Linux
    return seconds, peak_kb / 1024, json.loads(b"".join(out_chunks))


async def count_events(url: str) -> int:
    conn = await asyncpg.connect(bi.asyncpg_dsn(url), timeout=10)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()


def prepare_server(url: str, env: dict[str, str], cwd: Path, players: int) -> tuple[bi.Server, str]:
    """The real server on ``url`` with an operator, tpl_igaming and the players; (server, live key)."""
    created = json.loads(
        bi.onehazel(["operators", "create", "bench", "--json", "--database-url", url], env=env, cwd=cwd)
    )
    server = bi.Server(env=env, cwd=cwd, database_url=url)
    try:
        server.wait_ready()
        client = bi.Client(server.url, created["liveKey"])
        try:
            client.http.put("/settings", json={"templateId": "tpl_igaming"}).raise_for_status()
            jobs = client.wait([client.submit("entities", body) for body in bi.player_batches(players)])
        finally:
            client.close()
        made = sum(j["succeeded"] for j in jobs)
        if made != players:
            raise RuntimeError(f"only {made} of {players} players were created")
    except BaseException:
        server.stop()
        raise
    return server, str(created["liveKey"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the file (default 1000000)")
    parser.add_argument("--players", type=int, default=1000, help="players the events spread over")
    parser.add_argument(
        "--raw-events", type=int, default=None, help="rows for the raw database rate (default: --events)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("ONEHAZEL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL server to create the benchmark databases on (any existing database in the URL)",
    )
    args = parser.parse_args()
    args.raw_events = args.raw_events or args.events
    if min(args.events, args.players, args.raw_events) < 1:
        parser.error("--events, --players and --raw-events must be positive")

    env = dict(bi.CLEAN_ENV, ONEHAZEL_MASTER_KEY="bench:" + base64.b64encode(os.urandom(32)).decode())
    with tempfile.TemporaryDirectory(prefix="onehazel-import-bench-") as tmp:
        cwd = Path(tmp)
        path = cwd / "history.ndjson"
        started = time.perf_counter()
        size = write_events(path, args.events, args.players)
        bi.log(f"wrote {args.events:,} events ({size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f} s")
        with bi.pg_databases(args.database_url, 2) as (url, raw_url):
            for target in (url, raw_url):
                bi.onehazel(["migrate", "--database-url", target], env=env, cwd=cwd)
            server, key = prepare_server(url, env, cwd, args.players)
            try:
                bi.log(f"server pid {server.pid} on port {server.port}; {args.players} players created")
                first = run_import(path, url=server.url, key=key, cwd=cwd)
                bi.log(f"import: {first[0]:.1f} s, peak RSS {first[1]:.0f} MB, summary {first[2]}")
                stored = asyncio.run(count_events(url))
                again = run_import(path, url=server.url, key=key, cwd=cwd)
                bi.log(f"re-run: {again[0]:.1f} s, peak RSS {again[1]:.0f} MB")
                stored_again = asyncio.run(count_events(url))
            finally:
                server.stop()
            rows = bi.raw_rows(bi.make_events("raw", args.raw_events, args.players), bi.raw_workspace_id())
            raw_seconds, _ = asyncio.run(bi.postgres_raw(raw_url, rows))
    report(args, first, again, stored, stored_again, args.raw_events / raw_seconds)
    return 0


def report(
    args: argparse.Namespace,
    first: tuple[float, float, dict[str, Any]],
    again: tuple[float, float, dict[str, Any]],
    stored: int,
    stored_again: int,
    raw_rate: float,
) -> None:
    rate = args.events / first[0]
    header = (
        f"{'events':>9} {'import ev/s':>11} {'re-run ev/s':>11} {'raw ev/s':>9} {'import/raw':>10} "
        f"{'peak MB':>7} {'target':>7} {'stored':>9} {'after re-run':>12}"
    )
    print("\n" + header)
    print("-" * len(header))
    print(
        f"{args.events:>9,} {rate:>11,.0f} {args.events / again[0]:>11,.0f} {raw_rate:>9,.0f} "
        f"{rate / raw_rate:>9.2f}x {max(first[1], again[1]):>7.0f} {'<' + str(int(TARGET_MEMORY_MB)):>7} "
        f"{stored:>9,} {stored_again:>12,}"
    )
    summary = first[2]
    print(
        f"\nimport summary: {summary['succeeded']:,} succeeded, {summary['duplicates']:,} duplicates, "
        f"{summary['failed']:,} failed, {summary['malformed']:,} malformed, {summary['jobs']} jobs; "
        f"SQL count {'==' if stored == args.events else '!='} {args.events:,}; re-run stored "
        f"{stored_again - stored:,} more; peak memory {max(first[1], again[1]):.0f} MB "
        f"{'<' if max(first[1], again[1]) < TARGET_MEMORY_MB else 'NOT <'} {TARGET_MEMORY_MB:.0f} MB"
    )
    print(
        "\nimport ev/s: events in the file / wall time of the `onehazel import` process (start to exit, "
        "its hashing pass included); re-run: the same command again (every batch's Idempotency-Key "
        f"returns its job). raw: {args.raw_events:,} rows into the server's own schema, COPY + "
        "INSERT..SELECT..ON CONFLICT in 5000-row transactions (bench/batch_ingest.py). peak MB: the "
        "import process's peak RSS (wait4 ru_maxrss / VmHWM)."
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
