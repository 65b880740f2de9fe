"""The trial engine and storage faults, in this process on a real SQLite study.

A storage fault during a trial stops the worker with one line after one try to fail and re-queue
the trial; a trial whose recorded process is gone from this machine is re-queued at once by the
next worker, without waiting for its grace period (an hour here). The disk filling for real, through
the CLI, is tests/commands/test_storage_faults.py.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from mnist_hpo import storage
from mnist_hpo.errors import UserError
from mnist_hpo.tuning import (
    Faults,
    SearchRequest,
    Worker,
    WorkerSpec,
    budget_view,
    ensure_budget_study,
    get_profile,
    new_settings,
    quiet_optuna,
)

HOUR_GRACE = Faults(1, 3600, 3).validated()


def budget_study(tmp_path, budget: int) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    quiet_optuna()
    settings = new_settings(SearchRequest(profile="smoke"), get_profile("smoke", False))
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=3600)
    study, _, _ = ensure_budget_study(rdb, "s", settings, budget=lambda stored, view: budget)
    return study, rdb


def exact(rdb: optuna.storages.BaseStorage, budget: int) -> bool:
    view = budget_view(rdb, rdb.get_study_id_from_name("s"), budget)
    return view.finished + view.in_flight == budget


def gone_pid() -> int:
    """The pid of a process of this machine that has ended (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_a_storage_fault_during_a_trial_gives_the_trial_back_before_the_one_line(tmp_path):
    """The fault's second write succeeds here (space was freed meanwhile): the trial is re-queued as a retry."""
    study, rdb = budget_study(tmp_path, 3)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            raise sqlite3.OperationalError("database or disk is full")
        return x

    with pytest.raises(UserError) as raised:
        Worker(study, rdb, objective, WorkerSpec(HOUR_GRACE)).run()
    line = str(raised.value)
    assert line.startswith("the disk under the study database is full") and "trial 1 re-queued (retry 1 of 3)" in line, line
    trials = {t.number: t for t in study.get_trials()}
    assert trials[1].state == TrialState.FAIL and "the disk under the study database is full" in trials[1].user_attrs["fail_reason"]
    retry = next(t for t in trials.values() if t.user_attrs.get("retry_of") == 1)
    assert retry.state == TrialState.WAITING and retry.params == trials[1].params
    assert TrialState.RUNNING not in [t.state for t in trials.values()] and exact(rdb, 3)


def test_a_trial_whose_process_is_gone_from_this_machine_is_requeued_at_once(tmp_path):
    study, rdb = budget_study(tmp_path, 2)
    study_id = rdb.get_study_id_from_name("s")
    owner = {"host": socket.gethostname(), "pid": gone_pid()}
    orphan_id, orphan = storage.take_waiting_trial(rdb, study_id, "retry_history", ("mnist_hpo:owner", owner))
    elsewhere_id, _ = storage.take_waiting_trial(rdb, study_id, "retry_history", ("mnist_hpo:owner", {**owner, "host": "elsewhere"}))
    worker = Worker(study, rdb, lambda trial: trial.suggest_float("x", 0, 1), WorkerSpec(HOUR_GRACE))
    worker.heartbeats.fail_dead_trials()
    assert rdb.get_trial(orphan_id).state == TrialState.FAIL
    assert rdb.get_trial(elsewhere_id).state == TrialState.RUNNING, "another machine's process: only its heartbeat can tell"
    assert f"(pid {owner['pid']} on {owner['host']}) ended without finishing it" in rdb.get_trial(orphan_id).user_attrs["fail_reason"]
    retry = next(t for t in study.get_trials() if t.user_attrs.get("retry_of") == orphan)
    assert retry.state == TrialState.WAITING and exact(rdb, 2)
