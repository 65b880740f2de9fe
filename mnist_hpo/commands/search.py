"""`mnist-hpo search`, `mnist-hpo worker` and `mnist-hpo study create`: the search's one path, with the dashboards wired in.

``tuning.prepare`` and ``tuning.run`` do the work; this module adds what the tuning layer does not
know: the dashboard's pictures and notes (``hooks``), and the closing summary with the commands that come next.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import optuna

from mnist_hpo import storage as stores
from mnist_hpo.console import console
from mnist_hpo.tuning import (
    SearchHooks,
    SearchRequest,
    StudySettings,
    create,
    join,
    prepare,
    print_outcome,
    run,
)


def hooks() -> SearchHooks:
    """The dashboards in the search: each finished trial's pictures, and the study's note on stops (imported on first use)."""
    return SearchHooks(on_finish=publisher(), note=note)


def note(study: optuna.Study, text: str) -> None:
    """A line for the study's dashboard note: why it stopped early, or that a stop was lifted."""
    from mnist_hpo.dashboards import note_study_stop

    note_study_stop(study, text)


def publisher():
    """The objective's "trial finished" hook: the dashboard's pictures and notes."""

    def on_finish(trial: optuna.Trial, end) -> None:
        from mnist_hpo.dashboards import publish_trial

        result = end.result
        publish_trial(
            trial,
            end.artifacts,
            end.curve,
            stopped=end.stopped,
            epochs=end.epochs,
            val_accuracy=result.val_accuracy if result else None,
            val_images=end.val.images.numpy() if result else None,
            val_labels=end.val.labels.numpy() if result else None,
            predictions=result.val_predictions.numpy() if result else None,
        )

    return on_finish


def search(request: SearchRequest) -> optuna.Study:
    """Create or extend a study to its budget, then run its workers (this process, or K processes).

    Progress and trial lines go to the console; the summary with its suggested commands is
    ``show_outcome``'s, which only the command line calls.
    """
    return run(prepare(request), hooks())


def show_outcome(study: optuna.Study, storage: str | None, artifacts: str | Path | None) -> None:
    """The summary of a finished search and the commands that come next, each runnable as printed."""
    paste = stores.pasteable(storage, artifacts)
    print_outcome(study, StudySettings.load(study), f"--study {shlex.quote(study.study_name)}{paste.storage}", paste)


def worker(request: SearchRequest) -> None:
    """`mnist-hpo worker`: join an existing study; with --workers/--gpus, start that many worker processes."""
    join(request, hooks())


def study_create(request: SearchRequest) -> optuna.Study:
    """`mnist-hpo study create`: make a study for workers, or check and keep an existing one (idempotent)."""
    study, settings = create(request, note)
    console.print(f"profile {settings.profile}, objectives {','.join(settings.objectives)}, {settings.epochs} epochs max")
    paste = stores.pasteable(request.storage, None)
    if paste.secret_note:
        console.print(paste.secret_note)
    console.print(f"workers join with: mnist-hpo worker --study {shlex.quote(study.study_name)}{paste.storage}")
    return study
