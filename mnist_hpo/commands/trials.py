"""Reading back what a trial left: its checkpoint from the artifact store, and the study's data splits."""

from __future__ import annotations

from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from mnist_hpo import storage as stores
from mnist_hpo.checkpoints import CheckpointError, load_checkpoint
from mnist_hpo.console import console
from mnist_hpo.data import Splits, load_splits
from mnist_hpo.errors import UserError
from mnist_hpo.tuning.objective import MODEL_ARTIFACT
from mnist_hpo.tuning.settings import StudySettings


def trial_model(storage: optuna.storages.BaseStorage, study: optuna.Study, trial: FrozenTrial, store: Any) -> tuple[torch.nn.Module, dict]:
    """The network a trial kept (its best validation epoch) and its checkpoint payload, from artifact store ``store``."""
    artifact_id = stores.find_artifact(storage, trial, MODEL_ARTIFACT)
    if artifact_id is None:
        raise UserError(
            f"trial {trial.number} of {study.study_name!r} has no {MODEL_ARTIFACT} artifact; is --artifacts the store the search wrote to?"
        )
    try:
        data = stores.download_bytes(store, artifact_id)
    except UserError:
        raise UserError(
            f"the checkpoint of trial {trial.number} ({MODEL_ARTIFACT}) is missing from the artifact store {store}; "
            "pass the --artifacts the search wrote to"
        ) from None
    try:
        return load_checkpoint(data, f"trial {trial.number}'s {MODEL_ARTIFACT}")
    except CheckpointError as exc:
        raise UserError(f"{exc}; the artifact store {store} holds a damaged copy") from None


def study_splits(study: optuna.Study) -> Splits:
    settings = StudySettings.load(study)
    return load_splits(settings.data, subset=settings.train_subset, log=console.print)
