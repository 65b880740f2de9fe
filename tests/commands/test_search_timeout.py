"""`--timeout T` bounds the whole command from its start, waiting for the study's lock or its creator included.

Before, T counted from when the trial engine started, so a `search` waiting for the study's lock (held
by another command changing its budget) or a `worker` waiting for a study still being created ran far
past T. Now a command still waiting at its deadline writes nothing and exits 2 with one line that says
what it waited for. The subprocess timeouts here are the failure detectors: a command that waits past
its deadline (as before) never answers in time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from outside import (
    TINY_SPACE,
    Unchanged,
    error_line,
    finish,
    load,
    ok,
    run,
    settings_of,
    sqlite_url,
    start,
    stop_all,
    tree,
    trials_of,
    wait_for,
)

pytestmark = pytest.mark.slow  # real processes: `-m 'not slow'` leaves it out

SEARCH = ["search", "--study", "s", "--profile", "smoke", "--n-trials", "1", "--device", "cpu"]  # adds one trial to the 6 of "s"
WAITS_AT_MOST = 90  # s: a command with --timeout 3 answers in seconds; without the deadline it waits for ever (or 60 s)

#: Holds the study's lock the way mnist-hpo takes it on SQLite: `flock` on the database file (storage/_locks.py).
HOLD_LOCK = """
import fcntl, os, sys, time
descriptor = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(descriptor, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


def test_search_gives_up_on_a_locked_study_at_its_timeout_and_writes_nothing(studies):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(studies / "mnist-hpo.db")], stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = Unchanged(studies)
        done = run(studies, *SEARCH, "--timeout", "3", timeout=WAITS_AT_MOST)
        error_line(
            done,
            "study 's' is locked by another command that is changing its budget",
            "gave up at --timeout and changed nothing: run this command again when that one finishes",
        )
        before.check()
    finally:
        stop_all(holder)
    # the advice holds: once the lock is free, the same command adds its trial to the budget
    again = ok(run(studies, *SEARCH, "--timeout", "1", timeout=WAITS_AT_MOST))
    assert settings_of(load(sqlite_url(studies), "s"))["n_trials"] == 7, again.stdout


BUDGET = 800  # queued at ~200 trials a second: long enough to stop its creator half way
# the tiny space for one epoch, the cheapest real trials; none starts here: the creator's deadline passes while it is
# stopped, and the other commands give up waiting (this test is about waiting)
TINY = ["--profile", "smoke", "--space", str(TINY_SPACE), "--epochs", "1"]
CREATE = ["search", "--study", "i", *TINY, "--n-trials", str(BUDGET), "--device", "cpu"]


def queued(url: str) -> int:
    try:
        return len(trials_of(url, "i"))
    except Exception:  # not created yet
        return 0


def state_of(url: str) -> tuple:
    """Study "i" as Optuna reads it: its attributes and every trial's number, state and attributes."""
    study = load(url, "i")
    return study.user_attrs, [(t.number, t.state, t.params, t.user_attrs, t.system_attrs) for t in study.get_trials(deepcopy=False)]


def files_in(folder) -> dict[str, str]:
    """Every file but the SQLite database (whose -wal and -shm files change when it is merely read)."""
    return {name: digest for name, digest in tree(folder).items() if not name.startswith("mnist-hpo.db")}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_commands_give_up_on_a_study_being_created_at_their_timeout(backend, request, tmp_path):
    url = sqlite_url(tmp_path) if backend == "sqlite" else request.getfixturevalue("pg_url")
    where = ["--storage", url]
    creator = start(tmp_path, *CREATE, *where, "--timeout", "5", log="creator.log")
    try:
        wait_for(lambda: queued(url) >= 50, "the budget being queued", processes=(creator,))
        os.kill(creator.pid, signal.SIGSTOP)  # alive, half way through creating the study, holding its lock
        before, files = state_of(url), files_in(tmp_path)
        worker = run(tmp_path, "worker", "--study", "i", *where, "--timeout", "3", "--device", "cpu", timeout=WAITS_AT_MOST)
        error_line(
            worker,
            f"study 'i' is being created by another command (pid {creator.pid} on ",
            "gave up at --timeout and changed nothing: run this command again when that one finishes",
        )
        search = run(tmp_path, *CREATE, *where, "--timeout", "3", timeout=WAITS_AT_MOST)
        error_line(search, "study 'i' is locked by another command that is changing its budget")
        assert state_of(url) == before and files_in(tmp_path) == files, "nothing written: no trial, no attribute, no file"
        os.kill(creator.pid, signal.SIGCONT)
        # the creator's own deadline passed while it was stopped: it still queues its whole budget, then starts no trial
        assert finish(creator) == 0, (tmp_path / "creator.log").read_text()[-3000:]
    finally:
        stop_all(creator)
    log = (tmp_path / "creator.log").read_text()
    assert "--timeout reached, starting no more trials" in log, log[-3000:]
    assert queued(url) == BUDGET and settings_of(load(url, "i"))["n_trials"] == BUDGET
