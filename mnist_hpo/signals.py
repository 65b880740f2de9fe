"""Ctrl-C and SIGTERM (how Kubernetes and Slurm stop work), handled one way everywhere.

Inside ``Interrupts().installed()`` both signals raise KeyboardInterrupt once; a second one is
ignored, so cleanup (failing and re-queuing the running trial) finishes. Inside ``deferred()`` a
signal waits until the block ends, so that a state change in the storage is never cut in half;
``raise_pending()`` then raises it. ``enter_shield()``/``leave_shield()`` guard library code that must not see a
KeyboardInterrupt at all (Optuna's journal lock, which may then remove another process's lock or
raise a RuntimeError in the interrupt's place): a signal there is raised as the section ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_installed: list[Interrupts] = []  # the innermost installed handler last
_shields = 0  # how many shielded sections the main thread is in


class Interrupts:
    """SIGTERM and SIGINT raise KeyboardInterrupt once; inside ``deferred()`` they wait until it ends."""

    def __init__(self) -> None:
        self.fired: str | None = None  # the signal's name once it was raised, even if a library swallowed it
        self.pending: int | None = None
        self._defer = 0
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.fired:
            return  # the first signal is being handled: a second one must not cut the cleanup short
        if self._defer or _shields:
            self.pending = signum
            return
        self._raise(signum)

    def _raise(self, signum: int) -> None:
        self.fired = signal.Signals(signum).name
        raise KeyboardInterrupt(self.fired)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupts]:
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            yield self
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handler)
        _installed.append(self)
        try:
            yield self
        finally:
            _installed.remove(self)
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1

    def raise_pending(self) -> None:
        if self.pending is not None and not self.fired:
            self._raise(self.pending)


def enter_shield() -> None:
    """Start a section in which a stop signal must not raise (a lock's acquire; ``leave_shield`` at its release)."""
    global _shields
    if threading.current_thread() is threading.main_thread():  # handlers run there; other threads never see them
        _shields += 1


def leave_shield() -> None:
    """End the section; a stop signal that came during it is raised now, unless a ``deferred()`` block still holds it."""
    global _shields
    if threading.current_thread() is not threading.main_thread():
        return
    _shields -= 1
    if _shields == 0 and _installed and not _installed[-1]._defer:
        _installed[-1].raise_pending()
