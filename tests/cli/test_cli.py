"""The real ``onehazel`` program in a subprocess, on SQLite and PostgreSQL.

What a user of the command line notices: keys printed once and never stored in
plain text, key management, ``--help`` everywhere, and one clear ``error:`` line
(never a traceback) for bad arguments or a database it cannot use.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer

from onehazel.cli import app
from onehazel.storage.engine import create_engine
from onehazel.storage.migrate import head_revision
from tests.conftest import PG_SERVER_URL, _pg_admin, _with_database
from tests.conftest import keyed_env as master_key_env

LIVE_KEY = re.compile(r"^oh_live_[A-Za-z0-9_-]{43}$")
TEST_KEY = re.compile(r"^oh_test_[A-Za-z0-9_-]{43}$")
UNREACHABLE_PG = "postgresql://postgres@127.0.0.1:1/x"


def onehazel(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m onehazel ARGS`` with no ONEHAZEL_* configuration except ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ONEHAZEL_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "onehazel", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the command failed with exactly one clear line on stderr; return that line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


class Cli:
    """The program bound to one database (URL flag and environment)."""

    def __init__(self, url: str, env: dict[str, str], cwd: Path) -> None:
        self.url = url
        self.env = env
        self.cwd = cwd

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return onehazel(*args, "--database-url", self.url, cwd=self.cwd, env=self.env)

    def json(self, *args: str) -> Any:
        return json.loads(ok(self(*args, "--json")))

    def api_key_rows(self, operator_id: str) -> list[dict[str, Any]]:
        return asyncio.run(_key_rows(self.url, operator_id))


async def _key_rows(url: str, operator_id: str) -> list[dict[str, Any]]:
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                sa.text(
                    "SELECT k.* FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id "
                    "WHERE w.operator_id = :operator_id"
                ),
                {"operator_id": operator_id},
            )
            return [dict(row) for row in result.mappings()]
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Cli:
    if request.param == "sqlite":
        # An explicit SQLite URL keeps its master key file beside the database.
        return Cli(f"sqlite:///{tmp_path / 'cli.db'}", {}, tmp_path)
    return Cli(str(request.getfixturevalue("postgres_url")), master_key_env(), tmp_path)


@pytest.fixture
def sqlite_cli(tmp_path: Path) -> Cli:
    """For output formats and checks made before any query: one backend is enough."""
    return Cli(f"sqlite:///{tmp_path / 'cli.db'}", {}, tmp_path)


@pytest.fixture
def empty_postgres_url(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database that exists but was never migrated."""
    name = f"onehazel_cli_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    yield _with_database(PG_SERVER_URL, name)
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _secret(key: str) -> str:
    return key.split("_", 2)[2]


# --- operators and keys -------------------------------------------------------------------------


def test_operators_create_prints_both_keys_once_as_json(cli: Cli) -> None:
    created = cli.json("operators", "create", "Acme Casino")

    assert set(created) == {"operatorId", "liveKey", "testKey"}
    assert created["operatorId"].startswith("op_")
    assert LIVE_KEY.match(created["liveKey"])
    assert TEST_KEY.match(created["testKey"])
    again = cli.json("operators", "create", "Acme Casino")
    assert again["operatorId"] != created["operatorId"]
    assert {again["liveKey"], again["testKey"]}.isdisjoint({created["liveKey"], created["testKey"]})


def test_operators_create_text_output_shows_both_keys(sqlite_cli: Cli) -> None:
    out = ok(sqlite_cli("operators", "create", "Text Casino"))

    assert re.search(r"oh_live_[A-Za-z0-9_-]{43}", out)
    assert re.search(r"oh_test_[A-Za-z0-9_-]{43}", out)
    assert re.search(r"op_\w+", out)


def test_keys_are_stored_only_as_hashes(cli: Cli) -> None:
    created = cli.json("operators", "create", "Hash Casino")
    keys = [created["liveKey"], created["testKey"]]

    rows = cli.api_key_rows(created["operatorId"])

    assert len(rows) == 2
    stored = " ".join(str(value) for row in rows for value in row.values())
    for key in keys:
        assert _secret(key) not in stored
    assert {row["key_hash"] for row in rows} == {hashlib.sha256(k.encode()).hexdigest() for k in keys}


