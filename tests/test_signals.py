"""Stop signals: raised once, held inside deferred() and shielded sections, raised when they end. Real signals."""

from __future__ import annotations

import os
import signal
import time

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
