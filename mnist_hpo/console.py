"""Terminal output shared by the commands: one console, progress bars, split-labelled numbers."""

from __future__ import annotations

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


def progress() -> Progress:
    """A bar with count, elapsed time and ETA; silent when output is not a terminal."""
    return Progress(
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
