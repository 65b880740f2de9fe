"""Terminal output shared by the commands: one console, progress bars, split-labelled numbers."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(highlight=False, soft_wrap=True, markup=False)


def progress() -> Progress:
    """A bar with count, elapsed time and ETA; silent when output is not a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def accuracy(split: str, value: float, count: int | None = None) -> str:
    """Every printed accuracy names its split."""
    images = f" ({count:,} {split} images)" if count is not None else ""
    return f"{split} accuracy {100 * value:.2f}%{images}"
