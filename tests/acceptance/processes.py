"""Real ``onehazel`` processes for acceptance tests: start, wait until ready, kill, clean up.

Each process runs ``python -m onehazel ...`` with no ONEHAZEL_* configuration
inherited from the test runner (only what the test passes), its output going to
log files that a failing assertion can show. ``Launcher.close()`` kills whatever
is still running, so a failed test never leaves a server behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa

from onehazel.storage.engine import create_engine
from tests.conftest import PG_SERVER_URL, REQUIRE_PG, TEST_MASTER_KEY, _migrate, _pg_admin, _with_database

BASE = "/operator-data-api"
# Generous bounds that only catch hangs; nothing asserts how fast anything is.
READY_SECONDS = 60.0
JOBS_SECONDS = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The runner's environment without any ONEHAZEL_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEHAZEL_")}
    env.update(extra)
    return env


def postgres_env(url: str, **extra: str) -> dict[str, str]:
    return clean_env(ONEHAZEL_DATABASE_URL=url, ONEHAZEL_MASTER_KEY=TEST_MASTER_KEY, **extra)


class Process:
    """One ``python -m onehazel`` subprocess with its output in log files."""

    def __init__(self, name: str, args: list[str], *, cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.args = args
        self.out_path = logs / f"{name}.out"
        self.err_path = logs / f"{name}.err"
        self._out: IO[bytes] = self.out_path.open("ab")
        self._err: IO[bytes] = self.err_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "onehazel", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- {self.name} stdout ---\n{self.stdout()}\n--- {self.name} stderr ---\n{self.stderr()}"

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill."""
        if self.running():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self, *, timeout: float) -> int | None:
        """SIGTERM and wait up to ``timeout``; the exit code, or None if it did not exit."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.running():
            self.kill()
        self.popen.wait()
        self._out.close()
        self._err.close()


class Server(Process):
    """``onehazel serve`` on a free port."""

    def __init__(self, name: str, *, cwd: Path, env: dict[str, str], logs: Path, port: int | None) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        super().__init__(name, ["serve", "--port", str(self.port)], cwd=cwd, env=env, logs=logs)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while time.monotonic() < deadline:
                assert self.running(), f"{self.name} exited with {self.popen.returncode}\n{self.output()}"
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/readyz").status_code == 200:
                        return
                time.sleep(0.1)
        raise AssertionError(f"{self.name} never became ready\n{self.output()}")

    def client(self, key: str) -> ApiClient:
        return ApiClient(self.base_url, key)


class Launcher:
    """Starts processes for one test and kills every one of them in ``close()``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.processes: list[Process] = []
        self.clients: list[ApiClient] = []

    def serve(
        self, name: str, *, env: dict[str, str], cwd: Path | None = None, port: int | None = None
    ) -> Server:
        """Start ``onehazel serve`` and wait until /readyz answers 200."""
        server = Server(name, cwd=cwd or self.workdir, env=env, logs=self.logs, port=port)
        self.processes.append(server)
        server.wait_ready()
        return server

    def worker(self, name: str, *, env: dict[str, str], concurrency: int = 2) -> Process:
        """Start ``onehazel worker`` and wait until it says it is running."""
        process = Process(
            name, ["worker", "--concurrency", str(concurrency)], cwd=self.workdir, env=env, logs=self.logs
        )
        self.processes.append(process)
        deadline = time.monotonic() + READY_SECONDS
        while "worker running" not in process.stdout():
            assert process.running(), f"{name} exited with {process.popen.returncode}\n{process.output()}"
            assert time.monotonic() < deadline, f"{name} never started\n{process.output()}"
            time.sleep(0.05)
        return process

    def cli(self, *args: str, env: dict[str, str]) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "onehazel", *args],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"onehazel {args}: {result.returncode}\n{result.stdout}{result.stderr}"
        return result.stdout

    def create_operator(self, name: str, *, env: dict[str, str]) -> dict[str, str]:
        created: dict[str, str] = json.loads(self.cli("operators", "create", name, "--json", env=env))
        return created

    def output(self) -> str:
        return "\n".join(p.output() for p in self.processes)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for process in self.processes:
            process.close()


class ApiClient:
    """A synchronous client for one server and one key; paths are relative to the base path."""

    def __init__(self, base_url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=base_url + BASE, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.put(path, **kwargs)

    def close(self) -> None:
        self.http.close()

    def submit(self, kind: str, items: list[dict[str, Any]]) -> str:
        """POST /batch/{kind}; asserts the 202 and returns the job id."""
        response = self.post(f"/batch/{kind}", json={kind: items})
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["status"] == "queued"
        assert body["total"] == len(items)
        return str(body["jobId"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"/batch/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def all_items(self, job_id: str) -> list[dict[str, Any]]:
        """Every item outcome of a job, following nextCursor to the end."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1000}
        while True:
            response = self.get(f"/batch/jobs/{job_id}/items", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            items += page["data"]
            if page["nextCursor"] is None:
                return items
            params["cursor"] = page["nextCursor"]


def wait_completed(
    client: ApiClient, job_ids: list[str], *, launcher: Launcher | None = None
) -> dict[str, dict[str, Any]]:
    """Poll until every job is completed (or failed); fails with the process logs on a hang."""
    deadline = time.monotonic() + JOBS_SECONDS
    jobs: dict[str, dict[str, Any]] = {}
    while True:
        jobs = {job_id: client.job(job_id) for job_id in job_ids}
        if all(job["status"] in ("completed", "failed") for job in jobs.values()):
            return jobs
        if time.monotonic() > deadline:
            progress = {j: (b["status"], b["processed"], b["total"]) for j, b in jobs.items()}
            logs = launcher.output() if launcher else ""
            raise AssertionError(f"jobs never finished: {progress}\n{logs}")
        time.sleep(0.2)


def query(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run one SQL statement against the database at ``url`` and return its rows."""

    async def run() -> list[tuple[Any, ...]]:
        engine = create_engine(url, null_pool=True)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(sa.text(sql), params)
                return [tuple(row) for row in result]
        finally:
            await engine.dispose()

    return asyncio.run(run())


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, migrated PostgreSQL database of its own, dropped afterwards.

    Its own database, not the session's: a server's batch worker claims every
    queued job it can see, which must never include other tests' jobs.
    """
    name = f"onehazel_acc_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL not reachable at {PG_SERVER_URL} ({type(exc).__name__}: {exc})"
        if REQUIRE_PG:
            pytest.fail(f"{reason}; CI requires PostgreSQL", pytrace=False)
        pytest.skip(reason)
    url = _with_database(PG_SERVER_URL, name)
    try:
        asyncio.run(_migrate(url))
        yield url
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
