"""The one deadline of a command: `--timeout T` bounds the whole command, counted from its start.

A command takes its deadline once, when it starts, and hands the same value down to every place
that waits (the study's lock, a study another command is creating, the trial engine, the worker
processes it starts), so time spent in one step is never granted again to the next. No deadline
(no --timeout) is a deadline at infinity, so callers never branch on None.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

#: The deadline a parent command hands to the `mnist-hpo worker` processes it starts, in wall-clock
#: seconds (``time.time()``): monotonic clocks are per process, and a child's own start-up must count too.
DEADLINE_ENV = "MNIST_HPO_DEADLINE"


@dataclass(frozen=True)
class Deadline:
    """A point on ``time.monotonic()``'s clock after which a command waits for nothing and starts no trial."""

    at: float = math.inf

    @classmethod
    def after(cls, seconds: float | None, start: float | None = None) -> Deadline:
        """``seconds`` from ``start`` (a ``time.monotonic()`` reading; default now); None: no deadline."""
        if seconds is None:
            return cls()
        return cls((time.monotonic() if start is None else start) + seconds)

    @classmethod
    def inherited(cls, environ: Mapping[str, str] = os.environ) -> Deadline:
        """The deadline a parent command passed in ``$MNIST_HPO_DEADLINE``; none if it passed none (or garbage)."""
        try:
            wall = float(environ[DEADLINE_ENV])
        except (KeyError, ValueError):
            return cls()
        return cls(time.monotonic() + (wall - time.time())) if math.isfinite(wall) else cls()

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.at)

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def left(self) -> float:
        """Seconds until the deadline, never negative; ``math.inf`` without one."""
        return max(0.0, self.at - time.monotonic())

    def seconds(self) -> float | None:
        """``left()`` for APIs that take None for "no limit" (a worker's --timeout, a progress bar's ETA)."""
        return self.left() if self.bounded else None

    def lock_timeout(self) -> float:
        """``threading.Lock.acquire``'s timeout: -1 waits for ever, which ``math.inf`` would not."""
        return self.left() if self.bounded else -1

    def earlier(self, other: Deadline) -> Deadline:
        return self if self.at <= other.at else other

    def environ(self) -> dict[str, str]:
        """What a child process's environment needs to inherit this deadline (nothing without one)."""
        return {DEADLINE_ENV: repr(time.time() + (self.at - time.monotonic()))} if self.bounded else {}


NEVER = Deadline()
