"""What the user sees on stderr while an import runs: a rich progress bar, or nothing (``--json``)."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class NoDisplay:
    def __enter__(self) -> NoDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, *, confirmed_line: int, items: int, failed: int) -> None:
        return None


class ProgressBar:
    """Lines confirmed of the file's total, items/s of this run, time left, failures so far."""

    def __init__(self, label: str, *, total_lines: int, start_line: int, failed: int) -> None:
        self.started = time.monotonic()
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("lines"),
            TextColumn("{task.fields[rate]} items/s"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[failed]} failed"),
            console=Console(stderr=True),
        )
        self.task = self.bar.add_task(
            label, total=max(total_lines, 1), completed=start_line, rate="-", failed=failed
        )

    def __enter__(self) -> ProgressBar:
        self.bar.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.stop()

    def update(self, *, confirmed_line: int, items: int, failed: int) -> None:
        elapsed = time.monotonic() - self.started
        rate = f"{items / elapsed:,.0f}" if elapsed > 0 else "-"
        self.bar.update(self.task, completed=confirmed_line, rate=rate, failed=failed)
