"""``onehazel import`` when things go wrong: rejected items, malformed lines and files, bad options.

Every rejected item is reported with its line number, externalId and reason (never its content,
which may hold PII) and makes the exit code 1; a file or an option that cannot be used is one
``error:`` line on stderr and exit code 2, before anything is sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.processes import clean_env
from tests.importer.conftest import (
    NO_SERVER_ENV,
    Deployment,
    Workspace,
    ok_summary,
    run_import,
    seed_players,
    transaction,
    write_lines,
)


def test_rejected_items_go_to_the_errors_file_without_their_content(
    workspace: Workspace, tmp_path: Path
) -> None:
    seed_players(workspace)
    lines: list[Any] = [
        transaction(0),
        transaction(1, externalId="nobody"),
        transaction(2, data={"type": "deposit", "amount": True, "currency": "EUR", "iban": "SECRET-IBAN"}),
        '{"externalId": "player-3", "type": "transaction", "data": ',
        "",
        "[1, 2, 3]",
        transaction(4, type="no_such_event"),
        transaction(5),
    ]
    path = write_lines(tmp_path / "mixed.ndjson", lines)

    result = workspace.run_import(
        path, "--kind", "events", "--errors", tmp_path / "rejects.ndjson", cwd=tmp_path
    )

    assert result.returncode == 1, result.stderr
    text = (tmp_path / "rejects.ndjson").read_text()
    rejects = [json.loads(line) for line in text.splitlines()]
    assert [(r["line"], r["externalId"], r["code"]) for r in rejects] == [
        (2, "nobody", "entity_not_found"),
        (3, "player-2", "invalid_field_type"),
        (4, None, "invalid_json"),
        (6, None, "invalid_item"),
        (7, "player-4", "unknown_event_type"),
    ]
    assert all(r["message"] for r in rejects)
    assert rejects[1]["path"] == "data.amount"
    assert "SECRET-IBAN" not in text
    assert "deposit" not in text
    assert len(workspace.event_ids()) == 2
    assert "2 succeeded, 0 duplicates, 3 failed, 2 malformed" in result.stdout
    assert "rejects.ndjson" in result.stdout


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, ("--kind", "events"), "no such file"),
        ("x\n", ("--kind", "entities", "--format", "csv"), "lacks the column(s) externalId, type"),
        ("", ("--kind", "states", "--format", "csv"), "no header row"),
        (
            "externalId,type,vip:bool\n",
            ("--kind", "entities", "--format", "csv"),
            "unknown column type 'bool'",
        ),
        ("{}\n", ("--kind", "events", "--format", "csv"), "events are imported from NDJSON only"),
        ("{}\n", ("--kind", "players"), "--kind must be entities, events or states"),
        ("{}\n", ("--kind", "events", "--batch-size", "5001"), "between 1 and 5000"),
        ("{}\n", ("--kind", "entities", "--batch-size", "1001"), "between 1 and 1000"),
        ("{}\n", ("--kind", "states", "--batch-size", "0"), "between 1 and 1000, not 0"),
    ],
)
def test_unusable_files_and_options_fail_with_one_line(
    tmp_path: Path, content: str | None, args: tuple[str, ...], message: str
) -> None:
    path = tmp_path / "input.ndjson"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = run_import(path, *args, cwd=tmp_path, env=NO_SERVER_ENV)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert result.stdout == ""


def test_unknown_extension_and_missing_key_are_usage_errors(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "history.txt", [transaction(0)])
    result = run_import(path, "--kind", "events", cwd=tmp_path, env=NO_SERVER_ENV)
    assert result.returncode == 2
    assert "pass --format ndjson|csv" in result.stderr

    env = dict(NO_SERVER_ENV)
    del env["ONEHAZEL_API_KEY"]
    result = run_import(path, "--kind", "events", "--format", "ndjson", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: no API key: pass --api-key or set ONEHAZEL_API_KEY"


def test_resume_refuses_a_file_that_changed(workspace: Workspace, tmp_path: Path) -> None:
    seed_players(workspace)
    path = write_lines(tmp_path / "history.ndjson", [transaction(n) for n in range(10)])
    ok_summary(workspace.run_import(path, "--kind", "events", "--json", cwd=tmp_path))
    write_lines(path, [transaction(n) for n in range(11)])

    result = workspace.run_import(path, "--kind", "events", "--resume", cwd=tmp_path)

    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "belongs to another file" in result.stderr


def test_a_refused_key_stops_the_import_with_one_line(deployment: Deployment, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "history.ndjson", [transaction(0)])
    env = clean_env(ONEHAZEL_API_URL=deployment.server.base_url)
    result = run_import(path, "--kind", "events", "--api-key", "oh_live_" + "x" * 43, cwd=tmp_path, env=env)
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.stderr
    assert "401 unauthorized" in error[0]
    assert "--resume" in error[0]
    assert "Traceback" not in result.stderr
