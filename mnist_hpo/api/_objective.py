"""``mnist_hpo.Objective``: the trial function as a plain Optuna objective, for any sampler and pruner."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna

from mnist_hpo.api._output import shown
from mnist_hpo.console import console
from mnist_hpo.tuning import Objective as TrialObjective, SearchRequest, new_settings, resolve_profile


class Objective:
    """Train one network per Optuna trial and return its validation accuracy (with ``objectives="accuracy,params"``:
    accuracy and parameter count): `mnist-hpo search`'s trial, for ``optuna.create_study().optimize(objective, ...)``.

    The space, epochs and data are the ``profile``'s (``smoke``, ``quick``, ``paper``; ``space`` a TOML
    file of changes), sampled with ``trial.suggest_*``, so any sampler works (Optuna's, OptunaHub's, your
    own). Every epoch is reported with ``trial.report`` and the study's pruner asked ``should_prune``, so
    any pruner works too. Each trial records its network, training and learning curve as user attributes;
    its kept weights go to ``artifacts`` (a folder or ``s3://BUCKET/PREFIX``, default
    ``./mnist-hpo-artifacts``) as the Optuna artifact ``model.pt``, next to a resume state a retried trial
    continues from. Validation only: the test split is never looked at here.
    """

    def __init__(
        self,
        profile: str | None = None,
        *,
        space: str | Path | None = None,
        epochs: int | None = None,
        max_params: int | None = None,
        objectives: str = "accuracy",
        device: str = "auto",
        artifacts: str | Path | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        from mnist_hpo.data import load_splits
        from mnist_hpo.storage import open_artifacts
        from mnist_hpo.trainer import resolve_device

        request = SearchRequest(
            profile=profile,
            space_file=Path(space) if space is not None else None,
            epochs=epochs,
            max_params=max_params,
            objectives=objectives,
        )
        settings = new_settings(request, resolve_profile(request))
        if not settings.multi_objective:  # the study's own pruner judges, whichever the user gave it
            settings = replace(settings, pruner="the study's pruner")
        self.settings = settings
        self.progress = progress
        with shown(progress):
            splits = load_splits(settings.data, subset=settings.train_subset, log=console.print)
        self._objective = TrialObjective(settings, splits, resolve_device(device), open_artifacts(artifacts), seed=seed)
        if progress:
            self._objective.on_epoch = lambda trial, report: console.print(
                f"trial {trial.number} epoch {report.epoch}/{settings.epochs}: validation accuracy {100 * report.val_accuracy:.2f}%"
            )

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        """Train the trial's network; its validation accuracy (and parameters, for two objectives)."""
        with shown(self.progress):
            return self._objective(trial)

    @property
    def directions(self) -> list[str]:
        """What to pass to ``optuna.create_study(directions=...)``: maximise accuracy (and minimise parameters)."""
        return ["maximize", "minimize"] if self.settings.multi_objective else ["maximize"]
