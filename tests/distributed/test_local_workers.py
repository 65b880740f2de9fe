"""Workers on one machine without a database server: a journal file, SQLite's limit, signals, failures.

The journal test runs real `mnist-hpo search --workers 3` processes and stops them with a real
SIGTERM; the failure-handling tests drive the worker loop in this process with small objectives of
their own (the CUDA out-of-memory error is raised as torch raises it: no GPU is needed to check that
the trial is failed with its reason and the worker carries on).
"""

from __future__ import annotations

import os
import signal
import time

import optuna
import pytest
import torch
from dist_helpers import FAST, TINY, assert_exact_budget, cli, finish, ok, running_trial_past_epoch, start, trials_of, wait_for
from optuna.trial import TrialState

from mnist_hpo import storage
from mnist_hpo.errors import UserError
from mnist_hpo.signals import Interrupts
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

pytestmark = pytest.mark.slow  # real studies or several processes: `-m 'not slow'` leaves it out


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    from mnist_hpo.cli import main

    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def test_three_workers_on_a_journal_file_stop_on_sigterm_and_resume_to_the_exact_budget(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    first = start(
        tmp_path,
        "search",
        "--workers",
        "3",
        "--study",
        "j",
        "--storage",
        url,
        *TINY,
        "--n-trials",
        "4",
        "--epochs",
        "5",
        "--pruner",
        "none",
        "--seed",
        "0",
        *FAST,
        log="first.log",
    )
    try:
        victim = wait_for(lambda: running_trial_past_epoch(url, "j"), "a trial past its first epoch", processes=[first])
        first.send_signal(signal.SIGTERM)  # how Kubernetes and Slurm stop a job
        code = finish(first, timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    log = (tmp_path / "first.log").read_text()
    assert code == 130, log
    assert "interrupted: running trials were marked FAIL and re-queued" in log and "Traceback" not in log, log
    worker_logs = "".join(p.read_text() for p in (tmp_path / "mnist-hpo-artifacts" / "worker-logs").glob("*.log"))
    assert "Traceback" not in worker_logs, worker_logs

    trials = trials_of(url, "j")
    assert TrialState.RUNNING not in [t.state for t in trials]
    stopped = next(t for t in trials if t.number == victim.number)
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["fail_reason"].startswith("interrupted by SIGTERM")
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim.number)
    assert retry.state == TrialState.WAITING and retry.params == stopped.params

    done = ok(cli(tmp_path, "worker", "--study", "j", "--storage", url, *FAST))  # any worker picks the re-queued trials up
    trials = trials_of(url, "j")
    assert_exact_budget(trials, 4)
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from"]["epoch"] >= 1, retry.user_attrs
    assert "budget 4 trials: 4 finished" in done.stdout


def test_sqlite_is_refused_for_several_workers_with_advice(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(capsys, "search", "--workers", "2", "--profile", "smoke", "--storage", "sqlite:///shared.db")
    assert code == 2, err
    assert "cannot share the SQLite file shared.db" in err and "--storage journal:shared.log" in err and "postgresql+psycopg://" in err
    assert not (tmp_path / "shared.db").exists(), "nothing is written before refusing"


def test_gpu_flags_say_plainly_that_there_is_no_gpu(tmp_path):
    """On a machine without a GPU (here: every GPU hidden from the process)."""
    for flags in (["--gpus", "0,1"], ["--trials-per-gpu", "2"]):
        done = cli(tmp_path, "search", "--profile", "smoke", "--storage", "journal:j.log", *flags, CUDA_VISIBLE_DEVICES="")
        assert done.returncode == 2, done.stderr
        assert "need a CUDA GPU and none is visible here" in done.stderr and "--workers K" in done.stderr, done.stderr
    assert not (tmp_path / "j.log").exists()


def budget_study(tmp_path, budget: int) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    quiet_optuna()
    settings = new_settings(SearchRequest(profile="smoke"), get_profile("smoke", False))
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=4)
    study, _, _ = ensure_budget_study(rdb, "s", settings, budget=lambda stored, view: budget)
    return study, rdb


def test_cuda_out_of_memory_fails_the_trial_with_its_reason_and_the_worker_carries_on(tmp_path):
    study, rdb = budget_study(tmp_path, 4)
    ran = []

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        if trial.number == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.19 GiB total capacity)")
        return trial.suggest_float("x", 0, 1)

    report = Worker(study, rdb, objective, WorkerSpec(Faults(1, 4, 3).validated())).run()
    trials = study.get_trials()
    assert_exact_budget(trials, 4)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [1]
    assert failed[0].user_attrs["fail_reason"].startswith("CUDA out of memory. Tried to allocate 20.00 GiB")
    assert any(t.user_attrs.get("replaces") == 1 and t.state == TrialState.COMPLETE for t in trials), "a fresh trial took its place"
    assert report.ran == 5 and report.failed == 1 and ran[-1] > 1


