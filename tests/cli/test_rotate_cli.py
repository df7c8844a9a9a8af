"""``onehazel keys rotate-master`` and ``keys master-status`` as an operator runs them, on both databases.

The documented procedure (README, "Key rotation"): data written under key A;
key B added last ([A, B]); ``rotate-master`` reports progress and finally which
old keys no data needs; with only [B] the server starts and serves the data;
with only [A] every start-up (``serve``, ``worker``) and the rotation itself
refuse with one clear line naming the missing key B.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from onehazel.services.master_keys import MasterKeys
from onehazel.storage.tables import entity_keys
from tests.acceptance.processes import Launcher, clean_env
from tests.cli.test_cli import ok, one_line_error, onehazel
from tests.integration.test_key_rotation import KEY_A, KEY_B, World, fresh_database, opened, populate


def keys_env(*keys: str) -> dict[str, str]:
    return {"ONEHAZEL_MASTER_KEY": ",".join(keys)}


class Program:
    """``python -m onehazel`` on one database, with the master keys of each call."""

    def __init__(self, url: str, cwd: Path) -> None:
        self.url = url
        self.cwd = cwd

    def __call__(self, *args: str, keys: tuple[str, ...]) -> Any:
        return onehazel(*args, "--database-url", self.url, cwd=self.cwd, env=keys_env(*keys))

    def json(self, *args: str, keys: tuple[str, ...]) -> Any:
        return json.loads(ok(self(*args, "--json", keys=keys)))


async def _populate(url: str) -> World:
    async with opened(url, KEY_A) as services:
        return await populate(services)


async def _usage(url: str, *keys: str) -> dict[str, Any]:
    async with opened(url, *keys) as services:
        return (await MasterKeys(services.core.store, services.core.keys).usage()).to_wire()


async def _rotate(url: str, *keys: str) -> None:
    async with opened(url, *keys) as services:
        await MasterKeys(services.core.store, services.core.keys).rotate()


async def _tamper(url: str, external_id: str, data_key: str) -> None:
    async with opened(url, KEY_A) as services, services.core.store.begin() as uow:
        await uow.conn.execute(
            sa.update(entity_keys).where(entity_keys.c.external_id == external_id).values(data_key=data_key)
        )


@pytest.fixture
def seeded(backend: str, tmp_path: Path) -> Iterator[tuple[Program, World]]:
    """A database of its own holding entities, events, secrets and a queued batch under key A."""
    with fresh_database(backend, tmp_path) as url:
        yield Program(url, tmp_path), asyncio.run(_populate(url))


A, AB, B = (KEY_A,), (KEY_A, KEY_B), (KEY_B,)


def counts(status: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {k["keyId"]: (k["entityKeys"], k["workspaceSecrets"], k["jobPayloads"]) for k in status["keys"]}


def test_rotate_master_moves_all_data_and_names_the_keys_safe_to_remove(
    seeded: tuple[Program, World], tmp_path: Path
) -> None:
    program, world = seeded
    status = program.json("keys", "master-status", keys=AB)
    assert status["currentKey"] == "B"
    assert counts(status) == {"A": (5, 1, 1), "B": (0, 0, 0)}
    assert status["missing"] == []
    assert status["unused"] == []

    dry = ok(program("keys", "rotate-master", "--dry-run", keys=AB))
    assert "master key B (current): 0 entity keys, 0 workspace secrets, 0 job payloads" in dry
    assert "master key A: 5 entity keys, 1 workspace secrets, 1 job payloads" in dry
    assert counts(asyncio.run(_usage(program.url, *AB)))["A"] == (5, 1, 1)  # nothing changed

    out = ok(program("keys", "rotate-master", "--batch-size", "2", keys=AB))
    lines = out.strip().splitlines()
    assert lines[0] == "rotating to master key B (configured: A, B)"
    assert "entity keys: done: 5 scanned, 5 re-wrapped" in lines
    assert "workspace secrets: done: 1 scanned, 1 re-wrapped" in lines
    assert "job payloads: done: 1 scanned, 1 re-wrapped" in lines
    assert lines[-1].startswith("no data left under keys: A ")
    assert counts(asyncio.run(_usage(program.url, *B))) == {"B": (5, 1, 1)}

    again = program.json("keys", "rotate-master", keys=AB)
    assert again["rewrapped"] == {"entityKeys": 0, "workspaceSecrets": 0, "jobPayloads": 0}
    assert again["unusedKeys"] == ["A"]
    assert again["stillInUse"] == {}

    # With only the new key, a real server starts and serves the data written under the old one.
    launcher = Launcher(tmp_path / "serve")
    try:
        env = clean_env(ONEHAZEL_DATABASE_URL=program.url, **keys_env(*B))
        server = launcher.serve("only-b", env=env)
        api = server.client(world.live_key)
        launcher.clients.append(api)
        response = api.get("/entities/p-3")
        assert response.status_code == 200, response.text
        assert response.json()["attributes"] == world.players["p-3"]
    finally:
        launcher.close()


def test_only_the_old_key_after_rotation_is_refused_with_one_clear_line(
    seeded: tuple[Program, World],
) -> None:
    program, _ = seeded
    asyncio.run(_rotate(program.url, *AB))
    commands = [["serve", "--port", "1"], ["worker"], ["keys", "rotate-master"], ["keys", "master-status"]]

    with ThreadPoolExecutor(len(commands)) as pool:
        results = list(pool.map(lambda command: program(*command, keys=A), commands))

    for command, result in zip(commands, results, strict=True):
        line = one_line_error(result)
        assert "master key B, not configured (configured: A)" in line, (command, line)
    status = results[-1]
    assert status.returncode == 1
    assert "master key A (current): 0 entity keys, 0 workspace secrets, 0 job payloads" in status.stdout
    assert (
        "master key B (NOT CONFIGURED): 5 entity keys, 1 workspace secrets, 1 job payloads" in status.stdout
    )


def test_an_undecryptable_item_is_reported_and_keeps_its_old_key_needed(
    seeded: tuple[Program, World],
) -> None:
    program, _ = seeded
    asyncio.run(_tamper(program.url, "p-2", "v1.A." + "x" * 80))

    result = program("keys", "rotate-master", keys=AB)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "warning: 1 items could not be decrypted and stay as they were" in result.stdout
    assert "still in use: A (1 items)" in result.stdout
    assert "no data left under keys" not in result.stdout
    # Only the damaged key stayed under A; everything else moved.
    assert counts(asyncio.run(_usage(program.url, *AB))) == {"A": (1, 0, 0), "B": (4, 1, 1)}


def test_rotate_master_rejects_a_zero_batch_size(tmp_path: Path) -> None:
    result = onehazel(
        "keys", "rotate-master", "--batch-size", "0", "--database-url", "sqlite:///x.db", cwd=tmp_path
    )

    assert "--batch-size" in one_line_error(result)
    assert not (tmp_path / "x.db").exists()
