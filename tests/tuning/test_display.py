"""The one line per finished trial that search, worker and status print."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from mnist_hpo.tuning import trial_line


def test_a_trial_failed_for_its_dead_worker_says_why():
    """The next worker fails a trial whose process is gone with a user attribute only (the engine's own failures add a system one)."""
    why = "its worker (pid 41 on vm) ended without finishing it; re-queued at once"
    trial = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": why})
    assert why in trial_line(trial), trial_line(trial)


def test_the_engines_own_failure_reason_is_its_last_line():
    trial = optuna.trial.create_trial(state=TrialState.FAIL, system_attrs={"fail_reason": "Traceback ...\nValueError: lr must be positive"})
    assert "ValueError: lr must be positive" in trial_line(trial) and "Traceback" not in trial_line(trial)


def test_a_pbt_segment_says_which_member_and_epochs_and_whom_it_copied():
    place = {"member": 2, "generation": 1, "first_epoch": 3, "last_epoch": 4, "source": 5, "donor": 0, "placed_at": None}
    trial = optuna.trial.create_trial(value=0.97, user_attrs={"pbt_segment": place})
    assert "member 2, epochs 3-4, copied member 0" in trial_line(trial), trial_line(trial)
    plain = optuna.trial.create_trial(value=0.97)
    assert "member" not in trial_line(plain)