def test_sqlite_file_never_holds_a_key_in_plain_text(tmp_path: Path) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'data' / 'keys.db'}", {}, tmp_path)
    created = cli.json("operators", "create", "File Casino")
    extra = cli.json("keys", "create", "--operator", created["operatorId"], "--mode", "live")

    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir() if p.name.startswith("keys.db"))

    assert raw  # the database (and any WAL beside it) was written
    for key in (created["liveKey"], created["testKey"], extra["key"]):
        assert _secret(key).encode() not in raw


def test_keys_create_list_and_revoke(cli: Cli) -> None:
    created = cli.json("operators", "create", "Keys Casino")
    operator_id = created["operatorId"]

    extra = cli.json("keys", "create", "--operator", operator_id, "--mode", "test")

    assert extra["operatorId"] == operator_id
    assert extra["mode"] == "test"
    assert extra["keyId"].startswith("key_")
    assert TEST_KEY.match(extra["key"])
    listing = ok(cli("keys", "list", "--operator", operator_id, "--json"))
    for key in (created["liveKey"], created["testKey"], extra["key"]):
        assert _secret(key) not in listing
    rows = {r["keyId"]: r for r in json.loads(listing)}
    assert len(rows) == 3
    assert {r["operatorId"] for r in rows.values()} == {operator_id}
    assert sorted(r["mode"] for r in rows.values()) == ["live", "test", "test"]
    assert all(r["revokedAt"] is None for r in rows.values())
    assert extra["key"].startswith(rows[extra["keyId"]]["hint"].rstrip("."))

    revoked = ok(cli("keys", "revoke", extra["keyId"]))

    assert extra["keyId"] in revoked
    after = {r["keyId"]: r for r in cli.json("keys", "list", "--operator", operator_id)}
    assert after[extra["keyId"]]["revokedAt"] is not None
    assert [k for k, r in after.items() if r["revokedAt"] is not None] == [extra["keyId"]]


def test_keys_list_shows_only_the_asked_operator(cli: Cli) -> None:
    first = cli.json("operators", "create", "First")
    second = cli.json("operators", "create", "Second")

    listed = cli.json("keys", "list", "--operator", first["operatorId"])

    assert len(listed) == 2
    assert {r["operatorId"] for r in listed} == {first["operatorId"]}
    assert second["operatorId"] not in json.dumps(listed)


def test_keys_list_text_output_has_hints_not_secrets(sqlite_cli: Cli) -> None:
    created = sqlite_cli.json("operators", "create", "Text Keys")

    out = ok(sqlite_cli("keys", "list", "--operator", created["operatorId"]))

    assert len(out.strip().splitlines()) == 2
    assert "active" in out
    for key in (created["liveKey"], created["testKey"]):
        assert _secret(key) not in out
        assert key[:12] in out


def test_revoking_an_unknown_key_is_a_one_line_error(cli: Cli) -> None:
    line = one_line_error(cli("keys", "revoke", "key_does_not_exist"))

    assert "key_does_not_exist" in line


def test_keys_create_for_an_unknown_operator_is_a_one_line_error(cli: Cli) -> None:
    line = one_line_error(cli("keys", "create", "--operator", "op_nobody", "--mode", "live"))

    assert "op_nobody" in line


def test_keys_create_with_an_unknown_mode_creates_nothing(sqlite_cli: Cli) -> None:
    created = sqlite_cli.json("operators", "create", "Mode Casino")

    line = one_line_error(
        sqlite_cli("keys", "create", "--operator", created["operatorId"], "--mode", "nonsense")
    )

    assert "mode" in line
    assert len(sqlite_cli.json("keys", "list", "--operator", created["operatorId"])) == 2


# --- help and argument errors -------------------------------------------------------------------


