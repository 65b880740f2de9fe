"""Studies that know when to stop: `--stop-after N`, `--target ACC` and `--terminator`.

The rules live in the study's settings, so every worker obeys the same ones; each worker checks
them through the engine's ``stop_rule`` hook before it takes a trial. The first worker that finds
a rule met writes the reason once, as the study user attribute ``stopped``; every worker, and any
that joins later, then stops taking trials. Running trials finish; queued ones stay queued.

- ``--stop-after N``: none of the last N finished trials (COMPLETE or PRUNED, in the order they
  finished) improved the best validation accuracy of the trials that finished before them.
- ``--target ACC``: a completed trial reached validation accuracy ACC.
- ``--terminator``: Optuna's Terminator (Makarova et al. 2022): its GP regret bound on the best
  validation accuracy fell below the validation noise, taken as the binomial standard error of
  the best trial's accuracy on the validation split, sqrt(p (1 - p) / n), n = its images. It
  waits for Optuna's default of 20 completed trials.

Only the study's own trials count (trials copied by a warm start do not). Lifting: `search` on an
existing study sets its rules to exactly those on its command line, and a stop recorded before is
moved to ``stops_lifted``; `--stop-after` then counts only trials that finish from that run on
(``stop_rules_from``). `study create` sets rules only when given. See the README's "Studies".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.terminator import BaseImprovementEvaluator, RegretBoundEvaluator, StaticErrorEvaluator, Terminator
from optuna.trial import FrozenTrial, TrialState

from mnist_hpo.tuning._budget import FINISHED, BudgetView
from mnist_hpo.tuning.attrs import LIFTED_ATTR, STOP_RULES_FROM_ATTR, STOPPED_ATTR
from mnist_hpo.tuning.copies import own_study, own_trials
from mnist_hpo.tuning.settings import StudySettings

TERMINATOR_MIN_TRIALS = 20  # Optuna's default: the regret bound needs that many completed trials


def stop_after_reason(finished: Sequence[FrozenTrial], patience: int, since: int = 0) -> str | None:
    """``finished``: own finished trials in the order they finished; ``since``: how many finished before the rule was set."""
    if len(finished) - since < patience:
        return None
    before, last = finished[:-patience], finished[-patience:]
    best_before, best_last = _best(before), _best(last)
    if best_last is not None and (best_before is None or best_last.values[0] > best_before.values[0]):
        return None
    best = f"the best is still trial {best_before.number}'s {_percent(best_before.values[0])}" if best_before else "no trial has completed"
    return f"--stop-after {patience}: no better best validation accuracy in the last {patience} finished trials ({best})"


def target_reason(finished: Sequence[FrozenTrial], target: float) -> str | None:
    best = _best(finished)
    if best is None or best.values[0] < target:
        return None
    return f"--target {target:g}: trial {best.number} reached {_percent(best.values[0])} validation accuracy"


def validation_noise(accuracy: float, images: int) -> float:
    """The binomial standard error of an accuracy measured on ``images`` validation images."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(images, 1))


class _Recorded(BaseImprovementEvaluator):
    """Optuna's regret bound, remembered so the stop reason can say what it was."""

    def __init__(self, seed: int | None) -> None:
        self.inner, self.last = RegretBoundEvaluator(seed=seed), math.nan

    def evaluate(self, trials: list[FrozenTrial], study_direction) -> float:
        self.last = self.inner.evaluate(trials, study_direction)
        return self.last


