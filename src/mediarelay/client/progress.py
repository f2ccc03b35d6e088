"""Progress on stderr for the command line: a Rich bar on a terminal, plain lines everywhere else.

A live bar is useless in a CI log or a pipe (Rich would print nothing until the end), so without an
interactive terminal each status change, each 10 % step, and the end are printed as one line each.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from mediarelay.client.results import DownloadProgress, TaskResult

STEP = 10  # percent between two plain progress lines


def _eta(elapsed: float, progress: int | None) -> str:
    """Linear estimate from the time running so far; none until there is something to go by."""
    if not progress or progress >= 100 or elapsed < 1:
        return ""
    return f"  eta {elapsed * (100 - progress) / progress:.0f}s"


class TaskBar:
    """Watches one task: `update` is the `progress=` callback of `Client.wait`."""

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self.started = time.monotonic()
        self.running_since: float | None = None
        self.live = console.is_interactive
        self.last_line: tuple[str, int] | None = None
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("{task.fields[status]:<9}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task_id: TaskID | None = None

    def __enter__(self) -> TaskBar:
        if self.live:
            self.progress.start()
            self.task_id = self.progress.add_task(self.label, total=None, status="submitted")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live:
            self.progress.stop()

    def update(self, result: TaskResult) -> None:
        if result.status == "running" and self.running_since is None:
            self.running_since = time.monotonic()
        if self.live and self.task_id is not None:
            known = result.progress is not None or result.done
            completed = 100 if result.ok else (result.progress or 0)
            self.progress.update(
                self.task_id, total=100 if known else None, completed=completed, status=result.status
            )
            return
        self._line(result)

    def _line(self, result: TaskResult) -> None:
        """One plain line per status change, per 10 % step, and at the end."""
        step = (result.progress or 0) // STEP
        key = (result.status, step)
        if key == self.last_line:
            return
        self.last_line = key
        elapsed = time.monotonic() - self.started
        percent = f" {result.progress:3d}%" if result.progress is not None else ""
        since = time.monotonic() - self.running_since if self.running_since is not None else 0.0
        eta = _eta(since, result.progress) if result.status == "running" else ""
        line = f"{self.label}  {result.status:<9}{percent}  elapsed {elapsed:.1f}s{eta}"
        if result.error is not None:
            line += f"  ({result.error.message})"
        self.console.print(Text(line), highlight=False)


class DownloadBar:
    """Shows a download: `update` is the `progress=` callback of `Client.download`."""

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self.live = console.is_interactive
        self.started = time.monotonic()
        self.announced = False
        self.last: DownloadProgress | None = None
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task_id: TaskID | None = None

    def __enter__(self) -> DownloadBar:
        if self.live:
            self.progress.start()
            self.task_id = self.progress.add_task(self.label, total=None)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live:
            self.progress.stop()
        elif exc_type is None and self.last is not None:
            seconds = time.monotonic() - self.started
            size = f"{self.last.received} bytes"
            resumed = f", resumed at {self.last.resumed_from}" if self.last.resumed_from else ""
            self.console.print(Text(f"saved {self.label} ({size}{resumed}) in {seconds:.1f}s"))

    def update(self, p: DownloadProgress) -> None:
        self.last = p
        if self.live and self.task_id is not None:
            self.progress.update(self.task_id, total=p.total, completed=p.received)
        elif not self.announced:
            self.announced = True
            size = f" ({p.total} bytes)" if p.total is not None else ""
            resume = f", resuming at byte {p.resumed_from}" if p.resumed_from else ""
            self.console.print(Text(f"downloading {p.url} -> {self.label}{size}{resume}"))
