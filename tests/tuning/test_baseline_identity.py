"""The published baseline keeps its identity through failures, retries and replacements.

A baseline that failed (a full artifacts disk, a crash) is replaced by the published configuration
again, labelled as the baseline; the closing summary compares the best trial with the baseline that
finished, never with the failed one (which has no parameters or time recorded).
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from mnist_hpo.tuning import baseline_comparison
from mnist_hpo.tuning._retries import requeue

PUBLISHED = {"lr": 0.001, "kernel_size": 3}


def test_a_failed_baseline_out_of_retries_is_replaced_by_the_published_configuration():
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(PUBLISHED, user_attrs={"published_baseline": True})
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("kernel_size", [3, 5, 7])
    study.tell(trial, state=TrialState.FAIL)
    requeue(study, study.trials[0], max_retries=0)  # no retries left: a fresh trial takes its place
    replacement = study.trials[1]
    assert replacement.state == TrialState.WAITING
    assert replacement.user_attrs == {"replaces": 0, "published_baseline": True}
    assert replacement.system_attrs["fixed_params"] == PUBLISHED
    study.tell(study.ask(), 0.99)  # the replacement runs
    free = study.ask()  # an ordinary trial's replacement is free to sample
    study.tell(free, state=TrialState.FAIL)
    requeue(study, study.trials[-1], max_retries=0)
    assert study.trials[-1].user_attrs == {"replaces": free.number} and not study.trials[-1].system_attrs["fixed_params"]


def _trial(number: int, state: TrialState, value: float | None, **attrs) -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(state=state, value=value, user_attrs=attrs)
    trial.number = number
    return trial


def test_the_summary_compares_with_the_baseline_that_finished_not_the_one_that_failed():
    trials = [
        _trial(0, TrialState.FAIL, None, published_baseline=True, fail_reason="No space left on device"),
        _trial(1, TrialState.COMPLETE, 0.9890, published_baseline=True, replaces=0, parameters=1_124_180, seconds=100),
        _trial(2, TrialState.COMPLETE, 0.9910, parameters=105_352, seconds=60),
    ]
    line = baseline_comparison(trials[2], trials)
    assert "published baseline (trial 1)" in line and "+0.20 pp" in line, line
    assert "(105,352 vs 1,124,180)" in line and "10.7x fewer parameters" in line, line


def test_the_summary_says_plainly_when_the_best_trial_has_the_baselines_size():
    """The search often changes only the training of the published network: "1.0x fewer parameters" said nothing."""
    baseline = _trial(0, TrialState.COMPLETE, 0.9874, published_baseline=True, parameters=112_664, seconds=322)
    same = _trial(2, TrialState.COMPLETE, 0.9898, parameters=112_664, seconds=432)
    close = _trial(3, TrialState.COMPLETE, 0.9899, parameters=110_000, seconds=400)
    line = baseline_comparison(same, [baseline, same])
    assert "; the same 112,664 parameters; 432 s vs 322 s of training" in line and "1.0x" not in line, line
    line = baseline_comparison(close, [baseline, close])
    assert "about as many parameters (110,000 vs 112,664)" in line and "1.0x" not in line, line
