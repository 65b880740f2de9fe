"""Quiet unless asked: the library's functions print nothing in a notebook unless ``progress=True``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mnist_hpo.console import console


@contextmanager
def shown(progress: bool) -> Iterator[None]:
    """Let the shared console speak (bars, epoch and trial lines) only when ``progress`` is asked for."""
    quiet = console.quiet
    console.quiet = quiet or not progress
    try:
        yield
    finally:
        console.quiet = quiet
