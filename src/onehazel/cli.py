"""The ``onehazel`` program: serve, migrate, operators, keys and subject-access export.

Every command answers ``--help``. Bad arguments, an unreachable database or a
missing master key print one clear line on stderr and exit non-zero, never a
traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
import typer

from onehazel.bootstrap import open_services
from onehazel.config import Config
from onehazel.crypto.keys import KeyConfigError
from onehazel.domain.errors import ApiError, EntityDeleted, EntityNotFound
from onehazel.domain.values import ValueProblem, check_identifier, format_timestamp
from onehazel.services.audit import CLI
from onehazel.services.container import Services
from onehazel.services.exports import ExportStream
from onehazel.storage.engine import DatabaseUrlError, create_engine
from onehazel.storage.migrate import current_revision, head_revision, migrate
from onehazel.storage.unit_of_work import Store

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help="OneHazel data ingestion server.")
operators_app = typer.Typer(no_args_is_help=True, help="Manage operators.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys; rotate master keys.")
app.add_typer(operators_app, name="operators")
app.add_typer(keys_app, name="keys")
retention_app = typer.Typer(
    no_args_is_help=True, help="Retention: expire old events, erase deleted entities for good."
)
app.add_typer(retention_app, name="retention")

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


def run(config: Config | None, work: Callable[[], Awaitable[T]], *, timeout: float | None = 120) -> T:
    try:
        return asyncio.run(_with_timeout(work(), timeout))
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as exc:
        fail(_describe(exc, config))
        raise  # unreachable


async def _with_timeout(aw: Awaitable[T], timeout: float | None) -> T:
    return await asyncio.wait_for(aw, timeout=timeout)


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


async def _check_master_keys(config: Config) -> None:
    """Start-up check: every master key id protecting stored data is configured."""
    from onehazel.services.master_keys import MasterKeys

    engine = create_engine(config.database_url, null_pool=True)
    try:
        await MasterKeys(Store(engine), config.key_ring()).check()
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


# Idle keep-alive connections stay open this long (uvicorn's default is 5 s). It must exceed the
# idle expiry of client connection pools (httpx, and so this project's client: 5 s; proxies and
# load balancers: often 60 s), so that the client, not the server, closes an idle connection:
# when the server closes one at the moment a client reuses it, the request in flight fails with
# a connection reset (bench/soak.py saw this under load with httpx's defaults).
KEEP_ALIVE_SECONDS = 75


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

    from onehazel.api.http_protocol import JsonErrorHttpToolsProtocol
    from onehazel.api.observability import uvicorn_log_config

    config = load_config(database_url)
    try:
        config.key_ring()
        config.retention_options()
        config.analytics_compact_seconds()
        config.head_timeout_seconds()
    except (KeyConfigError, ValueError) as exc:
        fail(str(exc), 2)

    async def prepare() -> Any:
        await _ensure_schema(config, migrate_sqlite=config.is_sqlite)
        await _check_master_keys(config)
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
        http=JsonErrorHttpToolsProtocol,  # httptools, JSON 400s
        ws="none",  # no WebSocket routes: an Upgrade is ignored and the request served as HTTP
        loop="uvloop",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
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
            return await services.auth.create_operator(name, actor=CLI)
        finally:
            await services.close()

    _print_keys(run(config, work), as_json)


def _rate_option(flag: str, what: str) -> Any:
    return typer.Option(flag, min=1, max=1_000_000, metavar="N", help=f"{what} a second (bursts of 2x).")


@operators_app.command("limits")
def operators_limits(
    operator_id: Annotated[str, typer.Argument(metavar="OPERATOR_ID", help="Operator id (op_...).")],
    writes: Annotated[int | None, _rate_option("--writes", "Single writes (POST/PUT/DELETE)")] = None,
    batches: Annotated[int | None, _rate_option("--batches", "Batch submits")] = None,
    reads: Annotated[int | None, _rate_option("--reads", "Reads (GET)")] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Back to the defaults, then apply any N.")] = False,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show or set an operator's rate limits (per workspace; bursts of twice the rate).

    With no options, prints the current limits. Running servers apply a change within 2 s.
    """
    config = load_config(database_url)
    given = {"writes": writes, "batches": batches, "reads": reads}
    rates: dict[str, int | None] = {name: rate for name, rate in given.items() if rate is not None}

    async def work() -> Any:
        services = await _services(config)
        try:  # with no rates and no --reset this only reads them (and checks the operator exists)
            return await services.rate_limits.configure(operator_id, rates, reset=reset)
        finally:
            await services.close()

    limits = run(config, work).to_wire()
    if as_json:
        typer.echo(json.dumps({"operatorId": operator_id, **limits}))
        return
    typer.echo(f"rate limits of {operator_id} (each of its live and test workspaces):")
    for name, limit in limits.items():
        source = "default" if limit["default"] else "set for this operator"
        typer.echo(f"  {name:8} {limit['rate']:>8}/s  bursts of {limit['burst']:<8} ({source})")


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
            return await services.auth.create_key(operator, mode, actor=CLI)
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
            "workspaceId": k.workspace_id,
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
        typer.echo(
            f"{r['keyId']}  {r['operatorId']}  {r['mode']:4}  {r['workspaceId']}  {r['hint']}  {status}"
        )


