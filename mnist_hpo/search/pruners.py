"""Stopping a trial after an epoch: Optuna's pruners for one objective, the threshold for two.

Optuna cannot prune a multi-objective study (``trial.should_prune()`` refuses, optuna#3450); there
the threshold pruner stops trials whose validation accuracy stays below a fixed floor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna

from mnist_hpo.errors import UserError
from mnist_hpo.search.settings import StudySettings

if TYPE_CHECKING:
    from mnist_hpo.trainer import EpochReport

PRUNERS = ("median", "percentile", "sha", "hyperband", "patient", "wilcoxon", "none")
MULTI_OBJECTIVE_PRUNERS = ("threshold", "none")


def check_pruner(name: str, multi_objective: bool) -> None:
    allowed = MULTI_OBJECTIVE_PRUNERS if multi_objective else PRUNERS
    if name not in allowed:
        kind = "multi-objective studies" if multi_objective else "one objective"
        raise UserError(f"unknown pruner {name!r} for {kind}; choose from {', '.join(allowed)}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """Pruner settings scaled to the epoch budget: judge after the first epoch, not before."""
    if name not in PRUNERS:
        return optuna.pruners.NopPruner()  # a multi-objective study's pruner lives outside Optuna
    warmup = max(1, epochs // 5)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=warmup)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "patient":
        return optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup), patience=2)
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=warmup)
    return optuna.pruners.NopPruner()


def judge_for(settings: StudySettings):
    """The per-epoch judge the objective calls: returns why to stop the trial, or None."""
    if settings.multi_objective:
        return _threshold(settings.min_accuracy) if settings.pruner == "threshold" else _never

    def optuna_pruner(trial: optuna.Trial, report: EpochReport, parameters: int, last: bool) -> str | None:
        trial.report(report.val_accuracy, report.epoch)
        if not last and trial.should_prune():
            return f"pruned after epoch {report.epoch}"
        return None

    return optuna_pruner


def _threshold(floor: float):
    def threshold(trial: optuna.Trial, report: EpochReport, parameters: int, last: bool) -> str | None:
        if not last and report.val_accuracy < floor:
            return f"validation accuracy {report.val_accuracy:.4f} < {floor} after epoch {report.epoch}"
        return None

    return threshold


def _never(trial: optuna.Trial, report: EpochReport, parameters: int, last: bool) -> str | None:
    return None
