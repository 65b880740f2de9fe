"""What a trial leaves for the dashboard when it ends: pictures as artifacts, and notes.

``publish_trial`` is the one call the objective makes at the end of a trial. Completed trials get
learning curves, a validation confusion matrix and a grid of misclassified validation digits;
pruned or diverged trials get their learning curves. Every trial gets a markdown note, and the
study gets its note (command line, settings, search space) the first time one of its trials ends.
Publishing never fails a trial: a problem is printed as one line and the search goes on.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
import torch

from mnist_hpo import storage
from mnist_hpo.console import console
from mnist_hpo.dashboards import figures, notes

if TYPE_CHECKING:
    from mnist_hpo.data import Split
    from mnist_hpo.trainer import TrainResult

PNG = "image/png"


def publish_trial(
    trial: optuna.Trial,
    artifacts: Any,
    curve: Sequence[Mapping[str, Any]],
    result: TrainResult | None = None,
    val: Split | None = None,
    device: torch.device | None = None,
    stopped: str | None = None,
) -> float:
    """Upload the trial's pictures and save its note; returns the seconds it took.

    ``curve`` is the per-epoch list the objective keeps (epoch, train_loss, val_accuracy).
    ``result`` and ``val`` are given for a completed trial: its validation predictions (from the
    trainer, or one pass of ``result.model`` over ``val`` when the best epoch predates a resume)
    feed the confusion matrix and the misclassified digits. ``stopped`` says why a trial ended early.
    """
    started = time.perf_counter()
    try:
        _publish(trial, artifacts, curve, result, val, device, stopped)
    except Exception as exc:  # pictures are a convenience: never lose a trained trial over them
        console.print(f"trial {trial.number}: dashboard pictures/notes not saved ({type(exc).__name__}: {exc})")
    return time.perf_counter() - started


def _publish(trial, artifacts, curve, result, val, device, stopped) -> None:
    from optuna_dashboard import save_note

    completed = result is not None
    attrs = trial.user_attrs
    title = f"trial {trial.number}"
    reason = None if completed else (stopped or attrs.get("stopped") or "pruned")
    storage.upload_bytes(trial, artifacts, figures.CURVES, figures.learning_curves_png(curve, title, reason), PNG)
    if completed and val is not None and len(val):
        predictions = result.val_predictions
        if predictions is None or len(predictions) != len(val):
            from mnist_hpo.trainer import predict_logits

            predictions = predict_logits(result.model, val.images, device or torch.device("cpu")).argmax(1)
        labels, predicted = val.labels.cpu().numpy(), predictions.cpu().numpy()
        storage.upload_bytes(trial, artifacts, figures.CONFUSION, figures.confusion_matrix_png(labels, predicted, title), PNG)
        storage.upload_bytes(
            trial, artifacts, figures.MISCLASSIFIED, figures.misclassified_png(val.images.cpu().numpy(), labels, predicted, title), PNG
        )
    study = trial.study
    settings = study.user_attrs.get(notes.SETTINGS_ATTR) or {}
    note = notes.trial_note(
        trial.number, attrs, curve, completed=completed, stopped=reason,
        val_accuracy=result.best_val_accuracy if completed else None, epochs=settings.get("epochs"),
    )
    save_note(trial, note)
    ensure_study_note(study)


def ensure_study_note(study: optuna.Study) -> bool:
    """Give the study its note and metric names unless it has a note already; True if written."""
    from optuna_dashboard import get_note, save_note

    if get_note(study).strip():
        return False  # written before, or by someone in the dashboard: never overwrite it
    user_attrs = study.user_attrs
    save_note(study, notes.study_note(study.study_name, user_attrs))
    objectives = (user_attrs.get(notes.SETTINGS_ATTR) or {}).get("objectives") or []
    if objectives and not study.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is "experimental"
            study.set_metric_names([notes.METRIC_NAMES.get(name, name) for name in objectives])
    return True