def test_a_trial_interrupted_in_process_is_failed_and_re_queued_with_its_parameters(tmp_path):
    study, rdb = budget_study(tmp_path, 3)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            raise KeyboardInterrupt("SIGTERM")
        return x

    with pytest.raises(KeyboardInterrupt):
        Worker(study, rdb, objective, WorkerSpec(Faults(1, 4, 3).validated())).run()
    trials = {t.number: t for t in study.get_trials()}
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs["fail_reason"].startswith("interrupted by SIGTERM")
    retry = next(t for t in trials.values() if t.user_attrs.get("retry_of") == 1)
    assert retry.state == TrialState.WAITING and retry.params == trials[1].params
    assert retry.system_attrs["retry_history"] == [1] and retry.system_attrs["failed_trial"] == 1
    assert TrialState.RUNNING not in [t.state for t in trials.values()]


def test_a_signal_that_a_library_turned_into_another_error_still_stops_the_worker(tmp_path):
    """Optuna's journal lock, interrupted inside its acquire, can raise "RuntimeError: did not possess lock" instead."""
    study, rdb = budget_study(tmp_path, 3)
    interrupts = Interrupts()

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            try:
                os.kill(os.getpid(), signal.SIGTERM)  # a real signal, through the installed handler
                time.sleep(5)
            except KeyboardInterrupt:
                raise RuntimeError("Error: did not possess lock") from None
        return x

    with interrupts.installed(), pytest.raises(KeyboardInterrupt):
        Worker(study, rdb, objective, WorkerSpec(Faults(1, 4, 3).validated()), interrupts=interrupts).run()
    trials = {t.number: t for t in study.get_trials()}
    assert trials[1].state == TrialState.FAIL, "the worker took no trial after the signal"
    assert trials[1].user_attrs["fail_reason"].startswith("interrupted by SIGTERM (RuntimeError: Error: did not possess lock)")
    retry = next(t for t in trials.values() if t.user_attrs.get("retry_of") == 1)
    assert retry.state == TrialState.WAITING and retry.params == trials[1].params
    assert [t.state for t in trials.values()].count(TrialState.COMPLETE) == 1


def test_a_worker_whose_trials_keep_failing_stops_and_leaves_the_budget_whole(tmp_path):
    study, rdb = budget_study(tmp_path, 5)

    def objective(trial: optuna.Trial) -> float:
        raise ValueError("broken objective")

    with pytest.raises(UserError, match="its last 3 trials failed .ValueError: broken objective"):
        Worker(study, rdb, objective, WorkerSpec(Faults(1, 4, 3).validated())).run()
    view = budget_view(rdb, rdb.get_study_id_from_name("s"), 5)
    assert view.finished + view.in_flight == 5, view.describe()  # each failure was replaced by a waiting trial
    assert view.counts[TrialState.FAIL] == 3


def test_heartbeat_settings_are_checked():
    with pytest.raises(UserError, match="must be longer than --heartbeat-interval"):
        Faults(10, 5, 3).validated()
    assert Faults(10, None, 3).validated().grace_period == 60
