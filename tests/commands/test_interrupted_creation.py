"""Ctrl-C while `search` queues a new study's budget: one line, exit 130, and the same command finishes the job.

Before, the half-made study (trials queued, no settings yet) was refused by every later `search`
as "not created by mnist-hpo". Now the creator records who it is, so a later command on the same
machine sees at once that it died and completes the creation to the budget asked for.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess

import pytest
from optuna.trial import TrialState
from outside import CLI, TINY_SPACE, cli_env, ok, run, sqlite_url, trials_of, wait_for

pytestmark = pytest.mark.slow  # real processes: `-m 'not slow'` leaves it out

BUDGET = 800  # queued at ~200 trials a second: long enough to interrupt half way
# the tiny space for one epoch: any trial the second run starts before its --timeout trains about a second (this test is
# about the queue)
TINY = ["--profile", "smoke", "--space", str(TINY_SPACE), "--epochs", "1"]
SEARCH = ["search", "--study", "i", *TINY, "--n-trials", str(BUDGET), "--device", "cpu"]


def queued(database) -> int:
    try:
        with sqlite3.connect(database, timeout=5) as db:
            return db.execute("SELECT count(*) FROM trials").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_an_interrupted_creation_is_finished_by_the_same_command(tmp_path):
    first = subprocess.Popen(
        [*CLI, *SEARCH], cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: queued(tmp_path / "mnist-hpo.db") >= 50, "the budget being queued", processes=(first,))
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, (out, err)
    assert err.strip().splitlines()[-1] == (
        "interrupted while queueing the budget of study 'i'; run the same command again to finish it"
    ), err
    assert 0 < queued(tmp_path / "mnist-hpo.db") < BUDGET, "interrupted half way"

    again = ok(run(tmp_path, *SEARCH, "--timeout", "1"))  # finish creating, then run trials for a second
    assert "finished creating study 'i'" in again.stdout, again.stdout
    trials = trials_of(sqlite_url(tmp_path), "i")
    assert len(trials) == BUDGET and sum(bool(t.user_attrs.get("published_baseline")) for t in trials) == 1
    assert all(t.state in (TrialState.WAITING, TrialState.COMPLETE, TrialState.PRUNED) for t in trials), "none left RUNNING"
