"""Ctrl-C while a budget is raised or a warm start is copied: one line, exit 130, and the command it names finishes the job.

The recorded budget is the truth and the queue follows it. A raise is written before its trials
are queued, so `search --n-trials N` interrupted on an existing study has already added its N: its
line names `mnist-hpo search --study S`, which queues the rest without adding N again. `study
create --n-trials N` sets the budget, so the same command again finishes it; a `worker` queues what
a recorded budget lacks, and nothing beyond it. A warm start cut short is finished by the same
command: each trial of the source copied exactly once, none counted in the budget.
(The creation of a study cut short: test_interrupted_creation.py.)
"""

from __future__ import annotations

import shlex
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from outside import CLI, TINY_SPACE, assert_exact_budget, cli_env, load, ok, run, settings_of, sqlite_url, trials_of, wait_for

pytestmark = pytest.mark.slow  # real processes: `-m 'not slow'` leaves it out

RAISE = 800  # queued at ~200 trials a second: long enough to interrupt half way
# the tiny space for one epoch: each trial that runs trains about a second (these tests are about the queue)
SMOKE = ["--profile", "smoke", "--space", str(TINY_SPACE), "--epochs", "1"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
COPIES = 400  # added to the warm start's source: ~25 commits a second on a plain disk, many more on tmpfs


def count(database: Path, study: str) -> int:
    """Trials of `study`, read with sqlite3 while another process writes them (0 before it exists)."""
    try:
        with sqlite3.connect(database, timeout=5) as db:
            query = "SELECT count(*) FROM trials JOIN studies USING (study_id) WHERE study_name = ?"
            return db.execute(query, (study,)).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def interrupted(cwd: Path, args: list[str], study: str, at: int) -> str:
    """Run `mnist-hpo ARGS`, send SIGINT once `study` has `at` trials; returns its last stderr line after checking exit 130."""
    process = subprocess.Popen(
        [*CLI, *args], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: count(cwd / "mnist-hpo.db", study) >= at, f"trials of {study!r} being queued", every=0.1, processes=(process,))
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, (out, err)
    assert "Traceback" not in out + err, (out, err)
    return err.strip().splitlines()[-1]


def states(trials: list[optuna.trial.FrozenTrial]) -> Counter:
    return Counter(t.state for t in trials if "copied_from" not in t.user_attrs)


def intact(cwd: Path) -> None:
    with sqlite3.connect(cwd / "mnist-hpo.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_an_interrupted_search_raise_names_the_command_that_queues_the_rest(tmp_path):
    ok(run(tmp_path, "search", "--study", "e", "--n-trials", "2", *SMOKE, "--device", "cpu"))
    budget = 2 + RAISE
    line = interrupted(tmp_path, ["search", "--study", "e", "--n-trials", str(RAISE), *SMOKE, "--device", "cpu"], "e", at=2 + 50)
    assert line == (
        f"interrupted while queueing the budget of study 'e', already raised to {budget} trials; `mnist-hpo search --study e` "
        "queues the rest and continues (the same command again would raise it further)"
    ), line
    assert 2 < count(tmp_path / "mnist-hpo.db", "e") < budget, "interrupted half way"
    assert settings_of(load(sqlite_url(tmp_path), "e"))["n_trials"] == budget, "the raise was recorded before its trials were queued"

    named = shlex.split(line.split("`")[1])
    assert named[0] == "mnist-hpo"
    ok(run(tmp_path, *named[1:], "--timeout", "1"))  # queue the rest, then start trials for a second at most
    trials = trials_of(sqlite_url(tmp_path), "e")
    got = states(trials)
    assert len(trials) == budget and got[TrialState.COMPLETE] + got[TrialState.PRUNED] + got[TrialState.WAITING] == budget, got
    assert got[TrialState.COMPLETE] + got[TrialState.PRUNED] >= 2 and not got[TrialState.RUNNING] and not got[TrialState.FAIL], got
    assert sum(bool(t.user_attrs.get("published_baseline")) for t in trials) == 1
    assert settings_of(load(sqlite_url(tmp_path), "e"))["n_trials"] == budget, "raised once, not twice"
    intact(tmp_path)


def test_ctrl_c_just_after_a_raise_was_queued_names_the_command_that_continues_without_raising_again(tmp_path):
    """SIGINT as soon as `search --n-trials 3` has queued its raise, wherever that lands.

    The last trial's commit and the end of the queueing are not one instant: the signal may still find the
    command queueing ("already raised to 5 trials"), or past it, before or in the worker ("continue with").
    Every one of those lines names the same command, which must not raise the budget again.
    """
    ok(run(tmp_path, "study", "create", "--study", "a", *SMOKE, "--n-trials", "2"))
    line = interrupted(tmp_path, ["search", "--study", "a", "--n-trials", "3", *SMOKE, "--device", "cpu"], "a", at=5)
    assert "continue with `mnist-hpo search --study a`" in line or "already raised to 5 trials; `mnist-hpo search --study a`" in line, line
    named = shlex.split(line.split("`")[1])
    assert named == ["mnist-hpo", "search", "--study", "a"], line
    ok(run(tmp_path, *named[1:]))
    assert_exact_budget(trials_of(sqlite_url(tmp_path), "a"), 5)  # raised once, not twice
    intact(tmp_path)


def test_an_interrupted_study_create_raise_is_finished_by_a_worker_or_the_same_command(tmp_path):
    create = ["study", "create", "--study", "c", *SMOKE]
    ok(run(tmp_path, *create, "--n-trials", "2"))
    budget = 2 + RAISE
    line = interrupted(tmp_path, [*create, "--n-trials", str(budget)], "c", at=2 + 50)
    assert line == "interrupted while queueing the budget of study 'c'; run the same command again to finish it", line
    assert 2 < count(tmp_path / "mnist-hpo.db", "c") < budget, "interrupted half way"

    worker = ok(run(tmp_path, "worker", "--study", "c", "--device", "cpu", "--timeout", "1"))  # any command that opens it tops it up
    assert "that the budget of study 'c' lacked" in worker.stdout, worker.stdout
    got = states(trials_of(sqlite_url(tmp_path), "c"))
    assert sum(got.values()) == budget and not got[TrialState.RUNNING] and not got[TrialState.FAIL], got

    again = ok(run(tmp_path, *create, "--n-trials", str(budget)))  # the line's command: the budget is set, nothing is added
    assert "queued" not in again.stdout, again.stdout
    trials = trials_of(sqlite_url(tmp_path), "c")
    assert states(trials) == got and len(trials) == budget
    assert settings_of(load(sqlite_url(tmp_path), "c"))["n_trials"] == budget
    intact(tmp_path)


def test_an_interrupted_warm_start_copies_each_source_trial_exactly_once(tmp_path):
    fast = [*SMOKE, "--sampler", "random", "--device", "cpu"]
    ok(run(tmp_path, "search", "--study", "src", "--n-trials", "2", *fast))
    source = load(sqlite_url(tmp_path), "src")
    model = next(t for t in source.get_trials() if t.state in FINISHED and not t.user_attrs.get("published_baseline"))
    extra = optuna.trial.create_trial(state=TrialState.PRUNED, params=model.params, distributions=model.distributions)
    source.add_trials([extra] * COPIES)  # finished trials of its own: copying them takes seconds (each is a commit)
    own = sorted(t.number for t in source.get_trials() if t.state in FINISHED)
    expected = Counter(t.state.name for t in source.get_trials() if t.state in FINISHED)

    warm = ["search", "--study", "w", "--warm-start", "src", "--n-trials", "3", *fast]
    line = interrupted(tmp_path, warm, "w", at=3 + 20)
    assert line == "interrupted while queueing the budget of study 'w'; run the same command again to finish it", line
    assert 3 < count(tmp_path / "mnist-hpo.db", "w") < 3 + len(own), "interrupted while copying"

    again = ok(run(tmp_path, *warm))
    assert "finished creating study 'w'" in again.stdout, again.stdout
    study = load(sqlite_url(tmp_path), "w")
    trials = study.get_trials()
    copies = [t.user_attrs["copied_from"] for t in trials if "copied_from" in t.user_attrs]
    assert {c["study"] for c in copies} == {"src"}
    assert sorted(c["trial"] for c in copies) == own, "each finished trial of the source copied exactly once"
    assert study.user_attrs["warm_start"] == {"study": "src", "copied": {"COMPLETE": expected["COMPLETE"], "PRUNED": expected["PRUNED"]}}
    assert settings_of(study)["n_trials"] == 3, "copies leave the budget alone"
    assert_exact_budget([t for t in trials if "copied_from" not in t.user_attrs], 3)
    intact(tmp_path)
