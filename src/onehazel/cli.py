"""The ``onehazel`` program: serve, migrate, operators and keys.

Every command answers ``--help``. Bad arguments, an unreachable database or a
missing master key print one clear line on stderr and exit non-zero, never a
traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
import typer

from onehazel.bootstrap import open_services
from onehazel.config import Config
from onehazel.crypto.keys import KeyConfigError
from onehazel.domain.errors import ApiError
from onehazel.domain.values import format_timestamp
from onehazel.services.container import Services
from onehazel.storage.engine import DatabaseUrlError, create_engine
from onehazel.storage.migrate import current_revision, head_revision, migrate

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help="OneHazel data ingestion server.")
operators_app = typer.Typer(no_args_is_help=True, help="Manage operators.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
app.add_typer(operators_app, name="operators")
app.add_typer(keys_app, name="keys")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", help="sqlite:///path.db or postgresql://user@host/db (env ONEHAZEL_DATABASE_URL)"
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


class CliError(Exception):
    """A failure to report in one line."""


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _describe(exc: BaseException, config: Config | None) -> str:
    if isinstance(exc, CliError | KeyConfigError | DatabaseUrlError | ValueError) and not isinstance(
        exc, sa.exc.SQLAlchemyError
    ):
        return str(exc)
    if isinstance(exc, ApiError):
        return exc.message
    where = _safe_url(config.database_url) if config else "the database"
    if isinstance(exc, sa.exc.DBAPIError | OSError | sa.exc.InterfaceError | asyncio.TimeoutError):
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"cannot use the database at {where}: {reason}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unexpected failure'}"


def _safe_url(url: str) -> str:
    """The URL without its password."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def run(config: Config | None, work: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(_with_timeout(work()))
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as exc:
        fail(_describe(exc, config))
        raise  # unreachable


async def _with_timeout(aw: Awaitable[T]) -> T:
    return await asyncio.wait_for(aw, timeout=120)


def load_config(database_url: str | None) -> Config:
    try:
        return Config.load(database_url)
    except (DatabaseUrlError, KeyConfigError) as exc:
        fail(str(exc), 2)
        raise


async def _services(config: Config) -> Services:
    await _ensure_schema(config, migrate_sqlite=config.is_sqlite)
    return await open_services(config, null_pool=True)


async def _ensure_schema(config: Config, *, migrate_sqlite: bool) -> None:
    config.prepare_sqlite_dir()
    engine = create_engine(config.database_url, null_pool=True)
    try:
        if migrate_sqlite:
            await migrate(engine)
        elif await current_revision(engine) != head_revision():
            raise CliError(
                f"the database schema at {_safe_url(config.database_url)} is not up to date; "
                "run: onehazel migrate"
            )
    finally:
        await engine.dispose()


