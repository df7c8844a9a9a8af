"""``onehazel import`` end to end: the real command in a subprocess against the real server.

What a user relies on: exact counts, typed CSV columns and exact decimals, re-runs that store
nothing twice, ``--resume`` after a crash that loses and doubles nothing, the progress bar and
the ``--json`` summary.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tests.acceptance.processes import clean_env
from tests.importer.conftest import (
    PLAYERS,
    Workspace,
    ok_summary,
    players_csv,
    seed_players,
    transaction,
    write_lines,
)


def import_players(ws: Workspace, tmp_path: Path) -> None:
    summary = ok_summary(
        ws.run_import(players_csv(tmp_path / "players.csv"), "--kind", "entities", "--json", cwd=tmp_path)
    )
    assert (summary["succeeded"], summary["failed"], summary["malformed"]) == (PLAYERS, 0, 0)


def test_entities_csv_then_events_ndjson_are_stored_exactly(workspace: Workspace, tmp_path: Path) -> None:
    import_players(workspace, tmp_path)
    events = [transaction(n) for n in range(1200)]
    events[7]["eventId"] = "dep-own-7"  # an event that has its own id keeps it
    path = write_lines(tmp_path / "history.ndjson", events)

    summary = ok_summary(
        workspace.run_import(path, "--kind", "events", "--batch-size", "500", "--json", cwd=tmp_path)
    )

    assert (summary["succeeded"], summary["duplicates"], summary["failed"], summary["malformed"]) == (
        1200,
        0,
        0,
        0,
    )
    assert (summary["lines"], summary["confirmedLine"], summary["jobs"], summary["complete"]) == (
        1200,
        1200,
        3,
        True,
    )
    ids = workspace.event_ids()
    assert len(ids) == 1200
    assert "dep-own-7" in ids
    assert all(i.startswith("imp_") and len(i) == 36 for i in ids if i != "dep-own-7")
    player = workspace.api.get("/entities/player-1").json()
    assert player["attributes"] == {
        "email": "p1@example.com",
        "country": "MT",
        "vip": True,
    }  # empty cell: absent
    stored = workspace.api.get("/entities/player-3/events", params={"order": "asc", "limit": 1}).json()[
        "data"
    ][0]
    assert stored["data"]["amount"] == "3.50"  # a decimal string keeps its digits


def test_running_the_same_import_again_stores_nothing_twice(workspace: Workspace, tmp_path: Path) -> None:
    seed_players(workspace)
    path = write_lines(tmp_path / "history.ndjson", [transaction(n) for n in range(600)])
    first = ok_summary(
        workspace.run_import(path, "--kind", "events", "--batch-size", "200", "--json", cwd=tmp_path)
    )
    stored = workspace.event_ids()
    assert (first["succeeded"], len(stored)) == (600, 600)

    # The same command again: each batch's Idempotency-Key returns the job it already made.
    again = ok_summary(
        workspace.run_import(path, "--kind", "events", "--batch-size", "200", "--json", cwd=tmp_path)
    )
    assert (again["succeeded"], again["duplicates"], again["jobs"]) == (600, 0, 3)
    assert workspace.event_ids() == stored

    # A copy under another name and folder, cut into other batches (so new jobs): the eventIds
    # come from the content, so every event is a duplicate.
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    copy = shutil.copy(path, elsewhere / "renamed.jsonl")
    moved = ok_summary(
        workspace.run_import(copy, "--kind", "events", "--batch-size", "250", "--json", cwd=elsewhere)
    )
    assert (moved["succeeded"], moved["duplicates"], moved["failed"]) == (0, 600, 0)
    assert workspace.event_ids() == stored


def test_resume_after_a_crash_loses_and_doubles_nothing(workspace: Workspace, tmp_path: Path) -> None:
    seed_players(workspace)
    events = [transaction(n) for n in range(1000)]
    ghosts = {5, 250, 420, 999}  # failures in confirmed, unconfirmed and never-sent batches
    for n in ghosts:
        events[n]["externalId"] = f"ghost-{n}"
    path = write_lines(tmp_path / "history.ndjson", events)
    args = (path, "--kind", "events", "--batch-size", "100", "--errors", "rejects.ndjson", "--json")

    # Killed (SIGKILL) right after the 6th batch was accepted: batches 1-2 confirmed, 3-6 in flight.
    crashed = workspace.run_import(
        *args, cwd=tmp_path, env=workspace.env(ONEHAZEL_IMPORT_CRASH_AFTER_BATCHES="6")
    )
    assert crashed.returncode == -9, crashed.stderr
    progress = json.loads((tmp_path / "history.ndjson.onehazel-import.json").read_text())
    assert progress["confirmed_line"] == 200
    assert len(workspace.event_ids()) < 1000

    summary = ok_summary(workspace.run_import(*args, "--resume", cwd=tmp_path), code=1)
    assert summary["resumedAfterLine"] == 200
    assert (summary["succeeded"], summary["duplicates"], summary["failed"]) == (996, 0, 4)
    assert len(workspace.event_ids()) == len(set(workspace.event_ids())) == 996
    rejects = [json.loads(line) for line in (tmp_path / "rejects.ndjson").read_text().splitlines()]
    assert [(r["line"], r["externalId"], r["code"]) for r in rejects] == [
        (n + 1, f"ghost-{n}", "entity_not_found") for n in sorted(ghosts)
    ]

    # Resuming a finished import sends nothing and reports the same totals.
    done = ok_summary(workspace.run_import(*args, "--resume", cwd=tmp_path), code=1)
    assert (done["jobs"], done["succeeded"], done["failed"], done["confirmedLine"]) == (0, 996, 4, 1000)
    assert len(workspace.event_ids()) == 996


def test_states_csv_keeps_decimals_exact(workspace: Workspace, tmp_path: Path) -> None:
    seed_players(workspace)
    csv = tmp_path / "states.csv"
    csv.write_text(
        "externalId,key,value,timestamp\n"
        "player-1,balance,12345678901234567890.10,2026-03-01T12:00:00Z\n"
        "player-1,kyc_status,verified,\n"
        'player-2,balance,"0.50",2026-03-01T12:00:00Z\n'
        "player-2,no_such_key,1,2026-03-01T12:00:00Z\n",
        encoding="utf-8",
    )
    summary = ok_summary(workspace.run_import(csv, "--kind", "states", "--json", cwd=tmp_path), code=1)

    assert (summary["succeeded"], summary["failed"]) == (3, 1)
    states = workspace.api.get("/entities/player-1/state").json()["states"]
    assert states["balance"]["value"] == "12345678901234567890.10"
    assert states["kyc_status"]["value"] == "verified"
    assert workspace.api.get("/entities/player-2/state/balance").json()["value"] == "0.50"


def test_progress_bar_and_text_summary_without_json(workspace: Workspace, tmp_path: Path) -> None:
    seed_players(workspace)
    path = write_lines(tmp_path / "history.ndjson", [transaction(n) for n in range(50)])
    result = workspace.run_import(path, "--kind", "events", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for shown in ("items/s", "50/50 lines", "ETA", "0 failed"):
        assert shown in result.stderr
    assert result.stdout.startswith("events from ")
    assert "50 succeeded, 0 duplicates, 0 failed, 0 malformed" in result.stdout


def test_json_summary_shape_with_options_instead_of_environment(workspace: Workspace, tmp_path: Path) -> None:
    seed_players(workspace)
    path = write_lines(tmp_path / "history.ndjson", [transaction(n) for n in range(10)])
    state = tmp_path / "state" / "progress.json"
    state.parent.mkdir()
    options = (
        "--api-url",
        workspace.deployment.server.base_url,
        "--api-key",
        workspace.key,
        "--state",
        state,
    )

    result = workspace.run_import(path, "--kind", "events", "--json", *options, cwd=tmp_path, env=clean_env())

    summary = ok_summary(result)
    assert set(summary) == {
        "file", "fileSha256", "kind", "format", "lines", "resumedAfterLine", "confirmedLine", "complete",
        "succeeded", "duplicates", "failed", "malformed", "warnings", "jobs", "seconds", "itemsPerSecond",
        "errorsFile", "progressFile", "exitCode",
    }  # fmt: skip
    assert (summary["kind"], summary["format"], summary["errorsFile"]) == ("events", "ndjson", None)
    assert (summary["succeeded"], summary["lines"], summary["complete"]) == (10, 10, True)
    assert summary["fileSha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert summary["progressFile"] == str(state)
    assert json.loads(state.read_text())["confirmed_line"] == 10
    assert not (tmp_path / "history.ndjson.onehazel-import.json").exists()
    assert isinstance(summary["seconds"], float)
    assert isinstance(summary["itemsPerSecond"], float)
    assert result.stderr == ""  # no progress bar with --json


def test_entities_imported_again_are_not_changed(workspace: Workspace, tmp_path: Path) -> None:
    import_players(workspace, tmp_path)
    # Other batch boundaries, so new jobs: each upsert finds the entity as it is and changes nothing.
    again = workspace.run_import(
        tmp_path / "players.csv", "--kind", "entities", "--batch-size", "7", "--json", cwd=tmp_path
    )
    assert (ok_summary(again)["succeeded"], ok_summary(again)["jobs"]) == (PLAYERS, 3)
    versions = workspace.sql("SELECT version FROM entities WHERE workspace_id = :ws")
    assert [v for (v,) in versions] == [1] * PLAYERS


def test_missing_required_fields_are_counted_as_warnings(workspace: Workspace, tmp_path: Path) -> None:
    seed_players(workspace)
    events = [transaction(0), transaction(1, data={"type": "deposit", "amount": "1.00"})]  # no currency
    summary = ok_summary(
        workspace.run_import(
            write_lines(tmp_path / "e.ndjson", events), "--kind", "events", "--json", cwd=tmp_path
        )
    )
    assert (summary["succeeded"], summary["warnings"]) == (2, 1)
