"""What a search prints: one line per finished trial, and the outcome against the published baseline."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from mnist_hpo.console import accuracy, console, plural
from mnist_hpo.storage import Pasteable
from mnist_hpo.tuning.attrs import (
    EPOCHS_RUN_ATTR,
    FAIL_REASON_ATTR,
    FAIL_REASON_SYSTEM_ATTR,
    LEARNING_CURVE_ATTR,
    PARAMETERS_ATTR,
    SECONDS_ATTR,
    STOPPED_ATTR,
    TRIAL_STOPPED_ATTR,
)
from mnist_hpo.tuning.baseline import baseline_comparison
from mnist_hpo.tuning.copies import own_pareto_front, own_trials
from mnist_hpo.tuning.pbt import Segment
from mnist_hpo.tuning.settings import StudySettings


def trial_line(trial: FrozenTrial) -> str:
    """One line per finished trial: number, state, value, parameters, seconds, epochs."""
    attrs = trial.user_attrs
    if trial.state == TrialState.COMPLETE and trial.values:
        value = accuracy("validation", trial.values[0]) + (f", {int(trial.values[1]):,} params" if len(trial.values) > 1 else "")
    elif trial.intermediate_values:
        value = f"last {accuracy('validation', list(trial.intermediate_values.values())[-1])}"
    elif attrs.get(LEARNING_CURVE_ATTR):
        value = f"last {accuracy('validation', attrs[LEARNING_CURVE_ATTR][-1]['val_accuracy'])}"
    else:
        # the engine's own failures carry the system attribute; a trial failed for its dead worker only the user one
        reason = trial.system_attrs.get(FAIL_REASON_SYSTEM_ATTR) or attrs.get(FAIL_REASON_ATTR, "")
        value = attrs.get(TRIAL_STOPPED_ATTR) or (reason.splitlines()[-1] if reason else "")
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    return (
        f"trial {trial.number:>3} {trial.state.name:<8} {value}  {plural(attrs.get(PARAMETERS_ATTR, 0), 'parameter')}  "
        f"{plural(attrs.get(EPOCHS_RUN_ATTR, 0), 'epoch')}  {attrs.get(SECONDS_ATTR, 0):.1f} s{_place(trial)}  [{params}]"
    )


def _place(trial: FrozenTrial) -> str:
    """A PBT segment's place: ``  member 2, epochs 3-4, copied member 0``."""
    segment = Segment.of(trial)
    if segment is None:
        return ""
    copied = f", copied member {segment.donor}" if segment.donor is not None else ""
    return f"  member {segment.member}, epochs {segment.first_epoch}-{segment.last_epoch}{copied}"


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def print_outcome(study: optuna.Study, settings: StudySettings, where: str, paste: Pasteable | None = None) -> None:
    """The best trial (or the Pareto front), how it compares with the published baseline, and what to run next.

    ``where`` (``--study NAME --storage URL``) and ``paste``'s artifacts option make each suggested
    command run as printed; ``paste.secret_note`` says how to supply a password that is not printed.
    """
    paste = paste or Pasteable("", "", None)
    trials = own_trials(study)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    stopped = study.user_attrs.get(STOPPED_ATTR)
    if stopped:
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        console.print(
            f"stopped early: {stopped}; {waiting} queued trials stay queued. Continue with `mnist-hpo search {where}` "
            "(no stop rule: on to the budget), or with --n-trials N and a rule to re-arm it"
        )
    if not completed:
        console.print("no trial completed yet; run `mnist-hpo search` again to add trials")
        return
    if settings.multi_objective:
        front = own_pareto_front(study)
        console.print(f"Pareto front (validation accuracy vs parameters): {len(front)} trials")
        for trial in sorted(front, key=lambda t: t.values[1]):
            console.print(f"  trial {trial.number}: {accuracy('validation', trial.values[0])}, {int(trial.values[1]):,} parameters")
    else:
        best = max(completed, key=lambda t: (t.values[0], -t.number))
        attrs = best.user_attrs
        console.print(
            f"best trial {best.number}: {accuracy('validation', best.values[0])} "
            f"({plural(attrs.get(PARAMETERS_ATTR, 0), 'parameter')}, {plural(attrs.get(EPOCHS_RUN_ATTR) or 0, 'epoch')}, "
            f"{attrs.get(SECONDS_ATTR, 0):.0f} s)"
        )
        console.print(baseline_comparison(best, trials, queued=settings.baseline))
    console.print("next:" + (f" ({paste.secret_note})" if paste.secret_note else ""))
    stored = f"{where}{paste.artifacts}"
    for command in (
        f"status {where}",
        f"best {stored} --test",
        f"export {stored} --out best.pt",
        f"dashboard{paste.storage}{paste.artifacts}",
    ):
        console.print(f"  mnist-hpo {command}")