@keys_app.command("revoke")
def keys_revoke(key_id: str, database_url: DatabaseUrl = None) -> None:
    """Revoke a key: it gets 401 within a few seconds on every server."""
    config = load_config(database_url)

    async def work() -> None:
        services = await _services(config)
        try:
            await services.auth.revoke_key(key_id, actor=CLI)
        finally:
            await services.close()

    run(config, work)
    typer.echo(f"revoked {key_id}")


@keys_app.command("master-status")
def keys_master_status(as_json: AsJson = False, database_url: DatabaseUrl = None) -> None:
    """How many stored items each master key protects; which old keys are safe to remove.

    Exits 1 when data is under a master key that is not configured.
    """
    from onehazel.services.master_keys import KeyUsage, MasterKeys

    config = load_config(database_url)

    async def work() -> KeyUsage:
        await _ensure_schema(config, migrate_sqlite=config.is_sqlite)
        engine = create_engine(config.database_url, null_pool=True)
        try:
            return await MasterKeys(Store(engine), config.key_ring()).usage()
        finally:
            await engine.dispose()

    usage = run(config, work, timeout=None)
    if as_json:
        typer.echo(json.dumps(usage.to_wire()))
    else:
        _print_usage(usage.to_wire())
    if usage.missing:
        fail(str(usage.missing_error()))


