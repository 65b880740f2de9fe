"""Ctrl-C and SIGTERM (how Kubernetes and Slurm stop work), handled one way everywhere.

Inside ``Interrupts().installed()`` both signals raise KeyboardInterrupt once; a second one is
ignored, so cleanup (failing and re-queuing the running trial) finishes. Inside ``deferred()`` a
signal waits until the block ends, so that a state change in the storage is never cut in half;
``raise_pending()`` then raises it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupts:
    """SIGTERM and SIGINT raise KeyboardInterrupt once; inside ``deferred()`` they wait until it ends."""

    def __init__(self) -> None:
        self.fired = False
        self.pending: int | None = None
        self._defer = 0
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.fired:
            return  # the first signal is being handled: a second one must not cut the cleanup short
        if self._defer:
            self.pending = signum
            return
        self.fired = True
        raise KeyboardInterrupt(signal.Signals(signum).name)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupts]:
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            yield self
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handler)
        try:
            yield self
        finally:
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
            self.fired = True
            raise KeyboardInterrupt(signal.Signals(self.pending).name)
