"""Migrations on both databases: an empty database upgraded to head matches the models exactly.

Each test gets its own fresh, empty database (a new SQLite file, or a new
PostgreSQL database created and dropped around the test), never the shared
migrated one the other tests use.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from onehazel.storage.engine import create_engine
from onehazel.storage.migrate import alembic_config, current_revision, head_revision, migrate
from onehazel.storage.tables import metadata
from tests.conftest import PG_SERVER_URL, REQUIRE_PG, _pg_admin, _with_database


@pytest.fixture
async def empty_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"onehazel_migr_{uuid.uuid4().hex[:12]}"
    try:
        await _pg_admin(f'CREATE DATABASE "{name}"')
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL not reachable at {PG_SERVER_URL} ({type(exc).__name__}: {exc})"
        if REQUIRE_PG:
            pytest.fail(f"{reason}; CI requires PostgreSQL", pytrace=False)
        pytest.skip(reason)
    try:
        yield _with_database(PG_SERVER_URL, name)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def engine(empty_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(empty_url, null_pool=True)
    yield eng
    await eng.dispose()


def _differences(sync_conn: Any) -> list[Any]:
    opts = {"compare_type": True, "compare_server_default": True}
    context = MigrationContext.configure(sync_conn, opts=opts)
    return list(compare_metadata(context, metadata))


def _index(index: Any) -> str:
    """An index as text; a partial index's condition (a SQL clause object) by its SQL."""
    options = {name: str(value) for name, value in index.get("dialect_options", {}).items()}
    return str({**index, "dialect_options": options})


def _schema(sync_conn: Any) -> dict[str, Any]:
    """Everything the inspector can see, as comparable plain data."""
    inspector = sa.inspect(sync_conn)
    schema: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        schema[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            "pk": inspector.get_pk_constraint(table),
            "indexes": sorted(_index(i) for i in inspector.get_indexes(table)),
            "unique": sorted(str(u) for u in inspector.get_unique_constraints(table)),
            "fks": sorted(str(f) for f in inspector.get_foreign_keys(table)),
        }
    return schema


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def test_empty_database_upgrades_to_head_matching_the_models(engine: AsyncEngine) -> None:
    assert await _tables(engine) == set()
    assert await current_revision(engine) is None

    await migrate(engine)

    assert await current_revision(engine) == head_revision()
    assert await _tables(engine) == set(metadata.tables) | {"alembic_version"}
    async with engine.connect() as conn:
        differences = await conn.run_sync(_differences)
    assert differences == []


async def test_migrating_twice_is_a_no_op(engine: AsyncEngine) -> None:
    await migrate(engine)
    async with engine.connect() as conn:
        before = await conn.run_sync(_schema)
    await migrate(engine)
    assert await current_revision(engine) == head_revision()
    async with engine.connect() as conn:
        assert await conn.run_sync(_schema) == before
        assert await conn.run_sync(_differences) == []
        versions = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars().all()
    assert versions == [head_revision()]


async def test_migrating_again_keeps_the_data(engine: AsyncEngine) -> None:
    await migrate(engine)
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO operators (id, name, created_at) VALUES ('op_1', 'Acme', 1)"))
    await migrate(engine)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT id, name FROM operators"))).all()
    assert [tuple(r) for r in rows] == [("op_1", "Acme")]


def _downgrade(sync_conn: Any) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.downgrade(cfg, "base")


async def test_downgrade_to_base_then_upgrade_again(engine: AsyncEngine) -> None:
    await migrate(engine)
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade)
    assert await _tables(engine) <= {"alembic_version"}
    assert await current_revision(engine) is None
    await migrate(engine)
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == []


def _to(revision: str) -> Any:
    def run(sync_conn: Any) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    return run


async def test_0010_keeps_jobs_and_lets_a_server_of_the_version_before_accept_batches(
    engine: AsyncEngine,
) -> None:
    columns = "workspace_id, id, kind, status, total, processed, succeeded, failed, duplicates"
    columns += ", errors, warnings, seq, created_at"
    values = "'ws_1', :id, 'events', 'queued', 1, 0, 0, 0, 0, '[]', '[]', :seq, :created"
    insert = sa.text(f"INSERT INTO jobs ({columns}) VALUES ({values})")  # as 0009's server writes it
    async with engine.begin() as conn:
        await conn.run_sync(_to("0009"))
        await conn.execute(insert, {"id": "job_old", "seq": 1, "created": 1_000})
    async with engine.begin() as conn:
        await conn.run_sync(_to("0010"))
        await conn.execute(insert, {"id": "job_during_rollout", "seq": 2, "created": 2_000})
        rows = (await conn.execute(sa.text("SELECT id, ready_at FROM jobs ORDER BY seq"))).all()
    assert [tuple(r) for r in rows] == [("job_old", 1_000), ("job_during_rollout", 0)]
