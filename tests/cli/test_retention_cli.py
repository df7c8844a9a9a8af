"""``onehazel retention run``: the real program in a subprocess, on SQLite and PostgreSQL.

Each test seeds a database of its own (in-process, through the services), so the
sweep's output is exactly what the test put there.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from onehazel.bootstrap import open_services
from onehazel.config import Config
from tests.acceptance.processes import fresh_postgres
from tests.cli.test_cli import UNREACHABLE_PG, Cli, ok, one_line_error
from tests.conftest import keyed_env


@dataclass(frozen=True)
class Seeded:
    operator_id: str
    live: str
    test: str


async def _seed(url: str) -> Seeded:
    """Live workspace: 2 events past a 30-day retention, 1 young one, and a deleted player
    (deletedEntitiesDays 0) with 1 event and 1 state. Test workspace: old events, no retention."""
    services = await open_services(Config.load(url, env=keyed_env()), run_migrations=True)
    try:
        created = await services.auth.create_operator("retention-cli")
        live = await services.auth.authenticate(f"Bearer {created.live_key}")
        test = await services.auth.authenticate(f"Bearer {created.test_key}")
        policy = {"templateId": "tpl_igaming", "retention": {"eventsDays": 30, "deletedEntitiesDays": 0}}
        await services.settings.update(live, policy)
        await services.settings.update(test, {"templateId": "tpl_igaming"})
        for ws in (live, test):
            for external_id in ("p-old", "p-gone"):
                await services.entities.upsert(
                    ws, {"externalId": external_id, "type": "player", "attributes": {"email": "a@b.io"}}
                )
            for stamp in ("2020-01-01T00:00:00Z", "2021-06-01T00:00:00Z", "2999-01-01T00:00:00Z"):
                await services.events.record(
                    ws, {"externalId": "p-old", "type": "session", "timestamp": stamp}
                )
        await services.events.record(live, {"externalId": "p-gone", "type": "session", "data": {}})
        await services.states.put(live, {"externalId": "p-gone", "key": "kyc_status", "value": "verified"})
        await services.entities.delete(live, "p-gone")
        return Seeded(created.operator_id, live.id, test.id)
    finally:
        await services.close()


@pytest.fixture(params=["sqlite", "postgres"])
def seeded_cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Cli, Seeded]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'retention.db'}"
        yield Cli(url, keyed_env(), tmp_path), asyncio.run(_seed(url))
        return
    with fresh_postgres() as url:
        yield Cli(url, keyed_env(), tmp_path), asyncio.run(_seed(url))


def test_retention_run_prints_what_it_removed_per_workspace(seeded_cli: tuple[Cli, Seeded]) -> None:
    cli, seeded = seeded_cli

    out = ok(cli("retention", "run"))

    lines = out.strip().splitlines()
    assert re.fullmatch(r"retention sweep at \d{4}-\d\d-\d\dT[\d:.]+Z", lines[0]), out
    expected = (
        "2 events expired, 1 entities purged (1 events, 1 states, 0 job items redacted), "
        "0 tombstones released"
    )
    assert lines[1] == f"{seeded.live} ({seeded.operator_id} live): {expected}"
    assert lines[2] == f"total: {expected}"
    assert re.fullmatch(r"\d+ transactions in [\d.]+ s, the longest [\d.]+ ms", lines[3]), out
    assert len(lines) == 4  # the test workspace (no retention set) is not listed: nothing removed there
    assert seeded.test not in out

    again = ok(cli("retention", "run")).strip().splitlines()
    assert again[1] == "nothing to remove"


def test_retention_run_json(seeded_cli: tuple[Cli, Seeded]) -> None:
    cli, seeded = seeded_cli

    report = json.loads(ok(cli("retention", "run", "--json")))

    counts = {
        "eventsExpired": 2,
        "entitiesPurged": 1,
        "purgedEvents": 1,
        "purgedStates": 1,
        "redactedJobItems": 0,
        "tombstonesReleased": 0,
    }
    assert report["workspaces"] == [
        {"workspaceId": seeded.live, "operatorId": seeded.operator_id, "mode": "live", **counts}
    ]
    assert report["totals"] == counts
    assert report["transactions"] >= 5
    assert 0 <= report["longestTransactionMs"] <= report["elapsedMs"]
    assert report["interrupted"] is False
    assert json.loads(ok(cli("retention", "run", "--json")))["totals"] == dict.fromkeys(counts, 0)


def test_a_tombstone_is_released_after_the_configured_suppression(seeded_cli: tuple[Cli, Seeded]) -> None:
    cli, seeded = seeded_cli
    cli.env["ONEHAZEL_SUPPRESSION_DAYS"] = "0"

    first = json.loads(ok(cli("retention", "run", "--json")))
    second = json.loads(ok(cli("retention", "run", "--json")))

    assert (first["totals"]["entitiesPurged"], first["totals"]["tombstonesReleased"]) == (1, 0)
    assert second["workspaces"] == [
        {
            "workspaceId": seeded.live,
            "operatorId": seeded.operator_id,
            "mode": "live",
            "eventsExpired": 0,
            "entitiesPurged": 0,
            "purgedEvents": 0,
            "purgedStates": 0,
            "redactedJobItems": 0,
            "tombstonesReleased": 1,
        }
    ]


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"ONEHAZEL_SUPPRESSION_DAYS": "-1"}, "ONEHAZEL_SUPPRESSION_DAYS"),
        ({"ONEHAZEL_RETENTION_CHUNK": "x"}, "x"),
    ],
)
def test_bad_retention_configuration_is_one_clear_line(
    env: dict[str, str], mentions: str, tmp_path: Path
) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'r.db'}", {**keyed_env(), **env}, tmp_path)

    line = one_line_error(cli("retention", "run"))

    assert mentions in line


def test_retention_run_on_an_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    cli = Cli(UNREACHABLE_PG, keyed_env(), tmp_path)

    line = one_line_error(cli("retention", "run"))

    assert "127.0.0.1" in line
