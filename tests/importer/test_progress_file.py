"""The progress file ``--resume`` reads: written atomically, refused when it is another import's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onehazel.importer import progress
from onehazel.importer.progress import Progress, ProgressError

SHA = "ab" * 32
WHERE = progress.destination("http://127.0.0.1:8080", "oh_live_secret")


def saved(tmp_path: Path, **changes: object) -> Path:
    path = tmp_path / "data.ndjson.onehazel-import.json"
    state = Progress(file_sha256=SHA, kind="events", destination=WHERE, confirmed_line=5000)
    state.counts.update(succeeded=4990, failed=10)
    for name, value in changes.items():
        setattr(state, name, value)
    progress.save(path, state)
    return path


def test_a_saved_progress_loads_back(tmp_path: Path) -> None:
    path = saved(tmp_path)
    loaded = progress.load(path, file_sha256=SHA, kind="events", destination=WHERE)
    assert loaded is not None
    assert (loaded.confirmed_line, loaded.counts["succeeded"], loaded.counts["failed"]) == (5000, 4990, 10)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_the_key_itself_is_never_written(tmp_path: Path) -> None:
    text = saved(tmp_path).read_text()
    assert "oh_live_secret" not in text
    assert json.loads(text)["destination"].startswith("http://127.0.0.1:8080 key-sha256:")


def test_no_progress_file_means_start_from_the_beginning(tmp_path: Path) -> None:
    assert progress.load(tmp_path / "none.json", file_sha256=SHA, kind="events", destination=WHERE) is None


@pytest.mark.parametrize(
    ("sha", "kind", "where", "message"),
    [
        ("cd" * 32, "events", WHERE, "belongs to another file"),
        (SHA, "states", WHERE, "is for an import of events"),
        (SHA, "events", progress.destination("http://127.0.0.1:8080", "oh_test_other"), "is for an import"),
    ],
)
def test_another_imports_progress_is_refused(
    tmp_path: Path, sha: str, kind: str, where: str, message: str
) -> None:
    path = saved(tmp_path)
    with pytest.raises(ProgressError, match=message):
        progress.load(path, file_sha256=sha, kind=kind, destination=where)


@pytest.mark.parametrize("content", ["not json", '{"version": 1}', "[]"])
def test_a_damaged_progress_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(ProgressError, match="progress file"):
        progress.load(path, file_sha256=SHA, kind="events", destination=WHERE)


def test_saving_replaces_the_previous_version_whole(tmp_path: Path) -> None:
    path = saved(tmp_path)
    saved(tmp_path, confirmed_line=10000)
    loaded = progress.load(path, file_sha256=SHA, kind="events", destination=WHERE)
    assert loaded is not None
    assert loaded.confirmed_line == 10000
