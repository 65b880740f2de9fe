"""Stop rules: the rules on hand-made trials, Optuna's Terminator on real studies, the engine stopping every worker,
and the CLI (a study that stops, says why in status, note and report, and continues when run again without the rule)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from mnist_hpo import storage
from mnist_hpo.search import Faults, SearchRequest, Worker, ensure_budget_study, get_profile, new_settings
from mnist_hpo.search.stopping import StopRules, stop_after_reason, target_reason, terminator_reason, validation_noise

CLI = [sys.executable, "-m", "mnist_hpo"]
TINY = ["--profile", "smoke", "--space", str(Path(__file__).parents[1] / "distributed" / "tiny_space.toml")]


def finished(*values: float | None) -> list[optuna.trial.FrozenTrial]:
    """Trials in the order they finished: a number is a completed trial's validation accuracy, None a pruned trial."""
    trials = []
    for number, value in enumerate(values):
        trial = create_trial(state=TrialState.PRUNED) if value is None else create_trial(value=value)
        trial.number = number
        trials.append(trial)
    return trials


def test_stop_after_counts_finished_trials_since_the_best():
    assert stop_after_reason(finished(0.5, 0.7, 0.6), 3) is None  # the window holds the best's own improvement
    reason = stop_after_reason(finished(0.5, 0.7, 0.6, None, 0.7), 3)
    assert reason and "no better best validation accuracy in the last 3 finished trials" in reason and "trial 1's 70.00%" in reason
    assert stop_after_reason(finished(0.5, 0.7, 0.6, None, 0.71), 3) is None  # a better one at the end
    assert stop_after_reason(finished(None, None), 2) is not None  # nothing completed in two: no progress either
    assert stop_after_reason(finished(0.5, 0.7, 0.6, None, 0.7), 3, since=3) is None  # rules given after 3 trials: 2 counted so far


def test_target_stops_on_a_completed_trial_at_or_above_it():
    assert target_reason(finished(0.5, None, 0.98), 0.99) is None
    assert "trial 3 reached 99.00% validation accuracy" in target_reason(finished(0.5, None, 0.98, 0.99), 0.99)


def test_validation_noise_is_the_binomial_standard_error():
    assert validation_noise(0.98, 5000) == pytest.approx(math.sqrt(0.98 * 0.02 / 5000))
    assert validation_noise(1.0, 1000) == 0.0


def _study(values) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for x, value in values:
        study.add_trial(create_trial(value=value, params={"x": x}, distributions={"x": FloatDistribution(0, 1)}))
    return study


def test_the_terminator_stops_a_flat_study_against_its_noise_and_not_a_steep_one():
    xs = [i / 24 for i in range(25)]
    flat = _study([(x, 0.980 + 0.0005 * math.sin(7 * x)) for x in xs])  # every trial within 0.1 pp: nothing left to gain
    reason = terminator_reason(flat, images=1000)
    assert reason and "regret bound" in reason and "binomial standard error" in reason and "1,000 validation images" in reason
    steep = _study([(x, 0.5 + 0.4 * x) for x in xs])  # still climbing, and the noise of a billion images is tiny
    assert terminator_reason(steep, images=10**9) is None
    assert terminator_reason(_study([(x, 0.98) for x in xs[:19]]), images=1000) is None  # fewer than 20 completed trials


def test_every_worker_stops_taking_trials_once_one_records_the_stop(tmp_path: Path):
    """The real engine on a real SQLite study; the objective returns fixed accuracies so the stop is exact."""
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 'stop.db'}", heartbeat_interval=1, grace_period=4)
    settings = new_settings(SearchRequest(profile="smoke", stop_after=2), get_profile("smoke", False))
    study, settings, _ = ensure_budget_study(rdb, "s", settings, budget=lambda stored, view: 8)
    accuracies = {0: 0.5, 1: 0.7, 2: 0.6, 3: 0.65, 4: 0.9}
    faults = Faults(1, 4, 3).validated()

    def worker() -> Worker:
        return Worker(study, rdb, lambda trial: accuracies[trial.number], faults, label="w", stop_rule=StopRules(settings, 1000))

    first = worker().run()
    assert first.ran == 4 and first.stopped.startswith("--stop-after 2: no better best validation accuracy in the last 2")
    assert study.user_attrs["stopped"] == first.stopped
    assert first.view.counts[TrialState.WAITING] == 4  # the rest of the budget stays queued
    second = worker().run()  # a worker joining later takes nothing
    assert second.ran == 0 and second.stopped == first.stopped


def env() -> dict[str, str]:
    cleaned = {k: v for k, v in os.environ.items() if k != "MNIST_HPO_STORAGE"}
    return {**cleaned, "OMP_NUM_THREADS": "1", "COLUMNS": "250"}


def cli(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([*CLI, *args], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_a_study_stops_at_its_target_says_why_and_continues_without_the_rule(tmp_path: Path):
    from optuna_dashboard import get_note

    from mnist_hpo.dashboards.report import render_report

    url = f"sqlite:///{tmp_path / 'study.db'}"
    base = ["--study", "t", "--storage", url, "--seed", "0", "--device", "cpu"]
    first = cli(tmp_path, "search", *TINY, *base, "--n-trials", "5", "--target", "0.3")
    assert "stopped early: --target 0.3: trial 0 reached" in first.stdout
    rdb = storage.open_storage(url)
    study = optuna.load_study(study_name="t", storage=rdb)
    reason = study.user_attrs["stopped"]
    assert reason.startswith("--target 0.3: trial 0 reached")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] + [TrialState.WAITING] * 4
    assert f"stopped early: {reason}" in cli(tmp_path, "status", "--study", "t", "--storage", url).stdout
    assert f"- stopped early: {reason}" in get_note(study)
    assert f"<td>stopped early</td><td>{reason}</td>" in render_report(study, rdb)

    again = cli(tmp_path, "search", *base, "--n-trials", "1")  # no rule: the study runs on, one more trial in its budget
    assert "lifted the earlier stop" in again.stdout and "stop rules: none" in again.stdout
    study = optuna.load_study(study_name="t", storage=url)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 6
    assert not study.user_attrs["stopped"] and study.user_attrs["stops_lifted"] == [reason]
    assert "target" not in study.user_attrs["mnist_hpo"] or study.user_attrs["mnist_hpo"]["target"] is None
    assert "lifted the earlier stop" in get_note(study)


def test_with_two_workers_both_stop_and_the_study_records_one_reason(tmp_path: Path):
    url = f"journal:{tmp_path / 'study.log'}"
    done = cli(tmp_path, "search", *TINY, "--workers", "2", "--study", "j", "--storage", url, "--n-trials", "8", "--target", "0.2",
               "--pruner", "none", "--seed", "0", "--heartbeat-interval", "1", "--grace-period", "4")
    study = optuna.load_study(study_name="j", storage=storage.open_storage(url))
    reason = study.user_attrs["stopped"]
    assert reason.startswith("--target 0.2: trial")
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and states.count(TrialState.WAITING) >= 4, states
    logs = sorted((tmp_path / "mnist-hpo-artifacts" / "worker-logs").glob("j-worker-*.log"))
    assert len(logs) == 2
    for log in logs:  # each worker stopped on the study's one recorded reason
        assert f"stopped early ({reason}); it takes no more trials" in log.read_text(), log.read_text()
    assert "stopped early: --target 0.2" in done.stdout
