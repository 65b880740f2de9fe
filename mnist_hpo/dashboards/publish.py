"""What a trial leaves for the dashboard when it ends: pictures as artifacts, and notes.

``publish_trial`` is the "trial finished" hook the search commands give the objective. Completed
trials get learning curves, a validation confusion matrix and a grid of misclassified validation
digits (from the predictions the trainer already made: nothing is run again here); pruned or
diverged trials get their learning curves. Every trial gets a markdown note, and the study gets
its note (command line, settings, search space) the first time one of its trials ends. In a
population-based-training study, the segment that ends a generation draws the population
(``population.py``) as a study artifact and shows it in the study's note.
Publishing never fails a trial: a problem is printed as one line and the search goes on.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna

from mnist_hpo import redact, storage
from mnist_hpo.console import console
from mnist_hpo.dashboards import figures, notes, population
from mnist_hpo.tuning.attrs import PBT_SEGMENT_ATTR, SETTINGS_ATTR, TRIAL_STOPPED_ATTR
from mnist_hpo.tuning.copies import own_trials

PNG = "image/png"


def publish_trial(
    trial: optuna.Trial,
    artifacts: Any,
    curve: Sequence[Mapping[str, Any]],
    *,
    val_accuracy: float | None = None,
    val_images: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
    stopped: str | None = None,
    epochs: int | None = None,
) -> float:
    """Upload the trial's pictures and save its note; returns the seconds it took.

    ``curve`` is the per-epoch list the objective keeps (epoch, train_loss, val_accuracy). A
    completed trial passes its ``val_accuracy`` and the validation images, labels and the kept
    weights' ``predictions`` (uint8 N×28×28 and int arrays); ``stopped`` says why a trial ended early.
    """
    started = time.perf_counter()
    segment = False
    try:
        segment = PBT_SEGMENT_ATTR in trial.user_attrs  # the running trial's attributes: no extra read for other studies
        completed = val_accuracy is not None
        title = f"trial {trial.number}"
        reason = None if completed else (stopped or trial.user_attrs.get(TRIAL_STOPPED_ATTR) or "pruned")
        storage.upload_bytes(trial, artifacts, figures.CURVES, figures.learning_curves_png(curve, title, reason), PNG)
        if completed and predictions is not None and val_labels is not None and val_images is not None:
            storage.upload_bytes(trial, artifacts, figures.CONFUSION, figures.confusion_matrix_png(val_labels, predictions, title), PNG)
            storage.upload_bytes(
                trial, artifacts, figures.MISCLASSIFIED, figures.misclassified_png(val_images, val_labels, predictions, title), PNG
            )
        _save_notes(trial, curve, completed, reason, val_accuracy, epochs)
    except Exception as exc:  # pictures are a convenience: never lose a trained trial over them
        console.print(f"trial {trial.number}: dashboard pictures/notes not saved ({type(exc).__name__}: {exc})")
    if segment:
        publish_population(trial.study, artifacts, trial.number)
    return time.perf_counter() - started


def publish_population(study: optuna.Study, artifacts: Any, number: int) -> str | None:
    """If trial ``number`` ends a generation of a PBT study: the population picture, uploaded as the study's
    artifact population-generation-G.png and shown in the study's note. Returns the artifact's name, or None.

    Two workers ending a generation's last segments at once may both draw it (harmless: the note shows one).
    Never fails the trial: a problem is printed as one line.
    """
    try:
        settings = study.user_attrs.get(SETTINGS_ATTR) or {}
        if not settings.get("pbt"):
            return None
        trials = own_trials(study.get_trials(deepcopy=False))
        pbt, epochs = settings["pbt"], int(settings["epochs"])
        generation = population.generation_done(trials, number, int(pbt["population"]))
        if generation is None:
            return None
        name = f"population-generation-{generation}.png"
        if any(meta.filename == name for meta in optuna.artifacts.get_all_artifact_meta(study)):
            return None
        last = min((generation + 1) * int(pbt["interval"]), epochs)
        title = f"study {study.study_name}: {pbt['population']} members after generation {generation} (epoch {last} of {epochs})"
        artifact_id = storage.upload_bytes(study, artifacts, name, population.png(population.read(trials), title), PNG)
        _show_population(study, artifact_id, title)
        return name
    except Exception as exc:  # a picture is a convenience: the trial is recorded
        console.print(f"trial {number}: population picture not saved ({type(exc).__name__}: {exc})")
        return None


def _show_population(study: optuna.Study, artifact_id: str, title: str) -> None:
    from optuna_dashboard import get_note, save_note
    from optuna_dashboard.artifact import get_artifact_path

    ensure_study_note(study)
    note = get_note(study)
    section = notes.population_section(get_artifact_path(study, artifact_id), title)
    updated = notes.with_section(note, notes.POPULATION_HEADING, section)
    if updated != note:
        save_note(study, updated)


def _save_notes(
    trial: optuna.Trial,
    curve: Sequence[Mapping[str, Any]],
    completed: bool,
    reason: str | None,
    val_accuracy: float | None,
    epochs: int | None,
) -> None:
    from optuna_dashboard import save_note

    note = notes.trial_note(
        trial.number, trial.user_attrs, curve, completed=completed, stopped=reason, val_accuracy=val_accuracy, epochs=epochs
    )
    save_note(trial, note)
    ensure_study_note(trial.study)


def ensure_study_note(study: optuna.Study) -> bool:
    """Give the study its note and metric names unless it has a note already; True if written."""
    from optuna_dashboard import get_note, save_note

    if get_note(study).strip():
        return False  # written before, or by someone in the dashboard: never overwrite it
    user_attrs = study.user_attrs
    save_note(study, notes.study_note(study.study_name, user_attrs))
    objectives = (user_attrs.get(SETTINGS_ATTR) or {}).get("objectives") or []
    if objectives and not study.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is "experimental"
            study.set_metric_names([notes.METRIC_NAMES.get(name, name) for name in objectives])
    return True


def scrub_study_note(study: optuna.Study) -> bool:
    """Mask the secrets an older mnist-hpo wrote into the study's note (its command line); True if changed."""
    from optuna_dashboard import get_note, save_note

    note = get_note(study)
    masked = redact.redact(note)
    if masked != note:
        save_note(study, masked)  # a new version; optuna-dashboard blanks the old version's chunks
    return masked != note


STOPS_HEADING = notes.STOPS_HEADING


def note_study_stop(study: optuna.Study, line: str) -> bool:
    """Add ``line`` (why the study stopped, or that a stop was lifted) to the study's note, once; True if added.

    Appended, never rewritten: the note may hold what someone wrote in the dashboard. Never fails the worker.
    """
    try:
        from optuna_dashboard import get_note, save_note

        ensure_study_note(study)
        note = get_note(study)
        entry = f"- {redact.redact(line)}"  # it may quote a command line
        if entry in note.splitlines():
            return False
        if STOPS_HEADING not in note:
            note = note.rstrip() + f"\n\n{STOPS_HEADING}\n"
        save_note(study, note.rstrip() + "\n" + entry + "\n")
        return True
    except Exception as exc:  # a note is a convenience: the stop itself is recorded in the study
        console.print(f"study {study.study_name}: dashboard note not updated ({type(exc).__name__}: {exc})")
        return False
