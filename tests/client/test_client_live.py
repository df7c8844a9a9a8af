"""The client against the real ``onehazel serve`` (embedded SQLite default, in a subprocess).

One server for the module; its first operator's live key drives the blocking
``Client``, its test key (a separate workspace) the ``AsyncClient``. What is
checked is what reached the server: every tracked event stored exactly once (by
listing them back), typed exceptions for real error responses.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import onehazel.client as oh
from onehazel.client import AsyncClient, Client
from tests.acceptance.processes import Launcher, clean_env, free_port

EVENTS = 12_000
PLAYERS = 3


@dataclass
class Live:
    launcher: Launcher
    base_url: str
    live_key: str
    test_key: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    launcher = Launcher(tmp_path_factory.mktemp("client-live"))
    try:
        server = launcher.serve("serve", env=clean_env())
        keys = {
            mode: re.search(rf"{mode} key: (oh_{mode}_\S+)", server.stdout()) for mode in ("live", "test")
        }
        assert all(keys.values()), server.output()
        yield Live(launcher, server.base_url, keys["live"].group(1), keys["test"].group(1))  # type: ignore[union-attr]
    finally:
        launcher.close()


class Errors:
    def __init__(self) -> None:
        self.errors: list[tuple[list[dict[str, Any]], str]] = []
        self.drops: list[tuple[list[dict[str, Any]], str]] = []

    def on_error(self, items: list[dict[str, Any]], reason: str) -> None:
        self.errors.append((items, reason))

    def on_drop(self, items: list[dict[str, Any]], reason: str) -> None:
        self.drops.append((items, reason))


def _deposit(n: int) -> dict[str, Any]:
    return {"type": "deposit", "amount": Decimal(f"{n}.05"), "currency": "EUR"}


def test_client_end_to_end(live: Live) -> None:
    seen = Errors()
    with Client(live.live_key, live.base_url, on_error=seen.on_error, on_drop=seen.on_drop) as client:
        assert client.update_settings(template_id="tpl_igaming")["templateId"] == "tpl_igaming"
        assert client.settings()["templateId"] == "tpl_igaming"
        assert "tpl_igaming" in [t["id"] for t in client.templates()]
        players = [f"sync/player {n}" for n in range(PLAYERS)]  # '/' and ' ' travel URL-encoded
        created = client.upsert_entity(players[0], "player", {"email": "alice@example.com", "country": "MT"})
        assert created["version"] == 1
        for player in players[1:]:
            client.upsert_entity(player, "player", {"country": "MT"})
        assert client.get_entity(players[0])["attributes"]["email"] == "alice@example.com"

        state = client.set_state(players[0], "balance", Decimal("250.00"), timestamp="2026-11-27T10:00:01Z")
        assert (state["applied"], state["value"]) == (True, "250.00")
        older = client.set_state(players[0], "balance", Decimal("1.00"), timestamp="2026-11-27T10:00:00Z")
        assert (older["applied"], older["value"]) == (False, "250.00")
        assert client.get_state(players[0], "balance")["value"] == "250.00"
        assert client.get_state(players[0])["states"]["balance"]["value"] == "250.00"

        tracked: dict[str, list[str]] = {p: [] for p in players}
        for n in range(EVENTS):
            player = players[n % PLAYERS]
            tracked[player].append(client.track(player, "transaction", _deposit(n)))
        rejected = client.track(players[0], "no_such_type", {"x": 1})
        client.flush()

        for player in players:
            events = list(client.list_events(player, type="transaction", limit=1000))
            assert [e["eventId"] for e in events] == tracked[player]  # each once, in timestamp order
        assert [e["data"]["amount"] for e in events[:2]] == ["2.05", "5.05"]  # players[2]: n = 2, 5, ...
        ((failures, reason),) = seen.errors
        assert reason == "rejected"
        assert [(f["item"]["eventId"], f["error"]["code"]) for f in failures] == [
            (rejected, "unknown_event_type")
        ]
        assert seen.drops == []


async def test_async_client_end_to_end(live: Live) -> None:
    seen = Errors()
    async with AsyncClient(
        live.test_key, live.base_url, on_error=seen.on_error, on_drop=seen.on_drop
    ) as client:
        with pytest.raises(oh.TemplateNotConfigured) as caught:
            await client.upsert_entity("p", "player")
        assert caught.value.status == 409
        await client.update_settings(templateId="tpl_igaming")
        players = [f"async-{n}" for n in range(PLAYERS)]
        for player in players:
            await client.upsert_entity(player, "player", {"country": "MT"})
        assert await client.get_entity(players[0]) == await client.get_entity(players[0])
        await client.set_state(players[1], "kyc_status", "verified")
        assert (await client.get_state(players[1], "kyc_status"))["value"] == "verified"

        tracked: dict[str, list[str]] = {p: [] for p in players}
        for n in range(EVENTS):
            player = players[n % PLAYERS]
            tracked[player].append(await client.track(player, "transaction", _deposit(n)))
        await client.flush()

        for player in players:
            events = [e async for e in client.list_events(player, order="asc", limit=500)]
            assert [e["eventId"] for e in events] == tracked[player]
        newest_first = [e["eventId"] async for e in client.list_events(players[0], order="desc", limit=1000)]
        assert newest_first == tracked[players[0]][::-1]
        assert seen.errors == seen.drops == []


def test_submit_batch_is_idempotent_by_key_and_reports_items(live: Live) -> None:
    with Client(live.live_key, live.base_url) as client:
        client.update_settings(template_id="tpl_igaming")
        client.upsert_entity("batcher", "player")
        items = [
            {"externalId": "batcher", "type": "session", "eventId": f"batch-{n}", "data": {"n": n}}
            for n in range(5)
        ] + [{"externalId": "ghost", "type": "session", "data": {}}]
        (job,) = client.submit_batch("events", items, idempotency_key="live-import-1")
        (replayed,) = client.submit_batch("events", items, idempotency_key="live-import-1")
        assert (replayed["jobId"], replayed["total"]) == (job["jobId"], 6)  # the same job, not a new one
        with pytest.raises(oh.IdempotencyConflict):
            client.submit_batch("events", items[:2], idempotency_key="live-import-1")
        done = client.wait_for_job(job["jobId"], timeout=120)
        assert (done["status"], done["succeeded"], done["failed"]) == ("completed", 5, 1)
        (failed,) = client.job_items(job["jobId"], status="failed")
        assert (failed["index"], failed["error"]["code"]) == (5, "entity_not_found")
        assert len(list(client.job_items(job["jobId"]))) == 6
        (dry,) = client.submit_batch("events", items[:1], dry_run=True)
        assert dry["results"][0]["status"] == "duplicate"


def test_real_errors_raise_typed_exceptions(live: Live) -> None:
    with Client(live.live_key, live.base_url, max_retries=0) as client:
        client.update_settings(template_id="tpl_igaming")
        with pytest.raises(oh.EntityNotFound) as not_found:
            client.get_entity("nobody-here")
        assert (not_found.value.status, not_found.value.code) == (404, "entity_not_found")
        assert str(not_found.value.request_id).startswith("req_")

        with pytest.raises(oh.ValidationError) as invalid:
            client.upsert_entity("x", "spaceship")
        assert invalid.value.status == 422
        assert [d["code"] for d in invalid.value.details] == ["unknown_entity_type"]

        client.upsert_entity("doomed", "player")
        with pytest.raises(oh.StateNotFound):
            client.get_state("doomed", "balance")
        with pytest.raises(oh.ValidationError) as wrong_type:
            client.set_state("doomed", "balance", {"not": "a decimal"})
        assert wrong_type.value.details[0]["code"] == "invalid_field_type"
        client.delete_entity("doomed")
        with pytest.raises(oh.EntityDeleted):
            client.get_entity("doomed")
        client.upsert_entity("typed", "player")
        with pytest.raises(oh.EntityTypeConflict):
            client.upsert_entity("typed", "game")
        with pytest.raises(oh.JobNotFound):
            client.get_job("job_missing")

    with Client("oh_live_not_a_real_key", live.base_url) as stranger, pytest.raises(oh.Unauthorized):
        stranger.settings()
    nowhere = Client(live.live_key, f"http://127.0.0.1:{free_port()}", max_retries=1)
    with nowhere, pytest.raises(oh.TransportError):
        nowhere.settings()


def test_an_async_client_left_open_sends_its_events_at_exit(live: Live, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from onehazel.client import AsyncClient

        async def main():
            client = AsyncClient({live.live_key!r}, {live.base_url!r}, flush_interval=3600)
            await client.upsert_entity("left-open", "player")
            for n in range(3):
                print(await client.track("left-open", "session", {{"n": n}}))

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.split()
    with Client(live.live_key, live.base_url) as client:
        assert [e["eventId"] for e in client.list_events("left-open")] == printed


def test_the_readme_quickstart_runs_as_written(live: Live, tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Python quickstart", 1)[1]
    script = section.split("```python\n", 1)[1].split("```", 1)[0]
    env = clean_env(ONEHAZEL_API_KEY=live.live_key, ONEHAZEL_API_URL=live.base_url)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.stdout
    assert all(re.fullmatch(r"evt_[0-9a-f]{32} 1\.00", line) for line in lines[:3]), lines
    assert lines[3] == "97.00"
    assert re.fullmatch(r"entity_not_found req_\w+", lines[4])
