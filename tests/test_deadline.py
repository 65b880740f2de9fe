"""The one deadline of a command (mnist_hpo/deadline.py): none is infinity, and it crosses to worker processes intact."""

from __future__ import annotations

import math
import time

from mnist_hpo.deadline import DEADLINE_ENV, NEVER, Deadline


def test_no_timeout_is_a_deadline_that_never_passes():
    deadline = Deadline.after(None)
    assert deadline == NEVER and not deadline.bounded and not deadline.passed
    assert deadline.left() == math.inf and deadline.seconds() is None and deadline.lock_timeout() == -1
    assert deadline.environ() == {}


def test_the_deadline_counts_from_the_commands_start_not_from_now():
    started = time.monotonic() - 10  # the command started 10 s ago
    assert Deadline.after(5, start=started).passed
    assert Deadline.after(5, start=started).left() == 0.0
    assert 0 < Deadline.after(60, start=started).left() <= 50


def test_a_worker_process_inherits_what_is_left_not_the_timeout_again():
    parent = Deadline.after(30, start=time.monotonic() - 20)
    child = Deadline.inherited(parent.environ())
    assert abs(child.at - parent.at) < 0.5  # the same instant, through the wall clock
    assert Deadline.after(30).earlier(child) == child  # a child's own --timeout never extends it


def test_a_missing_or_garbled_inherited_deadline_is_none():
    assert Deadline.inherited({}) == NEVER
    assert Deadline.inherited({DEADLINE_ENV: "soon"}) == NEVER
    assert Deadline.inherited({DEADLINE_ENV: "inf"}) == NEVER