def _print_keys(created: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(
            json.dumps(
                {"operatorId": created.operator_id, "liveKey": created.live_key, "testKey": created.test_key}
            )
        )
        return
    typer.echo(f"operator {created.operator_id} ({created.name})")
    typer.echo(f"  live key: {created.live_key}")
    typer.echo(f"  test key: {created.test_key}")
    typer.echo("Store these keys now: they are shown only once.")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8080,
    database_url: DatabaseUrl = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="API worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the API (the embedded SQLite default needs no configuration)."""
    import uvicorn

    from onehazel.api.observability import uvicorn_log_config

    config = load_config(database_url)
    try:
        config.key_ring()
    except KeyConfigError as exc:
        fail(str(exc), 2)

    async def prepare() -> Any:
        await _ensure_schema(config, migrate_sqlite=config.is_sqlite)
        if not config.is_sqlite:
            return None
        services = await open_services(config, null_pool=True)
        try:
            if await services.auth.count_operators() == 0:
                return await services.auth.create_operator("default")
            return None
        finally:
            await services.close()

    first = run(config, prepare)
    if first is not None:
        typer.echo("Created a first operator for this new database.")
        _print_keys(first, as_json=False)
    os.environ["ONEHAZEL_DATABASE_URL"] = config.database_url
    os.environ["ONEHAZEL_LOG_LEVEL"] = log_level.upper()
    typer.echo(
        f"OneHazel listening on http://{host}:{port}/operator-data-api (docs: http://{host}:{port}/docs)"
    )
    sys.stdout.flush()
    uvicorn.run(
        "onehazel.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level=log_level.lower(),
        log_config=uvicorn_log_config(log_level),
        http="httptools",
        loop="uvloop",
        timeout_graceful_shutdown=10,
    )


@app.command("migrate")
def migrate_command(database_url: DatabaseUrl = None) -> None:
    """Apply schema migrations up to the newest."""
    config = load_config(database_url)

    async def work() -> str | None:
        config.prepare_sqlite_dir()
        engine = create_engine(config.database_url, null_pool=True)
        try:
            await migrate(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    revision = run(config, work)
    typer.echo(f"schema is at revision {revision}")


@operators_app.command("create")
def operators_create(name: str, as_json: AsJson = False, database_url: DatabaseUrl = None) -> None:
    """Create an operator with a live and a test workspace; prints both keys once."""
    config = load_config(database_url)

    async def work() -> Any:
        services = await _services(config)
        try:
            return await services.auth.create_operator(name)
        finally:
            await services.close()

    _print_keys(run(config, work), as_json)


@keys_app.command("create")
def keys_create(
    operator: Annotated[str, typer.Option("--operator", help="Operator id (op_...).")],
    mode: Annotated[str, typer.Option("--mode", help="live or test.")] = "live",
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a further key for an operator's live or test workspace."""
    config = load_config(database_url)

    async def work() -> tuple[str, str]:
        services = await _services(config)
        try:
            return await services.auth.create_key(operator, mode)
        finally:
            await services.close()

    key_id, key = run(config, work)
    if as_json:
        typer.echo(json.dumps({"keyId": key_id, "key": key, "operatorId": operator, "mode": mode}))
    else:
        typer.echo(f"key {key_id} ({mode}): {key}\nStore it now: it is shown only once.")


@keys_app.command("list")
def keys_list(
    operator: Annotated[str | None, typer.Option("--operator", help="Only this operator's keys.")] = None,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List keys (ids and hints only; secrets are never stored)."""
    config = load_config(database_url)

    async def work() -> list[Any]:
        services = await _services(config)
        try:
            return await services.auth.list_keys(operator)
        finally:
            await services.close()

    rows = [
        {
            "keyId": k.id,
            "operatorId": k.operator_id,
            "mode": k.mode,
            "hint": k.hint,
            "createdAt": format_timestamp(k.created_at),
            "revokedAt": format_timestamp(k.revoked_at) if k.revoked_at else None,
        }
        for k in run(config, work)
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        status = f"revoked {r['revokedAt']}" if r["revokedAt"] else "active"
        typer.echo(f"{r['keyId']}  {r['operatorId']}  {r['mode']:4}  {r['hint']}  {status}")


@keys_app.command("revoke")
def keys_revoke(key_id: str, database_url: DatabaseUrl = None) -> None:
    """Revoke a key: it gets 401 within a few seconds on every server."""
    config = load_config(database_url)

    async def work() -> None:
        services = await _services(config)
        try:
            await services.auth.revoke_key(key_id)
        finally:
            await services.close()

    run(config, work)
    typer.echo(f"revoked {key_id}")


@app.command()
def worker(
    database_url: DatabaseUrl = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Jobs worked on at once.")] = 2,
) -> None:
    """Run batch workers alone (any number of processes, on any machine, one PostgreSQL).

    SIGTERM or Ctrl-C finishes the chunk in flight, gives the job back and exits.
    """
    import signal

    from onehazel.api.observability import configure_logging
    from onehazel.jobs.worker import start_in_background

    config = load_config(database_url)
    configure_logging()

    async def work() -> None:
        await _ensure_schema(config, migrate_sqlite=config.is_sqlite)
        services = await open_services(config)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        stop = start_in_background(services, config.worker_options(), tasks=concurrency)
        typer.echo(f"OneHazel batch worker running ({concurrency} at once); SIGTERM to stop")
        try:
            await stopped.wait()
        finally:
            await stop()
            await services.close()

    try:
        asyncio.run(work())
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        fail(_describe(exc, config))


def main() -> None:
    """Run the program; usage errors become one line on stderr, not a boxed panel."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # the base of click's exceptions, which typer vendors
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message(), err=True)
        else:
            typer.echo(f"error: {_usage_line(exc)}", err=True)
        code = exc.exit_code
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


def _usage_line(exc: typer.TyperException) -> str:
    message = " ".join(exc.format_message().split())
    command_path = getattr(getattr(exc, "ctx", None), "command_path", None)
    if command_path:
        message += f" (see: {command_path} --help)"
    return message
