"""Stop signals: raised once, held inside deferred() and shielded sections, raised when they end. Real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import weakref

import pytest

from mnist_hpo.signals import Interrupts, enter_shield, leave_shield


def sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)  # the handler runs here, in the main thread


def test_a_signal_in_a_shielded_section_is_raised_as_the_section_ends():
    with Interrupts().installed() as interrupts:
        enter_shield()
        sigterm_self()  # held: no KeyboardInterrupt here
        assert interrupts.pending == signal.SIGTERM and not interrupts.fired
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            leave_shield()
        assert interrupts.fired == "SIGTERM"


def test_a_shield_inside_deferred_leaves_the_signal_to_the_deferred_block():
    with Interrupts().installed() as interrupts:
        with interrupts.deferred():
            enter_shield()
            sigterm_self()
            leave_shield()  # the deferred block still holds it: the engine raises it where it is safe
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            interrupts.raise_pending()


def test_a_second_signal_is_ignored_while_the_first_is_handled():
    with Interrupts().installed() as interrupts:
        with pytest.raises(KeyboardInterrupt):
            sigterm_self()
        sigterm_self()  # cleanup goes on
        assert interrupts.fired == "SIGTERM"


# A process whose stop signal lands while Python runs a weakref callback (SQLAlchemy's are run by the
# garbage collector at any moment). Python cannot raise there: it prints "Exception ignored" and runs on.
SIGNAL_IN_A_FINALIZER = """
import os, signal, sys, time, weakref
from mnist_hpo.signals import Interrupts

class Row:
    pass

def callback(ref):
    os.kill(os.getpid(), signal.{name})
    for _ in range(100_000):  # the handler runs here, inside the callback
        pass

with Interrupts().installed() as interrupts:
    try:
        row = Row()
        ref = weakref.ref(row, callback)
        del row  # the callback runs and swallows the handler's KeyboardInterrupt
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # ordinary work: a lost interrupt would let it run to the end
            time.sleep(0.01)
        print("ran on")
    except KeyboardInterrupt as exc:
        print("stopped by", exc, interrupts.fired)
"""


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_swallowed_by_a_finalizer_still_stops_the_work_and_prints_no_traceback(name):
    code = SIGNAL_IN_A_FINALIZER.replace("{name}", name)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done
    assert done.stdout.strip() == f"stopped by {name} {name}", done
    assert done.stderr == "", done


class Row:
    pass


def test_other_unraisable_errors_still_reach_the_previous_hook():
    seen = []
    previous, sys.unraisablehook = sys.unraisablehook, seen.append
    try:
        with Interrupts().installed():
            row = Row()
            ref = weakref.ref(row, lambda _: 1 / 0)  # noqa: F841 (the callback needs the reference alive)
            del row
    finally:
        sys.unraisablehook = previous
    assert [type(u.exc_value) for u in seen] == [ZeroDivisionError]
