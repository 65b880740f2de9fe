"""Stopping a trial after an epoch: Optuna's pruners for one objective, MO-ASHA or the threshold for two.

Optuna cannot prune a multi-objective study (``trial.should_prune()`` and ``trial.report()``
refuse, optuna#3450). There ``mo-asha`` (the default, ``mo_asha.py``) runs asynchronous successive
halving over the Pareto ranking of (validation accuracy, parameters), recording each trial's rung
values as a user attribute; ``threshold`` stops trials whose validation accuracy stays below a
fixed floor.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from mnist_hpo.errors import UserError
from mnist_hpo.tuning import mo_asha
from mnist_hpo.tuning.attrs import RUNGS_ATTR
from mnist_hpo.tuning.copies import own_trials
from mnist_hpo.tuning.settings import DEFAULT_PRUNER, StudySettings

if TYPE_CHECKING:
    from mnist_hpo.trainer import EpochReport

PRUNERS = ("sha", "hyperband", "median", "percentile", "patient", "wilcoxon", "none")  # the default first
MULTI_OBJECTIVE_PRUNERS = ("mo-asha", "threshold", "none")
RUNG_STATES = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)  # every trial that trained


def check_pruner(name: str, multi_objective: bool) -> None:
    allowed = MULTI_OBJECTIVE_PRUNERS if multi_objective else PRUNERS
    if name == "mo-asha" and not multi_objective:
        raise UserError(
            f"the mo-asha pruner ranks trials on two objectives; use it with --objectives accuracy,params, or one of {', '.join(PRUNERS)}"
        )
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
        if settings.pruner == "mo-asha":
            return _mo_asha(settings.epochs)
        return _threshold(settings.min_accuracy) if settings.pruner == "threshold" else _never

    def optuna_pruner(trial: optuna.Trial, report: EpochReport, parameters: int, last: bool) -> str | None:
        trial.report(report.val_accuracy, report.epoch)
        if not last and trial.should_prune():
            return why_pruned(trial, settings.pruner or DEFAULT_PRUNER, report)
        return None

    return optuna_pruner


def why_pruned(trial: optuna.Trial, pruner: str, report: EpochReport) -> str:
    """Why the pruner stopped the trial, in the terms it judged by: this epoch's validation accuracy against the others'.

    Optuna's pruners answer only yes or no; where this trial ranked among the study's own trials at
    the same epoch is what each of them (median, percentile, successive halving, Hyperband) compares.
    """
    others = [
        t.intermediate_values[report.epoch]
        for t in own_trials(trial.study.get_trials(deepcopy=False, states=RUNG_STATES))
        if t.number != trial.number and report.epoch in t.intermediate_values
    ]
    if not others:
        return f"pruned by {pruner} after epoch {report.epoch} at {100 * report.val_accuracy:.2f}% validation accuracy"
    rank = 1 + sum(value > report.val_accuracy for value in others)
    median = statistics.median(others)
    return (
        f"pruned by {pruner} after epoch {report.epoch}: validation accuracy {100 * report.val_accuracy:.2f}% ranked {rank} of "
        f"{len(others) + 1} trials at that epoch (median of the others {100 * median:.2f}%, best {100 * max(others):.2f}%)"
    )


def _threshold(floor: float):
    def threshold(trial: optuna.Trial, report: EpochReport, parameters: int, last: bool) -> str | None:
        if not last and report.val_accuracy < floor:
            return f"validation accuracy {report.val_accuracy:.4f} < {floor} after epoch {report.epoch}"
        return None

    return threshold


def _mo_asha(epochs: int):
    rungs = set(mo_asha.rungs(epochs))

    def judge(trial: optuna.Trial, report: EpochReport, parameters: int, last: bool) -> str | None:
        """At a rung: record this trial's value there, then rank it against every trial that reached the rung."""
        if last or report.epoch not in rungs:
            return None
        recorded = {**(trial.user_attrs.get(RUNGS_ATTR) or {}), str(report.epoch): report.val_accuracy}
        trial.set_user_attr(RUNGS_ATTR, recorded)
        others = [t for t in own_trials(trial.study.get_trials(deepcopy=False, states=RUNG_STATES)) if t.number != trial.number]
        points = [*mo_asha.rung_points(others, report.epoch), mo_asha.Point(trial.number, report.val_accuracy, parameters)]
        verdict = mo_asha.judge(points, trial.number)
        if verdict.promoted:
            return None
        return (
            f"MO-ASHA after epoch {report.epoch}: not in the top {verdict.kept} of the {verdict.of} trials at this rung "
            f"(Pareto front {verdict.front} of validation accuracy {100 * report.val_accuracy:.2f}% and {parameters:,} parameters)"
        )

    return judge


def _never(trial: optuna.Trial, report: EpochReport, parameters: int, last: bool) -> str | None:
    return None
