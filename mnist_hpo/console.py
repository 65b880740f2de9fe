"""Terminal output shared by the commands: one console, progress bars, split-labelled numbers."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

console = Console(highlight=False, soft_wrap=True, markup=False)


class TimeLeftColumn(TimeRemainingColumn):
    """Rich's ETA from the rate of finished trials, capped by the task's ``timeout`` field if it has one.

    A search with a time budget (the quick study: up to 40 trials or 10 minutes) ends that many
    seconds after its task started, long before the rate of its first trials says.
    """

    def render(self, task: Task) -> Text:
        timeout = task.fields.get("timeout")
        if not timeout or task.finished or task.start_time is None:
            return super().render(task)
        left = max(0.0, task.start_time + timeout - task.get_time())
        if task.time_remaining is not None:
            left = min(left, task.time_remaining)
        minutes, seconds = divmod(int(left), 60)
        return Text(f"{minutes // 60:d}:{minutes % 60:02d}:{seconds:02d}", style="progress.remaining")


#: Seconds between progress lines when the output is a file or a pipe (a log shows progress, not a bar).
PROGRESS_SECONDS_ENV = "MNIST_HPO_PROGRESS_SECONDS"
_LOG_EVERY = 30.0


class LoggedProgress(Progress):
    """Rich's bar in a terminal; elsewhere (a log file, a pipe) a plain line per task every 30 s, with ETA.

    A bar is drawn only on a terminal, so a search or a training written to a log would otherwise
    show nothing for minutes. ``$MNIST_HPO_PROGRESS_SECONDS`` sets the interval (0: every update);
    a task's ``unit`` field names what it counts.
    """

    def __init__(self, *columns, **kwargs) -> None:
        super().__init__(*columns, **kwargs)
        self._logged: dict[int, float] = {}
        try:
            self._every = float(os.environ.get(PROGRESS_SECONDS_ENV, _LOG_EVERY))
        except ValueError:
            self._every = _LOG_EVERY

    def update(self, task_id, **fields) -> None:  # type: ignore[override]
        super().update(task_id, **fields)
        if not self.console.is_terminal:
            self._log(task_id)

    def _log(self, task_id) -> None:
        task = next((t for t in self.tasks if t.id == task_id), None)
        if task is None or task.total is None or task.completed >= task.total:
            return
        now = self.get_time()
        last = self._logged.get(task_id, task.start_time)
        if last is not None and now - last < self._every:
            return
        self._logged[task_id] = now
        left = task.time_remaining
        eta = f", ETA {int(left) // 60}:{int(left) % 60:02d}" if left is not None else ""
        unit = task.fields.get("unit", "")
        self.console.print(
            f"{task.description} · {task.completed:g}/{task.total:g} {unit} ({task.percentage:.0f} %){eta}".replace("  ", " ")
        )


def progress() -> Progress:
    """A bar with count, elapsed time and ETA on a terminal; plain lines every 30 s in a log."""
    return LoggedProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeLeftColumn(),
        console=console,
        transient=True,
    )


def accuracy(split: str, value: float, count: int | None = None) -> str:
    """Every printed accuracy names its split."""
    images = f" ({count:,} {split} images)" if count is not None else ""
    return f"{split} accuracy {100 * value:.2f}%{images}"


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``: counts read as English."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