@keys_app.command("rotate-master")
def keys_rotate_master(
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=100_000, help="Rows per read and per transaction.")
    ] = 500,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only report what is under which key; change nothing.")
    ] = False,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Re-wrap all stored data under the current (last configured) master key.

    Configure the new key last, keep the old ones, restart every server and
    worker, then run this; it works in short transactions beside them and can
    be interrupted and run again. It ends by naming the old keys that no data
    needs any more (safe to remove); exit 1 if some data is still under an old key.
    """
    from onehazel.services.master_keys import LABELS, KeyUsage, MasterKeys, RotationReport

    config = load_config(database_url)
    last_print = [0.0]

    def progress(item: str, scanned: int, rewrapped: int, finished: bool) -> None:
        now = time.monotonic()
        if as_json or (not finished and now - last_print[0] < 1.0):
            return
        last_print[0] = now
        state = "done: " if finished else ""
        typer.echo(f"{LABELS[item]}: {state}{scanned} scanned, {rewrapped} re-wrapped")

    async def work() -> KeyUsage | RotationReport:
        await _ensure_schema(config, migrate_sqlite=config.is_sqlite)
        engine = create_engine(config.database_url, null_pool=True)
        try:
            keys = MasterKeys(Store(engine), config.key_ring())
            if dry_run:
                return await keys.usage()
            ring = keys.keys
            if not as_json:
                typer.echo(f"rotating to master key {ring.current.id} (configured: {', '.join(ring.ids)})")
            return await keys.rotate(batch_size=batch_size, progress=progress)
        finally:
            await engine.dispose()

    result = run(config, work, timeout=None)  # millions of keys may take a while; each step is short
    if isinstance(result, KeyUsage):
        if as_json:
            typer.echo(json.dumps(result.to_wire()))
        else:
            _print_usage(result.to_wire())
        if result.missing:
            fail(str(result.missing_error()))
        return
    report = result.to_wire()
    if as_json:
        typer.echo(json.dumps(report))
    else:
        _print_rotation(report)
    if report["stillInUse"]:
        raise typer.Exit(1)


def _print_usage(usage: dict[str, Any]) -> None:
    for key in usage["keys"]:
        label = " (current)" if key["current"] else "" if key["configured"] else " (NOT CONFIGURED)"
        unused = " (unused: safe to remove)" if key["keyId"] in usage["unused"] else ""
        typer.echo(
            f"master key {key['keyId']}{label}: {key['entityKeys']} entity keys, "
            f"{key['workspaceSecrets']} workspace secrets, {key['jobPayloads']} job payloads{unused}"
        )
    if usage["unrecognised"]:
        typer.echo(f"{usage['unrecognised']} stored items have an unrecognised format")


def _print_rotation(report: dict[str, Any]) -> None:
    changed = sum(report["changedConcurrently"].values())
    unreadable = sum(report["unreadable"].values())
    if changed:
        typer.echo(f"{changed} items were changed by other writers meanwhile and left as they were")
    if unreadable:
        typer.echo(f"warning: {unreadable} items could not be decrypted and stay as they were")
    if report["stillInUse"]:
        left = ", ".join(f"{kid} ({n} items)" for kid, n in report["stillInUse"].items())
        typer.echo(
            f"still in use: {left}; keep those keys, make sure every server and worker runs with "
            f"{report['currentKey']} last, then run rotate-master again"
        )
    if report["unusedKeys"]:
        typer.echo(
            f"no data left under keys: {', '.join(report['unusedKeys'])} "
            "(remove them from the configuration, then restart)"
        )
    elif not report["stillInUse"]:
        typer.echo(f"all data is under the current master key {report['currentKey']}; no other key is in use")


@app.command("export")
def export_command(
    external_id: Annotated[str, typer.Argument(metavar="EXTERNAL_ID", help="The entity's externalId.")],
    workspace: Annotated[
        str | None, typer.Option("--workspace", help="Workspace id (ws_...; see: onehazel keys list).")
    ] = None,
    operator: Annotated[
        str | None, typer.Option("--operator", help="Operator id (op_...), instead of --workspace.")
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="live or test (with --operator).")] = "live",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (owner-only); default stdout.")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Subject-access export of one entity, its events and states as NDJSON, PII decrypted.

    The same lines as GET /entities/{externalId}/export; recorded in the audit log.
    """
    if (workspace is None) == (operator is None):
        fail("name the workspace: --workspace WS_ID, or --operator OP_ID [--mode live|test]", 2)
    try:
        check_identifier(external_id, what="externalId")
    except ValueProblem as exc:
        fail(f"EXTERNAL_ID: {exc.message}", 2)
    config = load_config(database_url)

    async def work() -> ExportStream:
        services = await _services(config)
        try:
            ws = await services.auth.workspace(
                workspace_id=workspace, operator_id=operator, mode=mode, actor=CLI
            )
            try:
                stream = await services.exports.start(ws, external_id)
            except EntityNotFound:
                raise CliError(f"no entity {external_id!r} in workspace {ws.id} ({ws.mode})") from None
            except EntityDeleted:
                raise CliError(f"entity {external_id!r} was deleted; it can no longer be exported") from None
            await _write_export(stream, output)
            return stream
        finally:
            await services.close()

    stream = run(config, work, timeout=None)  # millions of events may take a while
    if output is not None:
        typer.echo(f"exported {external_id}: {stream.events} events, {stream.states} states to {output}")