def terminator_reason(study: optuna.Study, images: int, seed: int | None = 0) -> str | None:
    """Optuna's Terminator on ``study`` (own trials only): stop once its regret bound is below the validation noise."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < TERMINATOR_MIN_TRIALS:
        return None
    best = _best(complete)
    noise = validation_noise(best.values[0], images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in Optuna 4.9 (removal in 6.0; we pin <5.1), and "experimental"
        bound = _Recorded(seed)
        terminator = Terminator(
            improvement_evaluator=bound, error_evaluator=StaticErrorEvaluator(noise), min_n_trials=TERMINATOR_MIN_TRIALS
        )
        try:
            stop = terminator.should_terminate(study)
        except ValueError:  # no common parameter among the completed trials: no bound to compare
            return None
    if not stop:
        return None
    return (
        f"--terminator: Optuna's regret bound {bound.last:.4f} is below the validation noise {noise:.4f} (binomial standard error "
        f"of the best trial {best.number}'s {_percent(best.values[0])} on {images:,} validation images) after {len(complete)} completed trials"
    )


class StopRules:
    """The engine's ``stop_rule``: the reason the study stopped (recorded once), or None to go on."""

    def __init__(self, settings: StudySettings, validation_images: int) -> None:
        self.settings = settings
        self.images = validation_images
        self._seen = -1  # own finished trials at the last check: the rules are re-read only when that changes

    def __call__(self, study: optuna.Study, view: BudgetView) -> str | None:
        attrs = study.user_attrs
        if attrs.get(STOPPED_ATTR):
            return attrs[STOPPED_ATTR]
        if view.finished == self._seen:
            return None
        self._seen = view.finished
        reason = self.reason(study, int(attrs.get(STOP_RULES_FROM_ATTR) or 0))
        return record_stop(study, reason) if reason else None

    def reason(self, study: optuna.Study, since: int) -> str | None:
        s = self.settings
        finished = sorted(own_trials(study, states=FINISHED), key=lambda t: (t.datetime_complete, t.number))
        if s.target is not None and (reason := target_reason(finished, s.target)):
            return reason
        if s.stop_after is not None and (reason := stop_after_reason(finished, s.stop_after, since)):
            return reason
        if s.terminator:
            return terminator_reason(own_study(study), self.images, s.seed)
        return None


def stop_rule_for(settings: StudySettings, validation_images: int) -> StopRules | None:
    if settings.stop_after is None and settings.target is None and not settings.terminator:
        return None
    return StopRules(settings, validation_images)


def record_stop(study: optuna.Study, reason: str) -> str:
    """Write why the study stopped, unless another worker already did; returns the reason that stands."""
    standing = study.user_attrs.get(STOPPED_ATTR)
    if standing:
        return standing
    study.set_user_attr(STOPPED_ATTR, reason)
    return reason


def rules_given(stop_after: int | None, target: float | None, terminator: bool) -> bool:
    return stop_after is not None or target is not None or terminator


def set_stop_rules(
    study: optuna.Study, settings: StudySettings, stop_after: int | None, target: float | None, terminator: bool
) -> list[str]:
    """Give an existing study these rules (None/False: none) and lift a stop it recorded; lines to print.

    After a lift or a change of rules, `--stop-after` counts the trials that finish from now on; the
    same rules given again to a study that has not stopped (a search continued after Ctrl-C) keep their count.
    """
    lines = []
    attrs = study.user_attrs
    lifted = bool(attrs.get(STOPPED_ATTR))
    if lifted:
        study.set_user_attr(LIFTED_ATTR, [*(attrs.get(LIFTED_ATTR) or []), attrs[STOPPED_ATTR]])
        study.set_user_attr(STOPPED_ATTR, None)
        lines.append(f"lifted the earlier stop ({attrs[STOPPED_ATTR]})")
    changed = (settings.stop_after, settings.target, settings.terminator) != (stop_after, target, terminator)
    if changed:
        settings.stop_after, settings.target, settings.terminator = stop_after, target, terminator
        settings.save(study)
    if lifted or changed:
        study.set_user_attr(STOP_RULES_FROM_ATTR, len(own_trials(study, states=FINISHED)))
    if lifted or changed or rules_given(stop_after, target, terminator):
        lines.append(describe_rules(settings))
    return lines


def describe_rules(settings: StudySettings) -> str:
    rules = [
        f"--stop-after {settings.stop_after}" if settings.stop_after is not None else "",
        f"--target {settings.target:g}" if settings.target is not None else "",
        "--terminator" if settings.terminator else "",
    ]
    shown = " ".join(r for r in rules if r)
    return f"stop rules: {shown}" if shown else "stop rules: none (the study runs to its budget)"


def _best(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    return max(complete, key=lambda t: (t.values[0], -t.number)) if complete else None


def _percent(value: Any) -> str:
    return f"{100 * float(value):.2f}%"
