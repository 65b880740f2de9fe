"""Ctrl-C and SIGTERM (how Kubernetes and Slurm stop work), handled one way everywhere.

Inside ``Interrupts().installed()`` both signals raise KeyboardInterrupt once; a second one is
ignored, so cleanup (failing and re-queuing the running trial) finishes. Inside ``deferred()`` a
signal waits until the block ends, so that a state change in the storage is never cut in half;
``raise_pending()`` then raises it. ``enter_shield()``/``leave_shield()`` guard library code that must not see a
KeyboardInterrupt at all (Optuna's journal lock, which may then remove another process's lock or
raise a RuntimeError in the interrupt's place): a signal there is raised as the section ends.

A signal may also land while Python runs a finalizer or a weakref callback (SQLAlchemy has many),
where an exception cannot propagate: Python would print it as "Exception ignored" and run on. The
interrupt is then lost, so ``installed()`` catches it there (``sys.unraisablehook``) and delivers
the signal again a moment later, once the main thread is back in ordinary code.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

_installed: list[Interrupts] = []  # the innermost installed handler last
_shields = 0  # how many shielded sections the main thread is in
_redelivery = threading.Lock()  # a redelivered signal is sent only while its handler is still installed
REDELIVER_AFTER_S = 0.05  # long enough for the main thread to leave the finalizer that swallowed the interrupt


class Interrupts:
    """SIGTERM and SIGINT raise KeyboardInterrupt once; inside ``deferred()`` they wait until it ends."""

    def __init__(self) -> None:
        self.fired: str | None = None  # the signal's name once it was raised, even if a library swallowed it
        self.pending: int | None = None
        self._defer = 0
        self._previous: dict[int, Any] = {}
        self._closing = False
        self._previous_hook: Any = sys.unraisablehook

    def _handler(self, signum: int, frame: Any) -> None:
        if self._closing or self.fired:
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
        self._closing, self._previous_hook, sys.unraisablehook = False, sys.unraisablehook, self._unraisable
        try:
            yield self
        finally:
            self._closing = True  # from here on a redelivered signal is ignored, not raised mid-cleanup
            with _redelivery:  # one being sent now has reached the handler once this lock is ours
                sys.unraisablehook = self._previous_hook
                _installed.remove(self)
                for signum, previous in self._previous.items():
                    signal.signal(signum, previous)  # runs a pending handler first, ours, which ignores it

    def _unraisable(self, unraisable: Any) -> None:
        """A finalizer swallowed this handler's KeyboardInterrupt: as if it never fired, the signal comes again."""
        exc = unraisable.exc_value
        if isinstance(exc, KeyboardInterrupt) and self.fired and exc.args == (self.fired,):
            signum, self.fired = signal.Signals[self.fired], None
            threading.Thread(target=self._redeliver, args=(signum,), name="redeliver-signal", daemon=True).start()
            return
        self._previous_hook(unraisable)

    def _redeliver(self, signum: int) -> None:
        time.sleep(REDELIVER_AFTER_S)
        with _redelivery:
            if not self._closing:
                signal.pthread_kill(threading.main_thread().ident, signum)

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