def _command_paths(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, sub in (getattr(command, "commands", None) or {}).items():
        yield from _command_paths(sub, (*prefix, name))


ALL_COMMANDS = list(_command_paths(typer.main.get_command(app)))


def test_the_documented_commands_exist() -> None:
    assert {
        ("serve",),
        ("migrate",),
        ("operators", "create"),
        ("keys", "create"),
        ("keys", "list"),
        ("keys", "revoke"),
        ("worker",),
        ("retention", "run"),
        ("export",),
        ("import",),
        ("operators", "limits"),
        ("keys", "rotate-master"),
    } <= set(ALL_COMMANDS)


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: " ".join(c) or "onehazel")
def test_every_command_answers_help(command: tuple[str, ...], tmp_path: Path) -> None:
    result = onehazel(*command, "--help", cwd=tmp_path)

    out = ok(result)
    assert "Usage" in out
    assert "Traceback" not in out + result.stderr
    assert not (tmp_path / "onehazel-data").exists()  # --help touches no database


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["keys", "list", "--bogus"], "--bogus"),
        (["serve", "--port", "abc"], "--port"),
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--workers", "0"], "--workers"),
        (["operators", "create"], "name"),
        (["keys", "create", "--mode", "test"], "--operator"),
        (["no-such-command"], "no-such-command"),
        (["migrate", "--database-url", "mysql://user@localhost/db"], "mysql"),
        (["serve", "--database-url", "mysql://user@localhost/db"], "mysql"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_bad_arguments_give_one_clear_line(args: list[str], mentions: str, tmp_path: Path) -> None:
    result = onehazel(*args, cwd=tmp_path)

    line = one_line_error(result)
    assert mentions.lower() in line.lower()
    assert result.stdout == ""


def test_an_empty_operator_name_is_a_one_line_error(tmp_path: Path) -> None:
    line = one_line_error(
        onehazel("operators", "create", "  ", "--database-url", "sqlite:///x.db", cwd=tmp_path)
    )

    assert "name" in line


# --- databases it cannot use --------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["migrate"],
        ["operators", "create", "x"],
        ["keys", "list"],
        ["keys", "revoke", "key_x"],
        ["serve", "--port", "1"],
        ["worker"],
    ],
    ids=lambda a: " ".join(a),
)
def test_unreachable_postgres_is_one_clear_line(args: list[str], tmp_path: Path) -> None:
    result = onehazel(*args, "--database-url", UNREACHABLE_PG, cwd=tmp_path, env=master_key_env())

    line = one_line_error(result)
    assert "127.0.0.1:1" in line


def test_unreachable_postgres_error_hides_the_password(tmp_path: Path) -> None:
    url = "postgresql://postgres:s3cret-pw@127.0.0.1:1/x"

    result = onehazel("migrate", "--database-url", url, cwd=tmp_path, env=master_key_env())

    one_line_error(result)
    assert "s3cret-pw" not in result.stderr + result.stdout


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["worker"]], ids=lambda c: c[0])
def test_postgres_without_a_master_key_is_refused(
    command: list[str], postgres_url: str, tmp_path: Path
) -> None:
    result = onehazel(*command, "--database-url", postgres_url, cwd=tmp_path)

    line = one_line_error(result)
    assert "ONEHAZEL_MASTER_KEY" in line
    assert not (tmp_path / "onehazel-data").exists()


def test_database_url_from_the_environment(tmp_path: Path) -> None:
    env = {"ONEHAZEL_DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}"}

    created = json.loads(ok(onehazel("operators", "create", "Env", "--json", cwd=tmp_path, env=env)))

    assert (tmp_path / "env.db").exists()
    assert not (tmp_path / "onehazel-data").exists()
    listed = json.loads(ok(onehazel("keys", "list", "--json", cwd=tmp_path, env=env)))
    assert {r["operatorId"] for r in listed} == {created["operatorId"]}


# --- migrations ---------------------------------------------------------------------------------


def test_migrate_on_a_fresh_sqlite_path_prints_the_revision(tmp_path: Path) -> None:
    db = tmp_path / "new" / "dir" / "fresh.db"

    out = ok(onehazel("migrate", "--database-url", f"sqlite:///{db}", cwd=tmp_path))

    head = head_revision()
    assert head is not None
    assert head in out
    assert db.exists()
    assert head in ok(onehazel("migrate", "--database-url", f"sqlite:///{db}", cwd=tmp_path))


def test_unmigrated_postgres_is_refused_until_migrate(empty_postgres_url: str, tmp_path: Path) -> None:
    cli = Cli(empty_postgres_url, master_key_env(), tmp_path)

    for args in (["serve", "--port", "1"], ["operators", "create", "Early"]):
        line = one_line_error(cli(*args))
        assert "onehazel migrate" in line

    out = ok(cli("migrate"))

    assert str(head_revision()) in out
    created = cli.json("operators", "create", "Late")
    assert LIVE_KEY.match(created["liveKey"])
