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
from mnist_hpo.tuning import Faults, SearchRequest, Worker, WorkerSpec, ensure_budget_study, get_profile, new_settings
from mnist_hpo.tuning.stopping import StopRules, stop_after_reason, target_reason, terminator_reason, validation_noise

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
        return Worker(
            study, rdb, lambda trial: accuracies[trial.number], WorkerSpec(faults), label="w", stop_rule=StopRules(settings, 1000)
        )

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
    done = cli(
        tmp_path,
        "search",
        *TINY,
        "--workers",
        "2",
        "--study",
        "j",
        "--storage",
        url,
        "--n-trials",
        "8",
        "--target",
        "0.2",
        "--pruner",
        "none",
        "--seed",
        "0",
        "--heartbeat-interval",
        "1",
        "--grace-period",
        "4",
    )
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


BAD = {
    "stop-after 0": (["--stop-after", "0"], ["--stop-after must be at least 1 trial, got 0"]),
    "target above 1": (["--target", "1.5"], ["--target is a validation accuracy in (0, 1], e.g. 0.99, got 1.5"]),
    "target 0": (["--target", "0"], ["--target is a validation accuracy in (0, 1]"]),
    "rule with two objectives": (["--stop-after", "3", "--objectives", "accuracy,params"], ["watch one objective"]),
    "mo-asha with one objective": (
        ["--pruner", "mo-asha"],
        ["mo-asha pruner ranks trials on two objectives", "--objectives accuracy,params"],
    ),
    "one-objective pruner with two": (
        ["--pruner", "hyperband", "--objectives", "accuracy,params"],
        ["unknown pruner 'hyperband' for multi-objective studies", "mo-asha, threshold, none"],
    ),
}


@pytest.mark.parametrize(("args", "fragments"), list(BAD.values()), ids=list(BAD))
@pytest.mark.parametrize("command", ["search", "study create"])
def test_bad_rules_and_pruners_are_one_line_and_write_nothing(tmp_path, capsys, monkeypatch, command, args, fragments):
    from mnist_hpo.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main([*command.split(), "--profile", "smoke", "--study", "s", "--storage", f"sqlite:///{tmp_path / 's.db'}", *args])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert list(tmp_path.iterdir()) == []


def test_study_create_stores_the_rules_and_replaces_them_only_when_given(tmp_path, capsys):
    from mnist_hpo.cli import main

    url = f"sqlite:///{tmp_path / 's.db'}"

    def create(*args: str) -> dict:
        with pytest.raises(SystemExit) as exited:
            main(["study", "create", "--profile", "smoke", "--study", "s", "--storage", url, *args])
        assert exited.value.code == 0, capsys.readouterr().err
        return optuna.load_study(study_name="s", storage=url).user_attrs["mnist_hpo"]

    stored = create("--n-trials", "4", "--target", "0.95")
    assert (stored["target"], stored["stop_after"], stored["terminator"]) == (0.95, None, False)
    stored = create()  # idempotent: the rules stay
    assert stored["target"] == 0.95
    stored = create("--stop-after", "5", "--terminator")  # given: they replace the rules
    assert (stored["target"], stored["stop_after"], stored["terminator"]) == (None, 5, True)
    assert "stop rules: --stop-after 5 --terminator" in capsys.readouterr().out


def test_through_the_console_script_a_bad_target_is_one_line(tmp_path):
    done = subprocess.run(
        [*CLI, "search", "--profile", "smoke", "--target", "2"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: --target is a validation accuracy in (0, 1]")
    assert list(tmp_path.iterdir()) == []
