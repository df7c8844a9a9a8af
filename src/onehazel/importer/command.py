"""``onehazel import``: options checked, the import run, a summary printed, an exit code returned.

Exit codes: 0 when every item succeeded or was a duplicate; 1 when any item failed or a line
was malformed, or when the import stopped early (server unreachable, key refused, Ctrl-C is
130); 2 when nothing could start (bad options, a missing or unreadable file, a CSV header that
cannot be used, a progress file that belongs to another import). Every failure is one line on
stderr starting with ``error:``, never a traceback.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import typer

from onehazel.client import Client
from onehazel.client.errors import ConfigurationError, OneHazelError
from onehazel.importer import progress as progress_file
from onehazel.importer.display import NoDisplay, ProgressBar
from onehazel.importer.progress import Progress, ProgressError
from onehazel.importer.reading import InputError, SourceFile, check_header, scan
from onehazel.importer.runner import Importer, RejectSink, Settings

BATCH_LIMITS = {"events": 5000, "entities": 1000, "states": 1000}
EXTENSIONS = {".ndjson": "ndjson", ".jsonl": "ndjson", ".csv": "csv"}
DEFAULT_API_URL = "http://127.0.0.1:8080"


class UsageProblem(Exception):
    """The command line asks for something that cannot be done (exit 2)."""


@dataclass
class ImportRequest:
    file: Path
    kind: str
    fmt: str | None = None
    batch_size: int | None = None
    errors: Path | None = None
    resume: bool = False
    state: Path | None = None
    as_json: bool = False
    api_url: str | None = None
    api_key: str | None = None


def import_file(request: ImportRequest) -> int:
    """Run one import as the command line asked; the exit code."""
    try:
        settings, source = _prepare(request)
        progress = _starting_progress(request, source, settings)
    except (UsageProblem, InputError, ProgressError, ConfigurationError) as exc:
        return _error(str(exc), 2)
    except KeyboardInterrupt:
        return _error("interrupted before anything was sent", 130)
    with ExitStack() as stack:
        try:
            client = stack.enter_context(Client(request.api_key, request.api_url))
            errors_out = _open_errors(request)
        except (ConfigurationError, UsageProblem) as exc:
            return _error(str(exc), 2)
        if errors_out is not None:
            stack.callback(errors_out.close)
        return _run(request, client, source, settings, progress, RejectSink(errors_out))


def _prepare(request: ImportRequest) -> tuple[Settings, SourceFile]:
    kind = request.kind
    if kind not in BATCH_LIMITS:
        raise UsageProblem(f"--kind must be entities, events or states, not {kind!r}")
    fmt = request.fmt or EXTENSIONS.get(request.file.suffix.lower())
    if fmt is None:
        raise UsageProblem(
            f"cannot tell the format of {request.file} from its name; pass --format ndjson|csv"
        )
    if fmt not in ("ndjson", "csv"):
        raise UsageProblem(f"--format must be ndjson or csv, not {fmt!r}")
    if fmt == "csv" and kind == "events":
        raise UsageProblem("events are imported from NDJSON only (CSV holds entities or states)")
    limit = BATCH_LIMITS[kind]
    size = limit if request.batch_size is None else request.batch_size
    if not 1 <= size <= limit:
        raise UsageProblem(f"--batch-size for {kind} must be between 1 and {limit}, not {size}")
    if not (request.api_key or os.environ.get("ONEHAZEL_API_KEY")):
        raise UsageProblem("no API key: pass --api-key or set ONEHAZEL_API_KEY")
    source = scan(request.file)
    check_header(source, kind=kind, fmt=fmt)
    state = request.state or progress_file.default_path(request.file)
    return Settings(kind=kind, fmt=fmt, batch_size=size, progress_path=state), source


def _destination(request: ImportRequest) -> str:
    url = (request.api_url or os.environ.get("ONEHAZEL_API_URL") or DEFAULT_API_URL).rstrip("/")
    url = url.removesuffix("/operator-data-api")
    key = request.api_key or os.environ.get("ONEHAZEL_API_KEY") or ""
    return progress_file.destination(url, key)


def _starting_progress(request: ImportRequest, source: SourceFile, settings: Settings) -> Progress:
    """Where this run starts: after an earlier run's confirmed lines (``--resume``) or at line 1.

    The progress file is written at once, so an unwritable location stops the import before
    anything is sent."""
    where = _destination(request)
    earlier = None
    if request.resume:
        earlier = progress_file.load(
            settings.progress_path, file_sha256=source.sha256, kind=settings.kind, destination=where
        )
    current = earlier or Progress(file_sha256=source.sha256, kind=settings.kind, destination=where)
    try:
        progress_file.save(settings.progress_path, current)
    except OSError as exc:
        raise ProgressError(
            f"cannot write the progress file {settings.progress_path} ({exc.strerror or exc}); "
            "pass --state PATH to keep it elsewhere"
        ) from None
    return current


def _open_errors(request: ImportRequest) -> IO[bytes] | None:
    if request.errors is None:
        return None
    try:
        # A resumed run adds to the rejects of the runs before it; a fresh run starts the file anew.
        return request.errors.open("ab" if request.resume else "wb")
    except OSError as exc:
        raise UsageProblem(f"cannot write the errors file {request.errors} ({exc.strerror or exc})") from None


def _run(
    request: ImportRequest,
    client: Client,
    source: SourceFile,
    settings: Settings,
    progress: Progress,
    sink: RejectSink,
) -> int:
    started = time.monotonic()
    resumed_after = progress.confirmed_line
    display: NoDisplay | ProgressBar = NoDisplay()
    if not request.as_json:
        failed = progress.counts["failed"] + progress.counts["malformed"]
        label = f"{settings.kind} from {source.path.name}"
        display = ProgressBar(label, total_lines=source.lines, start_line=resumed_after, failed=failed)
    importer = Importer(client, source, settings, progress, sink=sink, display=display)
    stopped: str | None = None
    try:
        with display:
            importer.run()
    except KeyboardInterrupt:
        stopped = "interrupted"
    except InputError as exc:
        return _error(str(exc), 2)
    except (OneHazelError, OSError) as exc:
        stopped = str(exc) or type(exc).__name__
    summary = _summary(request, source, settings, progress, importer, resumed_after, started, stopped)
    _report(request, summary, sink)
    if stopped is not None:
        _error(
            f"import stopped ({stopped}); lines up to {progress.confirmed_line} are confirmed, "
            f"run the same command with --resume to continue"
        )
    return int(summary["exitCode"])


def _summary(
    request: ImportRequest,
    source: SourceFile,
    settings: Settings,
    progress: Progress,
    importer: Importer,
    resumed_after: int,
    started: float,
    stopped: str | None,
) -> dict[str, Any]:
    seconds = time.monotonic() - started
    counts = progress.counts
    problems = counts["failed"] + counts["malformed"]
    return {
        "file": str(source.path),
        "fileSha256": source.sha256,
        "kind": settings.kind,
        "format": settings.fmt,
        "lines": source.lines,
        "resumedAfterLine": resumed_after,
        "confirmedLine": progress.confirmed_line,
        "complete": stopped is None,
        **{name: counts[name] for name in ("succeeded", "duplicates", "failed", "malformed", "warnings")},
        "jobs": importer.jobs_this_run,
        "seconds": round(seconds, 3),
        "itemsPerSecond": round(importer.items_this_run / seconds, 1) if seconds > 0 else 0.0,
        "errorsFile": str(request.errors) if request.errors else None,
        "progressFile": str(settings.progress_path),
        "exitCode": 130 if stopped == "interrupted" else 1 if problems or stopped else 0,
    }


def _report(request: ImportRequest, summary: dict[str, Any], sink: RejectSink) -> None:
    if request.as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(
        f"{summary['kind']} from {summary['file']}: {summary['succeeded']} succeeded, "
        f"{summary['duplicates']} duplicates, {summary['failed']} failed, {summary['malformed']} malformed "
        f"lines ({summary['itemsPerSecond']:,.0f} items/s)"
    )
    if summary["warnings"]:
        typer.echo(f"{summary['warnings']} items were stored with warnings (missing required fields)")
    problems = summary["failed"] + summary["malformed"]
    if problems and request.errors:
        typer.echo(f"rejected lines (line number, externalId, reason) are in {request.errors}")
    elif sink.count:
        _show_rejects(sink)


def _show_rejects(sink: RejectSink) -> None:
    for r in sink.shown:
        who = f" ({r.external_id})" if r.external_id else ""
        where = f" at {r.path}" if r.path else ""
        typer.echo(f"line {r.line}{who}: {r.code}{where}: {r.message}", err=True)
    if sink.count > len(sink.shown):
        typer.echo(
            f"... and {sink.count - len(sink.shown)} more; pass --errors FILE to list them all", err=True
        )


def _error(message: str, code: int = 1) -> int:
    typer.echo(f"error: {message}", err=True)
    return code
