"""An import killed from outside (SIGKILL) or stopped with Ctrl-C (SIGINT) part-way, then resumed.

Nothing is lost and nothing is stored twice: the resumed run starts after the last confirmed
line, re-sends the batches that were in flight (their Idempotency-Keys return the jobs already
made) and every failing line is reported.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.importer.conftest import Workspace, ok_summary, seed_players, transaction, write_lines

pytestmark = pytest.mark.slow

EVENTS = 4000
GHOSTS = {3, 1234, 2500, 3999}


def history(tmp_path: Path) -> Path:
    events = [transaction(n) for n in range(EVENTS)]
    for n in GHOSTS:
        events[n]["externalId"] = f"ghost-{n}"
    return write_lines(tmp_path / "history.ndjson", events)


def confirmed_line(tmp_path: Path) -> int:
    try:
        progress: dict[str, Any] = json.loads((tmp_path / "history.ndjson.onehazel-import.json").read_text())
    except (FileNotFoundError, ValueError):
        return 0
    return int(progress["confirmed_line"])


def stop_part_way(
    process: subprocess.Popen[str], tmp_path: Path, sig: signal.Signals
) -> tuple[int, str, str]:
    """Send ``sig`` once some batches are confirmed, while the import still runs.

    Returns its exit code, stdout and stderr."""
    with process:
        deadline = time.monotonic() + 120
        while confirmed_line(tmp_path) < 500:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"the import was never caught part-way: {process.communicate()}")
            time.sleep(0.02)
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)
        return process.returncode, stdout, stderr


def resume_and_check(
    workspace: Workspace, tmp_path: Path, args: tuple[str | Path, ...]
) -> list[dict[str, Any]]:
    resumed_after = confirmed_line(tmp_path)
    assert 500 <= resumed_after < EVENTS
    summary = ok_summary(workspace.run_import(*args, "--resume", cwd=tmp_path), code=1)
    assert summary["resumedAfterLine"] == resumed_after
    assert (summary["succeeded"], summary["duplicates"], summary["failed"]) == (
        EVENTS - len(GHOSTS),
        0,
        len(GHOSTS),
    )
    ids = workspace.event_ids()
    assert len(ids) == len(set(ids)) == EVENTS - len(GHOSTS)
    return [json.loads(line) for line in (tmp_path / "rejects.ndjson").read_text().splitlines()]


def test_sigkill_mid_file_then_resume(workspace: Workspace, tmp_path: Path) -> None:
    seed_players(workspace)
    args = (
        history(tmp_path),
        "--kind",
        "events",
        "--batch-size",
        "100",
        "--errors",
        "rejects.ndjson",
        "--json",
    )

    code, _, _ = stop_part_way(workspace.start_import(*args, cwd=tmp_path), tmp_path, signal.SIGKILL)

    assert code == -signal.SIGKILL
    rejects = resume_and_check(workspace, tmp_path, args)
    # A kill between writing a batch's rejects and its progress may list a line twice, never zero times.
    assert {(r["line"], r["code"]) for r in rejects} == {(n + 1, "entity_not_found") for n in GHOSTS}


def test_ctrl_c_mid_file_then_resume(workspace: Workspace, tmp_path: Path) -> None:
    seed_players(workspace)
    args = (
        history(tmp_path),
        "--kind",
        "events",
        "--batch-size",
        "100",
        "--errors",
        "rejects.ndjson",
        "--json",
    )
    code, stdout, stderr = stop_part_way(workspace.start_import(*args, cwd=tmp_path), tmp_path, signal.SIGINT)

    assert code == 130, stderr
    assert json.loads(stdout)["complete"] is False
    error = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, stderr
    assert "interrupted" in error[0]
    assert "--resume" in error[0]
    assert "Traceback" not in stderr
    rejects = resume_and_check(workspace, tmp_path, args)
    # Ctrl-C waits for a batch's rejects and progress to be written together: each line exactly once.
    assert [(r["line"], r["code"]) for r in rejects] == [(n + 1, "entity_not_found") for n in sorted(GHOSTS)]
