"""``onehazel export``: the subject-access export from the command line, on SQLite and PostgreSQL.

The real program runs in a subprocess against the same database the in-process
API writes to; its file must hold exactly what ``GET .../export`` streams, and
the export (like key changes made with the CLI) is audited as ``cli``.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from onehazel.jobs.worker import Worker
from onehazel.services.auth import CreatedOperator
from onehazel.services.container import Services
from tests.cli.test_cli import Cli, ok, one_line_error
from tests.conftest import Api, keyed_env

PII = {"email": "ada@example.com", "first_name": "Ada", "phone": "+356 2100 0000"}
EVENTS = 1500  # more than one internal page (1000)


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    """The program on the database the ``api`` fixture writes to, with the same master key."""
    return Cli(database_url, keyed_env(), tmp_path)


async def run(cli: Cli, *args: str) -> Any:
    return await asyncio.to_thread(cli, *args)


def lines_of(text: str | bytes) -> list[dict[str, Any]]:
    raw = text.encode() if isinstance(text, str) else text
    lines = [orjson.loads(line) for line in raw.splitlines()]
    assert lines, "no lines"
    end = lines[-1]
    assert end["kind"] == "end", end
    end.pop("exportedAt")  # the only line that differs between two exports
    return lines


async def api_export(api: Api, external_id: str = "p-1") -> list[dict[str, Any]]:
    response = await api.get(f"/entities/{external_id}/export")
    assert response.status_code == 200, response.text
    return lines_of(response.content)


async def subject(api: Api, services: Services, external_id: str = "p-1") -> None:
    """A player with PII, EVENTS events (some with PII, some money) and two states."""
    body = {"externalId": external_id, "type": "player", "attributes": {**PII, "country": "MT"}}
    assert (await api.post("/entities", json=body)).status_code == 201
    events = [
        {
            "externalId": external_id,
            "eventId": f"e-{i:05d}",
            "type": "session" if i % 4 == 0 else "transaction",
            "data": {"ip_address": f"10.1.{i // 250}.{i % 250}"}
            if i % 4 == 0
            else {"type": "deposit", "amount": f"{i}.05", "currency": "EUR"},
            "timestamp": f"2026-11-27T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
        }
        for i in range(EVENTS)
    ]
    assert (await api.post("/batch/events", json={"events": events})).status_code == 202
    worker = Worker(services)
    while await worker.run_once():
        pass
    for key, value in (("balance", "99.99"), ("kyc_status", "pending")):
        assert (
            await api.put(f"/entities/{external_id}/state/{key}", json={"value": value})
        ).status_code == 200


async def workspace_of(cli: Cli, operator: CreatedOperator, mode: str = "live") -> str:
    """The workspace id, found the way a user would: ``onehazel keys list --json``."""
    listed = json.loads(ok(await run(cli, "keys", "list", "--operator", operator.operator_id, "--json")))
    (workspace_id,) = {row["workspaceId"] for row in listed if row["mode"] == mode}
    assert workspace_id.startswith("ws_")
    return str(workspace_id)


async def test_export_to_a_file_equals_the_api_export(
    api: Api, services: Services, operator: CreatedOperator, cli: Cli, tmp_path: Path
) -> None:
    await subject(api, services)
    workspace_id = await workspace_of(cli, operator)
    target = tmp_path / "out" / "p-1.ndjson"
    target.parent.mkdir()

    out = ok(await run(cli, "export", "p-1", "--workspace", workspace_id, "--output", str(target)))

    expected = await api_export(api)
    assert lines_of(target.read_bytes()) == expected
    assert [line["kind"] for line in expected].count("event") == EVENTS
    assert expected[0]["attributes"] == {**PII, "country": "MT"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # it holds PII
    assert sorted(p.name for p in target.parent.iterdir()) == ["p-1.ndjson"]  # no .partial left
    assert f"{EVENTS} events, 2 states" in out
    assert str(target) in out


async def test_a_stale_partial_file_or_link_is_replaced_not_written_through(
    api: Api, services: Services, operator: CreatedOperator, cli: Cli, tmp_path: Path
) -> None:
    await subject(api, services)
    workspace_id = await workspace_of(cli, operator)
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not yours\n")
    elsewhere.chmod(0o644)
    target = tmp_path / "out" / "p-1.ndjson"
    target.parent.mkdir()
    (target.parent / "p-1.ndjson.partial").symlink_to(elsewhere)  # e.g. planted in a shared directory

    ok(await run(cli, "export", "p-1", "--workspace", workspace_id, "--output", str(target)))

    assert elsewhere.read_text() == "not yours\n"  # the PII did not go where the link pointed
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o644
    assert lines_of(target.read_bytes()) == await api_export(api)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["p-1.ndjson"]


async def test_export_to_stdout_by_operator_and_mode(
    api: Api, services: Services, operator: CreatedOperator, cli: Cli
) -> None:
    await subject(api, services)

    out = ok(await run(cli, "export", "p-1", "--operator", operator.operator_id, "--mode", "live"))

    assert lines_of(out) == await api_export(api)


async def test_the_cli_export_is_audited_as_cli(
    api: Api, services: Services, operator: CreatedOperator, cli: Cli
) -> None:
    body = {"externalId": "p-2", "type": "player", "attributes": PII}
    assert (await api.post("/entities", json=body)).status_code == 201

    ok(await run(cli, "export", "p-2", "--operator", operator.operator_id))

    log = (await api.get("/audit")).json()["data"]
    assert (log[0]["action"], log[0]["actor"], log[0]["target"]) == ("entity.export", "cli", "p-2")


async def test_key_changes_made_with_the_cli_are_audited_as_cli(
    api: Api, operator: CreatedOperator, cli: Cli
) -> None:
    created = json.loads(ok(await run(cli, "keys", "create", "--operator", operator.operator_id, "--json")))
    ok(await run(cli, "keys", "revoke", created["keyId"]))

    log = (await api.get("/audit")).json()["data"]
    assert [(r["action"], r["actor"], r["target"]) for r in log[:2]] == [
        ("key.revoke", "cli", created["keyId"]),
        ("key.create", "cli", created["keyId"]),
    ]


async def test_operators_created_with_the_cli_audit_their_first_keys(api: Api, cli: Cli) -> None:
    created = json.loads(ok(await run(cli, "operators", "create", "Audited Casino", "--json")))

    for key in (created["liveKey"], created["testKey"]):
        log = (await api.as_key(key).get("/audit")).json()["data"]
        assert [(r["action"], r["actor"]) for r in log] == [("key.create", "cli")]


# --- errors: one clear line, non-zero exit, no file ---------------------------------------------


async def test_an_unknown_entity_is_a_one_line_error(
    api: Api, operator: CreatedOperator, cli: Cli, tmp_path: Path
) -> None:
    target = tmp_path / "ghost.ndjson"
    line = one_line_error(
        await run(cli, "export", "ghost", "--operator", operator.operator_id, "--output", str(target))
    )
    assert "ghost" in line
    assert "no entity" in line
    assert list(tmp_path.glob("ghost.ndjson*")) == []


async def test_an_unknown_workspace_is_a_one_line_error(cli: Cli) -> None:
    line = one_line_error(await run(cli, "export", "p-1", "--workspace", "ws_nope"))
    assert "ws_nope" in line


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_deleted_entity_is_a_one_line_error(api: Api, operator: CreatedOperator, cli: Cli) -> None:
    assert (await api.post("/entities", json={"externalId": "gone", "type": "player"})).status_code == 201
    assert (await api.delete("/entities/gone")).status_code == 200

    line = one_line_error(await run(cli, "export", "gone", "--operator", operator.operator_id))

    assert "deleted" in line


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_test_workspace_does_not_hold_live_data(
    api: Api, operator: CreatedOperator, cli: Cli
) -> None:
    assert (
        await api.post("/entities", json={"externalId": "live-only", "type": "player"})
    ).status_code == 201

    line = one_line_error(
        await run(cli, "export", "live-only", "--operator", operator.operator_id, "--mode", "test")
    )

    assert "no entity" in line
    assert "(test)" in line


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["export", "p-1"], "--workspace"),
        (["export", "p-1", "--workspace", "ws_a", "--operator", "op_b"], "--workspace"),
        (["export", "p-1", "--operator", "op_b", "--mode", "staging"], "live or test"),
        (["export", "x" * 257, "--workspace", "ws_a"], "EXTERNAL_ID"),
    ],
    ids=["no-workspace", "both", "bad-mode", "long-id"],
)
async def test_bad_arguments_are_one_line(api: Api, cli: Cli, args: list[str], mentions: str) -> None:
    assert mentions in one_line_error(await run(cli, *args))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_an_unwritable_output_is_a_one_line_error(
    api: Api, operator: CreatedOperator, cli: Cli, tmp_path: Path
) -> None:
    assert (await api.post("/entities", json={"externalId": "p-3", "type": "player"})).status_code == 201
    target = tmp_path / "missing-dir" / "p-3.ndjson"

    line = one_line_error(
        await run(cli, "export", "p-3", "--operator", operator.operator_id, "-o", str(target))
    )

    assert "cannot write" in line
    assert not target.parent.exists()
