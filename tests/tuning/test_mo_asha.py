"""MO-ASHA: the pure algorithm on hand-made fronts, then the pruner in a real multi-objective study run from the CLI."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from mnist_hpo.trainer import EpochReport
from mnist_hpo.tuning.attrs import RUNGS_ATTR
from mnist_hpo.tuning.mo_asha import Point, crowding_distances, judge, pareto_fronts, ranking, rung_points, rungs
from mnist_hpo.tuning.pruners import judge_for
from mnist_hpo.tuning.settings import SCHEMA, StudySettings

CLI = [sys.executable, "-m", "mnist_hpo"]


def numbers(points) -> list[int]:
    return [p.number for p in points]


@pytest.mark.parametrize(
    ("epochs", "expected"), [(1, []), (2, [1]), (3, [1]), (4, [1, 3]), (9, [1, 3]), (10, [1, 3, 9]), (30, [1, 3, 9, 27])]
)
def test_rungs_sit_at_powers_of_three_and_never_at_the_last_epoch(epochs, expected):
    assert rungs(epochs) == expected


def test_non_dominated_sorting_of_accuracy_up_and_parameters_down():
    a, b, c, d, e = Point(0, 0.90, 100), Point(1, 0.80, 50), Point(2, 0.85, 120), Point(3, 0.70, 60), Point(4, 0.95, 200)
    fronts = pareto_fronts([a, b, c, d, e])
    assert [sorted(numbers(f)) for f in fronts] == [[0, 1, 4], [2, 3]]  # c is dominated by a, d by b
    assert pareto_fronts([Point(0, 0.9, 10), Point(1, 0.9, 10)]) == [[Point(0, 0.9, 10), Point(1, 0.9, 10)]]  # equal: neither dominates
    assert [numbers(f) for f in pareto_fronts([Point(0, 0.9, 10), Point(1, 0.9, 11)])] == [[0], [1]]  # as accurate, bigger


def test_crowding_distance_is_nsga2s():
    front = [Point(1, 0.70, 10), Point(2, 0.80, 20), Point(3, 0.82, 60), Point(4, 0.90, 100)]
    distance = crowding_distances(front)
    assert distance[1] == distance[4] == math.inf
    assert distance[2] == pytest.approx((0.82 - 0.70) / 0.20 + (60 - 10) / 90)
    assert distance[3] == pytest.approx((0.90 - 0.80) / 0.20 + (100 - 20) / 90)
    # ends first, then the less crowded middle point; a dominated point after the whole front
    assert numbers(p for _, p in ranking([*front, Point(5, 0.75, 50)])) == [1, 4, 3, 2, 5]


def test_a_trial_goes_on_only_in_the_top_third_of_its_rung():
    front = [Point(1, 0.70, 10), Point(2, 0.80, 20), Point(3, 0.82, 60), Point(4, 0.90, 100)]
    dominated = [Point(5, 0.65, 30), Point(6, 0.60, 70), Point(7, 0.79, 80), Point(8, 0.50, 15), Point(9, 0.81, 110)]
    points = front + dominated  # 9 trials at the rung: 3 go on
    kept = [n for n in range(1, 10) if judge(points, n).promoted]
    assert kept == [1, 3, 4]  # both ends of the front and its least crowded middle point
    verdict = judge(points, 2)
    assert (verdict.promoted, verdict.kept, verdict.of, verdict.front) == (False, 3, 9, 1)
    assert (judge(points, 5).front, judge(points, 6).front) == (2, 3)  # 6 is dominated by 5, which only the front dominates


def test_with_fewer_than_three_trials_at_a_rung_only_the_first_ranked_goes_on():
    assert judge([Point(0, 0.5, 100)], 0).promoted  # the first trial at a rung
    assert not judge([Point(0, 0.9, 50), Point(1, 0.8, 60)], 1).promoted  # dominated by the one before it
    assert judge([Point(0, 0.9, 50), Point(1, 0.8, 40)], 1).promoted  # a trade-off: a tie on the front favours the trial judged
    assert judge([Point(0, 0.9, 50), Point(1, 0.8, 40)], 0).promoted


def test_with_one_parameter_count_it_is_successive_halving_on_accuracy():
    rng = random.Random(0)
    accuracies = rng.sample(range(500, 1000), 30)
    points = [Point(i, a / 1000, 1234) for i, a in enumerate(accuracies)]
    best_ten = sorted(range(30), key=lambda i: -accuracies[i])[:10]
    assert sorted(n for n in range(30) if judge(points, n).promoted) == sorted(best_ten)


def test_rung_points_come_from_the_trials_recorded_values():
    def trial(number: int, rungs_seen: dict, parameters: int | None = 1000) -> optuna.trial.FrozenTrial:
        attrs = {RUNGS_ATTR: rungs_seen} | ({"parameters": parameters} if parameters is not None else {})
        made = create_trial(state=TrialState.PRUNED, user_attrs=attrs)
        made.number = number
        return made

    trials = [trial(0, {"1": 0.5, "3": 0.7}), trial(1, {"1": 0.6}), trial(2, {}), trial(3, {"1": 0.9}, parameters=None)]
    assert rung_points(trials, 1) == [Point(0, 0.5, 1000), Point(1, 0.6, 1000)]
    assert rung_points(trials, 3) == [Point(0, 0.7, 1000)]


def test_threshold_stays_available_and_schema_1_keeps_it():
    settings = StudySettings("smoke", {}, ["accuracy", "params"], 4, "fixture", None, pruner="threshold", min_accuracy=0.5)
    report = EpochReport(epoch=1, train_loss=2.0, val_accuracy=0.3, seconds=1.0, images_per_s=1.0, lr=1e-3)
    assert "0.3000 < 0.5 after epoch 1" in judge_for(settings)(None, report, 1000, False)
    old = StudySettings.from_dict({**settings.to_dict(), "pruner": "hyperband", "schema": 1})
    assert old.pruner == "threshold" and old.schema == SCHEMA


def test_the_multi_objective_default_prunes_at_rungs_by_the_pareto_ranking(tmp_path: Path):
    """A real study from the CLI (default pruner for two objectives); every verdict is replayed from the stored rung values."""
    db = tmp_path / "mo.db"
    space = tmp_path / "small.toml"  # two 7x7 convs of 4 to 16 channels: about a second per epoch, and sizes that differ
    space.write_text(
        "[kernel_size]\nvalue = 7\n[conv_layers_k7]\nvalue = 2\n[first_channels]\nlow = 4\nhigh = 16\nstep = 4\n"
        "[growth]\nvalue = 0\n[head]\nvalue = false\n[batch_size]\nvalue = 64\n"
    )
    done = subprocess.run(
        [
            *CLI,
            "search",
            "--profile",
            "smoke",
            "--objectives",
            "accuracy,params",
            "--epochs",
            "4",
            "--n-trials",
            "8",
            "--space",
            str(space),
            "--study",
            "mo",
            "--storage",
            f"sqlite:///{db}",
            "--artifacts",
            str(tmp_path / "a"),
            "--seed",
            "0",
            "--device",
            "cpu",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{db}")
    assert StudySettings.load(study).pruner == "mo-asha"
    trials = sorted(study.trials, key=lambda t: t.number)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and any(t.state == TrialState.COMPLETE for t in trials)
    for trial in trials:
        for rung in (1, 3):
            if trial.user_attrs["epochs_run"] < rung:
                continue
            recorded = trial.user_attrs[RUNGS_ATTR][str(rung)]
            assert recorded == trial.user_attrs["learning_curve"][rung - 1]["val_accuracy"]
            # one worker, trials in number order: its competitors are the earlier trials that reached the rung
            verdict = judge(rung_points([t for t in trials if t.number <= trial.number], rung), trial.number)
            went_on = trial.user_attrs["epochs_run"] > rung
            assert verdict.promoted == went_on, (trial.number, rung, verdict)
            if not went_on:
                assert trial.user_attrs["stopped"].startswith(
                    f"MO-ASHA after epoch {rung}: not in the top {verdict.kept} of the {verdict.of}"
                )
    assert "Pareto front (validation accuracy vs parameters)" in done.stdout


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "MNIST_HPO_STORAGE"}
    env["OMP_NUM_THREADS"] = "1"
    return env