async def _write_export(stream: ExportStream, output: Path | None) -> None:
    """Stream to stdout, or to ``output`` through a ``.partial`` file renamed once complete."""
    if output is None:
        async for chunk in stream:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        if stream.failure is not None:
            raise CliError(f"export cut short: {stream.failure.message}")
        return
    partial = output.with_name(output.name + ".partial")
    try:
        # It holds PII: a new file only this user reads. A stale .partial (or a link planted
        # in its place) is removed, never written through.
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            async for chunk in stream:
                file.write(chunk)
        if stream.failure is not None:
            raise CliError(f"export cut short: {stream.failure.message}")
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


@retention_app.command("run")
def retention_run(as_json: AsJson = False, database_url: DatabaseUrl = None) -> None:
    """Run one retention sweep now; prints what it removed, per workspace.

    Safe beside running servers and other sweeps: they share the work, in short transactions.
    """
    from onehazel.services.retention import RetentionService

    config = load_config(database_url)
    try:
        options = config.retention_options()
    except ValueError as exc:
        fail(str(exc), 2)

    async def work() -> Any:
        await _ensure_schema(config, migrate_sqlite=config.is_sqlite)
        services = await open_services(config)
        try:
            service = RetentionService(
                services.core,
                suppression_days=options["suppression_days"],
                chunk=int(options["chunk"]),
                pause_seconds=options["pause_seconds"],
            )
            return await service.sweep()
        finally:
            await services.close()

    report = run(config, work, timeout=None)  # a large backlog may take a while; each step is short
    if as_json:
        typer.echo(json.dumps(report.to_wire()))
        return
    _print_sweep(report.to_wire())


def _print_sweep(report: dict[str, Any]) -> None:
    typer.echo(f"retention sweep at {report['sweptAt']}")
    for ws in report["workspaces"]:
        typer.echo(f"{ws['workspaceId']} ({ws['operatorId']} {ws['mode']}): {_sweep_counts(ws)}")
    if not report["workspaces"]:
        typer.echo("nothing to remove")
    else:
        typer.echo(f"total: {_sweep_counts(report['totals'])}")
    typer.echo(
        f"{report['transactions']} transactions in {report['elapsedMs'] / 1000:.1f} s, "
        f"the longest {report['longestTransactionMs']} ms"
        + (" (interrupted)" if report["interrupted"] else "")
    )


def _sweep_counts(c: dict[str, Any]) -> str:
    return (
        f"{c['eventsExpired']} events expired, {c['entitiesPurged']} entities purged "
        f"({c['purgedEvents']} events, {c['purgedStates']} states, "
        f"{c['redactedJobItems']} job items redacted), "
        f"{c['tombstonesReleased']} tombstones released"
    )


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
    from onehazel.bootstrap import tune_runtime
    from onehazel.jobs.worker import start_in_background

    config = load_config(database_url)
    configure_logging()

    async def work() -> None:
        await _ensure_schema(config, migrate_sqlite=config.is_sqlite)
        await _check_master_keys(config)
        services = await open_services(config)
        tune_runtime()  # as serve does
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


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="NDJSON (one item per line) or CSV with a header row.")],
    kind: Annotated[str, typer.Option("--kind", help="entities, events or states.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="ndjson or csv (default: from the extension).")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", help="Items per batch (default and maximum: 5000 events, 1000 others)."),
    ] = None,
    errors: Annotated[
        Path | None,
        typer.Option("--errors", help="Write rejected lines here (NDJSON: line, externalId, code)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip the lines an earlier run confirmed.")
    ] = False,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="Progress file (default: FILE.onehazel-import.json beside FILE)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary, no progress bar.")] = False,
    api_url: Annotated[
        str | None,
        typer.Option("--api-url", help="Server URL (env ONEHAZEL_API_URL; default http://127.0.0.1:8080)."),
    ] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="API key (env ONEHAZEL_API_KEY).")] = None,
) -> None:
    """Import entities, events or states from a file, exactly once (re-runs store nothing twice)."""
    from onehazel.importer import ImportRequest, import_file

    request = ImportRequest(
        file, kind, fmt, batch_size, errors, resume, state, as_json, api_url=api_url, api_key=api_key
    )
    raise typer.Exit(import_file(request))


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
