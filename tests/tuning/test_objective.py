"""The objective on a real Optuna study: what it reports and when it lets the pruner stop a trial."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from mnist_hpo import storage
from mnist_hpo.data import load_splits
from mnist_hpo.tuning import SearchRequest, new_settings
from mnist_hpo.tuning.objective import Objective
from mnist_hpo.tuning.profiles import get_profile


class PruneFromSecondEpoch(optuna.pruners.BasePruner):
    """A real pruner with a fixed verdict, so the test does not depend on which network trains better."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return (trial.last_step or 0) >= 2


@pytest.mark.parametrize(("epochs", "state", "epochs_run"), [(3, TrialState.PRUNED, 2), (2, TrialState.COMPLETE, 2)])
def test_the_pruner_is_asked_after_every_epoch_but_the_last(tmp_path: Path, epochs: int, state: TrialState, epochs_run: int):
    request = SearchRequest(study="s", profile="smoke", epochs=epochs, device="cpu")
    settings = new_settings(request, get_profile("smoke", has_gpu=False))
    splits = load_splits(settings.data, subset=256)
    objective = Objective(settings, splits, torch.device("cpu"), storage.open_artifacts(tmp_path / "artifacts"))
    study = optuna.create_study(direction="maximize", pruner=PruneFromSecondEpoch())
    assert objective.judge is not None  # the study's pruner is consulted through the objective's judge
    study.optimize(objective, n_trials=1)

    trial = study.trials[0]
    assert trial.state == state
    assert trial.user_attrs["epochs_run"] == epochs_run
    assert sorted(trial.intermediate_values) == list(range(1, epochs_run + 1))  # every epoch is reported all the same
