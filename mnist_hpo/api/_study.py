"""``mnist_hpo.load``: a study as a Python object: its best trials by validation, their networks, exports, report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from mnist_hpo.api._output import shown
from mnist_hpo.commands.export import Ensemble, build_ensemble, export_trial
from mnist_hpo.commands.status import completed_by_validation, open_study
from mnist_hpo.commands.trials import trial_model
from mnist_hpo.errors import UserError
from mnist_hpo.exports import DEFAULT_INPUT_DTYPE, ExportResult
from mnist_hpo.storage import open_artifacts
from mnist_hpo.trainer import resolve_device
from mnist_hpo.tuning import own_trials, quiet_optuna
from mnist_hpo.tuning.attrs import EPOCHS_RUN_ATTR, PARAMETERS_ATTR, SECONDS_ATTR, TRIAL_STOPPED_ATTR


def load(study: str, *, storage: str | None = None, artifacts: str | Path | None = None) -> StudyResult:
    """An existing study (``storage``: an Optuna URL, default ``./mnist-hpo.db`` or ``$MNIST_HPO_STORAGE``;
    ``artifacts``: where its checkpoints are, default ``./mnist-hpo-artifacts``). Raises ``UserError`` if missing."""
    quiet_optuna()
    open_study(storage, study)  # a missing study or storage fails here, in one line
    return StudyResult(study, storage, artifacts)


@dataclass(frozen=True)
class StudyResult:
    """A study in its storage. Everything is read fresh from the storage, so a study that workers
    still run shows its latest trials. Trials are ranked by validation accuracy only; test accuracy is
    measured and reported, never chosen on."""

    name: str
    storage: str | None = None
    artifacts: str | Path | None = None

    @property
    def study(self) -> optuna.Study:
        """The Optuna study itself (for ``optuna.visualization`` and everything else Optuna offers)."""
        return open_study(self.storage, self.name)[0]

    def best_trials(self, k: int = 1) -> list[FrozenTrial]:
        """The ``k`` best completed trials by validation accuracy (this study's own, not warm-start copies)."""
        return completed_by_validation(self.study)[:k]

    @property
    def best_trial(self) -> FrozenTrial:
        """The completed trial with the best validation accuracy."""
        return self.best_trials(1)[0]

    @property
    def best_accuracy(self) -> float:
        """The best trial's validation accuracy (0-1)."""
        return float(self.best_trial.values[0])

    def trials(self) -> list[dict[str, Any]]:
        """Every trial of this study as a row: number, state, validation accuracy, parameters, epochs, seconds,
        why it stopped, and its sampled values. Plain dicts: ``pandas.DataFrame(result.trials())`` if you like."""
        return [_row(trial) for trial in own_trials(self.study)]

    def best_model(self, *, trial: int | None = None, device: str = "cpu") -> torch.nn.Module:
        """The network a trial kept (the best by validation unless ``trial``), in eval mode on ``device``."""
        study, storage = open_study(self.storage, self.name)
        ranked = completed_by_validation(study)
        chosen = ranked[0] if trial is None else next((t for t in ranked if t.number == trial), None)
        if chosen is None:
            done = ", ".join(str(t.number) for t in sorted(ranked, key=lambda t: t.number))
            raise UserError(f"trial {trial} of {self.name!r} did not complete, so it has no model; completed trials: {done}")
        model, _ = trial_model(storage, study, chosen, open_artifacts(self.artifacts, create=False))
        return model.to(resolve_device(device)).eval()

    def export(
        self, path: str | Path, format: str = "pt", *, trial: int | None = None, input_dtype: str = DEFAULT_INPUT_DTYPE
    ) -> ExportResult:
        """Write a trial's model (the best by validation unless ``trial``) as pt, safetensors, onnx or pt2, with its
        model card beside it: the file, its sha256 and the card. The same files as `mnist-hpo export`."""
        with shown(False):
            return export_trial(self.storage, self.name, trial, Path(path), format, self.artifacts, input_dtype)

    def ensemble(self, k: int = 3, path: str | Path | None = None, format: str = "pt", *, device: str = "cpu") -> Ensemble:
        """The mean softmax of the ``k`` best trials by validation (of a PBT study: the ``k`` best members), scored on
        validation and test (reported only); with ``path``, also written as one model file, as `mnist-hpo ensemble` does."""
        with shown(False):
            return build_ensemble(self.storage, self.name, k, Path(path) if path is not None else None, self.artifacts, device, format)

    def report(self, path: str | Path) -> Path:
        """Write the study's self-contained HTML report (opens offline) and return its path."""
        from mnist_hpo.dashboards import write_report

        with shown(False):
            return write_report(self.storage, self.name, path, self.artifacts)


def _row(trial: FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name,
        "validation_accuracy": trial.values[0] if trial.values else None,
        "parameters": attrs.get(PARAMETERS_ATTR),
        "epochs": attrs.get(EPOCHS_RUN_ATTR),
        "seconds": attrs.get(SECONDS_ATTR),
        "stopped": attrs.get(TRIAL_STOPPED_ATTR),
        "params": dict(trial.params),
    }
