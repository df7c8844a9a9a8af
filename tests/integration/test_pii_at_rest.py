"""PII never reaches the database, the logs or error messages in plain text (CONTRACT.md, "PII encryption").

Each test writes distinctive canary values into PII fields, then looks for them
where they must not be: the raw SQLite file (and its WAL), a ``pg_dump`` of
the PostgreSQL database, every log record of the request, every error body.
A non-PII canary written alongside must be found by the same scan, so a scan
that silently sees nothing cannot pass.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from onehazel.api.observability import JsonFormatter
from onehazel.domain.workspace import Workspace
from onehazel.services.container import Services
from onehazel.storage.tables import entities, entity_keys, events
from tests.conftest import REQUIRE_PG, Api


@dataclass(frozen=True)
class Canaries:
    email: str
    first_name: str
    phone: str
    ip_address: str
    plain: str
    """A non-PII value written next to the PII: the scans must find this one."""

    @classmethod
    def new(cls) -> Canaries:
        u = [uuid.uuid4().hex for _ in range(5)]
        return cls(
            email=f"pii-canary-{u[0]}@example.com",
            first_name=f"Canaryfirst{u[1]}",
            phone=f"+44 7700 {u[2][:12]}",
            ip_address=f"2001:db8:{u[3][:4]}:{u[3][4:8]}:{u[3][8:12]}:{u[3][12:16]}:{u[3][16:20]}:1",
            plain=f"plain-control-{u[4]}",
        )

    @property
    def pii(self) -> list[str]:
        return [self.email, self.first_name, self.phone, self.ip_address]


@pytest.fixture
def canaries() -> Canaries:
    return Canaries.new()


async def write_pii(api: Api, canaries: Canaries, external_id: str | None = None) -> str:
    external_id = external_id or f"p-{uuid.uuid4().hex[:10]}"
    created = await api.post(
        "/entities",
        json={
            "externalId": external_id,
            "type": "player",
            "attributes": {
                "email": canaries.email,
                "first_name": canaries.first_name,
                "phone": canaries.phone,
                "country": "MT",
                "segment": canaries.plain,
            },
        },
    )
    assert created.status_code == 201, created.text
    event = await api.post(
        f"/entities/{external_id}/events",
        json={
            "type": "session",
            "data": {"action": "login", "ip_address": canaries.ip_address, "device": canaries.plain},
        },
    )
    assert event.status_code == 201, event.text
    return external_id


async def workspace_of(services: Services, api: Api) -> Workspace:
    return await services.auth.authenticate(f"Bearer {api.key}")


# --- the database at rest ---------------------------------------------------------------------


def _pg_dump_binary() -> str | None:
    found = shutil.which("pg_dump")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))
    return candidates[-1] if candidates else None


def _pg_dump(url: str) -> bytes:
    binary = _pg_dump_binary()
    if binary is None:
        if REQUIRE_PG:
            pytest.fail("pg_dump is not installed; CI requires it", pytrace=False)
        pytest.skip("pg_dump is not installed")
    result = subprocess.run(
        [binary, "--no-owner", "--no-privileges", f"--dbname={url}"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def _sqlite_bytes(url: str) -> bytes:
    path = Path(url.split(":///", 1)[1])
    chunks = [path.read_bytes()]
    for suffix in ("-wal", "-journal"):
        extra = Path(f"{path}{suffix}")
        if extra.exists():
            chunks.append(extra.read_bytes())
    return b"".join(chunks)


async def database_bytes(backend: str, database_url: str) -> bytes:
    if backend == "postgres":
        return await asyncio.to_thread(_pg_dump, database_url)
    return await asyncio.to_thread(_sqlite_bytes, database_url)


async def test_pii_is_never_stored_in_plain_text(
    api: Api, canaries: Canaries, backend: str, database_url: str
) -> None:
    external_id = await write_pii(api, canaries)
    # An update re-encrypts the changed field and keeps the others' ciphertexts.
    updated = await api.post(
        "/entities",
        json={"externalId": external_id, "type": "player", "attributes": {"last_name": canaries.first_name}},
    )
    assert updated.status_code == 200, updated.text

    dump = await database_bytes(backend, database_url)

    assert canaries.plain.encode() in dump, "the scan must see non-PII data, or it proves nothing"
    for value in canaries.pii:
        assert value.encode() not in dump, f"{value!r} is stored in plain text"
        assert value.encode("utf-16-le") not in dump


async def test_pii_reads_back_decrypted_on_single_entity_reads(api: Api, canaries: Canaries) -> None:
    external_id = await write_pii(api, canaries)
    entity = (await api.get(f"/entities/{external_id}")).json()
    assert entity["attributes"]["email"] == canaries.email
    assert entity["attributes"]["first_name"] == canaries.first_name
    assert entity["attributes"]["phone"] == canaries.phone
    (event,) = (await api.get(f"/entities/{external_id}/events")).json()["data"]
    assert event["data"]["ip_address"] == canaries.ip_address


async def test_bulk_listing_returns_ciphertext_only(api: Api, canaries: Canaries) -> None:
    external_id = await write_pii(api, canaries)
    response = await api.get("/entities", params={"type": "player", "limit": 1000})
    assert response.status_code == 200
    for value in canaries.pii:
        assert value not in response.text
    (listed,) = [e for e in response.json()["data"] if e["externalId"] == external_id]
    attributes = listed["attributes"]
    assert attributes["country"] == "MT"
    assert attributes["segment"] == canaries.plain
    for field in ("email", "first_name", "phone"):
        assert set(attributes[field]) == {"$encrypted"}
        token = attributes[field]["$encrypted"]
        assert isinstance(token, str)
        assert token.startswith("v1.")
    assert len({attributes[f]["$encrypted"] for f in ("email", "first_name", "phone")}) == 3


# --- logs and error messages ------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.formatter_ = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.formatter_.format(record))
        self.lines.append(repr(record.__dict__))


@pytest.fixture
def onehazel_logs(caplog: pytest.LogCaptureFixture) -> Iterator[_Collect]:
    """Every record of the "onehazel" logger (and, through caplog, of every other logger)."""
    caplog.set_level(logging.DEBUG)
    logger = logging.getLogger("onehazel")
    handler = _Collect()
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


async def test_pii_never_reaches_the_logs(
    api: Api, canaries: Canaries, onehazel_logs: _Collect, caplog: pytest.LogCaptureFixture
) -> None:
    external_id = await write_pii(api, canaries)
    assert (await api.get(f"/entities/{external_id}")).status_code == 200
    assert (await api.get(f"/entities/{external_id}/events")).status_code == 200
    # a failing request must not log what it was sent either
    bad = await api.post(
        "/entities",
        json={"externalId": external_id, "type": "player", "attributes": {"phone": [canaries.phone]}},
    )
    assert bad.status_code == 422

    request_logs = [r for r in onehazel_logs.records if r.getMessage() == "request"]
    assert len(request_logs) >= 5, "the request log must be captured, or this test proves nothing"
    # the access log names route templates, never raw paths (observability.py's promise)
    assert not any(external_id in line for line in onehazel_logs.lines)
    everything = "\n".join(onehazel_logs.lines) + "\n" + caplog.text
    for record in caplog.records:
        everything += "\n" + repr(record.__dict__)
    for value in canaries.pii:
        assert value not in everything


async def test_error_messages_never_echo_pii(api: Api, canaries: Canaries) -> None:
    external_id = await write_pii(api, canaries)
    phone_digits = 10**14 + uuid.uuid4().int % 10**14  # a phone number sent as a JSON number
    player = {"externalId": external_id, "type": "player"}
    events_path = f"/entities/{external_id}/events"
    bad_requests = [
        ("/entities", {**player, "attributes": {"email": [canaries.email]}}),
        ("/entities", {**player, "attributes": {"phone": phone_digits}}),
        ("/entities", {**player, "attributes": {"first_name": {"v": canaries.first_name}}}),
        ("/entities", {**player, "type": "game", "attributes": {"email": canaries.email}}),
        (events_path, {"type": "session", "data": {"ip_address": [canaries.ip_address]}}),
        (events_path, {"type": "sessionx", "data": {"ip_address": canaries.ip_address}}),
        ("/entities/nobody/events", {"type": "session", "data": {"ip_address": canaries.ip_address}}),
    ]
    for path, body in bad_requests:
        response = await api.post(path, json=body)
        assert response.status_code in (404, 409, 422), (path, response.status_code)
        assert "error" in response.json()
        for value in [*canaries.pii, str(phone_digits)]:
            assert value not in response.text, (path, body)


async def test_event_id_conflict_does_not_echo_pii(api: Api, canaries: Canaries) -> None:
    external_id = await write_pii(api, canaries)
    first = await api.post(
        f"/entities/{external_id}/events",
        json={"eventId": "evt-pii-1", "type": "session", "data": {"ip_address": canaries.ip_address}},
    )
    assert first.status_code == 201
    conflict = await api.post(
        f"/entities/{external_id}/events",
        json={"eventId": "evt-pii-1", "type": "session", "data": {"ip_address": canaries.email}},
    )
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "event_id_conflict"
    for value in canaries.pii:
        assert value not in conflict.text


# --- ciphertexts are bound to their row (AES-GCM associated data) -----------------------------


async def _copy_columns(
    services: Services, ws: Workspace, *, source: str, target: str, columns: tuple[str, ...]
) -> None:
    """Copy columns of the source entity's row onto the target's (``data_key`` lives in entity_keys)."""
    async with services.core.store.begin() as uow:
        for table in (entities, entity_keys):
            names = [c for c in columns if c in table.c and c not in ("workspace_id", "external_id")]
            if not names:
                continue
            row = (
                await uow.conn.execute(
                    sa.select(*(table.c[c] for c in names)).where(
                        table.c.workspace_id == ws.id, table.c.external_id == source
                    )
                )
            ).one()
            result = await uow.conn.execute(
                sa.update(table)
                .where(table.c.workspace_id == ws.id, table.c.external_id == target)
                .values(**dict(row._mapping))
            )
            assert result.rowcount == 1


def assert_unreadable(response: Any, leaked: list[str]) -> None:
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "pii_unreadable"
    assert error["requestId"] == response.headers["x-request-id"]
    for value in leaked:
        assert value not in response.text


@pytest.mark.parametrize("columns", [("pii",), ("pii", "data_key")], ids=["pii", "pii-and-data-key"])
async def test_ciphertext_copied_to_another_entity_fails_instead_of_leaking(
    api: Api, services: Services, columns: tuple[str, ...]
) -> None:
    victim, other = Canaries.new(), Canaries.new()
    source = await write_pii(api, victim)
    target = await write_pii(api, other)
    ws = await workspace_of(services, api)

    await _copy_columns(services, ws, source=source, target=target, columns=columns)

    assert_unreadable(await api.get(f"/entities/{target}"), victim.pii)
    # an update has to read the stored PII to merge it: it must fail the same way, not 500
    update = await api.post(
        "/entities", json={"externalId": target, "type": "player", "attributes": {"last_name": "X"}}
    )
    assert_unreadable(update, victim.pii)
    # the source entity is untouched and still reads back
    assert (await api.get(f"/entities/{source}")).json()["attributes"]["email"] == victim.email
    # the bulk listing never decrypts, so it still answers (ciphertext only)
    listing = await api.get("/entities", params={"limit": 1000})
    assert listing.status_code == 200
    for value in victim.pii:
        assert value not in listing.text


async def test_event_ciphertext_copied_to_another_event_fails_instead_of_leaking(
    api: Api, services: Services
) -> None:
    victim, other = Canaries.new(), Canaries.new()
    source = await write_pii(api, victim)
    target = await write_pii(api, other)
    ws = await workspace_of(services, api)
    async with services.core.store.begin() as uow:
        pii = (
            await uow.conn.execute(
                sa.select(events.c.pii).where(events.c.workspace_id == ws.id, events.c.external_id == source)
            )
        ).scalar_one()
        await uow.conn.execute(
            sa.update(events)
            .where(events.c.workspace_id == ws.id, events.c.external_id == target)
            .values(pii=pii)
        )

    assert_unreadable(await api.get(f"/entities/{target}/events"), victim.pii)
    source_events = (await api.get(f"/entities/{source}/events")).json()["data"]
    assert source_events[0]["data"]["ip_address"] == victim.ip_address


async def test_ciphertext_copied_across_workspaces_fails(api: Api, services: Services) -> None:
    victim = Canaries.new()
    external_id = await write_pii(api, victim)
    live = await workspace_of(services, api)
    test_operator = await services.auth.create_operator("other-op")
    other_api = api.as_key(test_operator.live_key)
    assert (await other_api.put("/settings", json={"templateId": "tpl_igaming"})).status_code == 200
    await write_pii(other_api, Canaries.new(), external_id=external_id)
    other = await workspace_of(services, other_api)

    async with services.core.store.begin() as uow:
        for table, column in ((entities, "pii"), (entity_keys, "data_key")):
            value = (
                await uow.conn.execute(
                    sa.select(table.c[column]).where(
                        table.c.workspace_id == live.id, table.c.external_id == external_id
                    )
                )
            ).scalar_one()
            result = await uow.conn.execute(
                sa.update(table)
                .where(table.c.workspace_id == other.id, table.c.external_id == external_id)
                .values({column: value})
            )
            assert result.rowcount == 1

    assert_unreadable(await other_api.get(f"/entities/{external_id}"), victim.pii)
    assert (await api.get(f"/entities/{external_id}")).json()["attributes"]["email"] == victim.email
