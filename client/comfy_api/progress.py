"""What `--wait` shows while a prompt runs, on stderr.

On a terminal: one rich progress line, a spinner with the queue position while the prompt
waits, then a bar fed by the status answer's progress (fraction, node, step, the API's ETA),
then the archive copy; and a bar per download. Elsewhere (a pipe, a log file): one plain line
per change of state, so logs stay readable.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, ProgressColumn, SpinnerColumn, Task,
                           TaskID, TaskProgressColumn, TextColumn, TransferSpeedColumn)
from rich.text import Text

from .models import Image, TaskStatus


def clock(seconds: float | None) -> str:
    """m:ss (h:mm:ss past an hour)."""
    if seconds is None:
        return ""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def describe(status: TaskStatus) -> tuple[str, str]:
    """(state, detail) of one answer, e.g. ("running", "node 6 · step 4/10 · 0/6 nodes")."""
    if status.status == "pending":
        where = f"#{status.queue_position} in the queue" if status.queue_position else "in the queue"
        return "queued", where
    if status.status == "running":
        progress = status.progress
        if progress is None:
            return "running", ""
        parts = []
        if progress.node:
            parts.append(f"node {progress.node}")
        if progress.step is not None and progress.steps:
            parts.append(f"step {progress.step}/{progress.steps}")
        if progress.nodes_total:
            parts.append(f"{progress.nodes_done}/{progress.nodes_total} nodes")
        return "running", " · ".join(parts)
    if status.copying:
        return "archiving", "copying outputs to S3"
    if status.status == "completed":
        took = f"in {status.execution_time:.1f} s" if status.execution_time is not None else ""
        count = len(status.images)
        return "completed", " · ".join(p for p in (took, f"{count} output{'s' * (count != 1)}") if p)
    if status.status == "error":
        return "failed", status.failure.describe() if status.failure else status.message
    return status.status, status.message


class WaitDisplay:
    """Shows the answers `update` gets; a context manager around the wait."""

    def update(self, status: TaskStatus) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def download_started(self, image: Image, target: Path, size: int | None) -> None:
        pass

    def downloaded(self, count: int) -> None:
        pass

    def __enter__(self) -> "WaitDisplay":
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        pass


class LineDisplay(WaitDisplay):
    """One line per change of state (and of queue position)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last: tuple[str, int | None] | None = None

    def update(self, status: TaskStatus) -> None:
        state, detail = describe(status)
        key = (state, status.queue_position)
        if key == self._last:
            return
        self._last = key
        line = f"{status.prompt_id}: {state}" + (f" ({detail})" if detail and state != "running" else "")
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


class _EtaColumn(ProgressColumn):
    """The API's ETA (from the workflow's recent run times), not rich's own estimate."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta")
        return Text(f"ETA {clock(eta)}" if eta is not None and not task.finished else "", style="progress.remaining")


class _StateSpinner(SpinnerColumn):
    """Spins until the prompt is settled (finished, files copied), then shows a mark: the
    bar is full while the outputs are still being archived, and that is not done yet."""

    def render(self, task: Task) -> Text:
        mark = task.fields.get("mark")
        if mark is not None:
            return Text.from_markup(mark)
        return self.spinner.render(task.get_time())  # type: ignore[return-value]


class BarDisplay(WaitDisplay):
    """A rich progress display: spinner and queue position, then the run's bar."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            _StateSpinner(),
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=32),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}", markup=False),
            _EtaColumn(),
            console=console,
            transient=False,
        )
        # Transient: once a file is saved, its "saved" line says so.
        self.downloads = Progress(
            TextColumn("  [dim]↓"), TextColumn("{task.description}", markup=False), BarColumn(bar_width=20),
            DownloadColumn(), TransferSpeedColumn(),
            console=console, transient=True,
        )
        self.task: TaskID | None = None
        self._download: TaskID | None = None

    def __enter__(self) -> "BarDisplay":
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop(self.progress)
        self._stop(self.downloads)

    def _stop(self, progress: Progress) -> None:
        # Only what runs: rich ends a stop with a new line where it cannot redraw.
        if progress.live.is_started:
            progress.stop()

    def update(self, status: TaskStatus) -> None:
        state, detail = describe(status)
        task = self._task()
        fields: dict[str, object] = {"description": state, "detail": detail, "eta": None, "mark": None}
        progress = status.progress
        if status.status == "running" and progress is not None and progress.fraction is not None:
            fields.update(total=1.0, completed=progress.fraction, eta=progress.eta_seconds)
        elif status.status == "completed":
            fields.update(total=1.0, completed=1.0)
        # pending, and running before the first progress: no total, so the bar pulses; a
        # failure leaves the bar where it was.
        if status.finished and not status.copying:
            fields["mark"] = "[green]✓" if status.status == "completed" else "[red]✗"
        self.progress.update(task, **fields)  # type: ignore[arg-type]
        if fields["mark"] is not None:
            self.progress.stop_task(task)
            if self.console.is_terminal:  # elsewhere the frame is drawn once, at the end
                self.progress.refresh()

    def _task(self) -> TaskID:
        if self.task is None:
            self.task = self.progress.add_task("submitted", total=None, detail="", eta=None, mark=None)
        return self.task

    def download_started(self, image: Image, target: Path, size: int | None) -> None:
        self._stop(self.progress)  # the run's line stays as it ended; downloads go below it
        if not self.console.is_terminal:
            return  # nothing to animate (a recording, a dumb terminal): the "saved" lines suffice
        if self._download is None:
            self.downloads.start()
        else:
            self.downloads.stop_task(self._download)
        self._download = self.downloads.add_task(f"node {image.node_id} {image.filename}", total=size)

    def downloaded(self, count: int) -> None:
        if self._download is not None:
            self.downloads.advance(self._download, count)


def display_for(console: Console, live: bool | None = None) -> WaitDisplay:
    """A bar on a terminal (or when `live` says so), lines otherwise."""
    bar = live if live is not None else console.is_terminal and not console.is_dumb_terminal
    return BarDisplay(console) if bar else LineDisplay(console)
