"""`mnist-hpo status` and `mnist-hpo best`: a study's counts, budget, retries, best trial or Pareto front."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from mnist_hpo import storage as stores
from mnist_hpo.console import accuracy, console
from mnist_hpo.errors import UserError
from mnist_hpo.tuning import StudySettings, budget_view, own_pareto_front, own_trials
from mnist_hpo.tuning.attrs import (
    DATA_SOURCE_ATTR,
    EPOCHS_RUN_ATTR,
    LIFTED_ATTR,
    OPTUNA_RETRY_HISTORY_ATTR,
    PARAMETERS_ATTR,
    RESUME_FAILED_ATTR,
    RESUMED_FROM_ATTR,
    STOPPED_ATTR,
    TEST_ACCURACY_ATTR,
)
from mnist_hpo.tuning.settings import stop_rule_rows


def open_study(url: str | None, name: str) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    storage = stores.open_storage(stores.resolve_url(url), must_exist=True)
    return stores.load_study(storage, name), storage


def completed_by_validation(study: optuna.Study) -> list[FrozenTrial]:
    """The study's own completed trials, best validation accuracy first (the only ranking anything is chosen by).

    Trials copied by a warm start are never chosen: their checkpoints belong to the study they came from.
    """
    trials = own_trials(study, states=(TrialState.COMPLETE,))
    if not trials:
        raise UserError(f"study {study.study_name!r} has no completed trial yet; run `mnist-hpo search --study {study.study_name}` first")
    return sorted(trials, key=lambda t: (-t.values[0], t.number))


def show_status(url: str | None, name: str | None) -> None:
    storage = stores.open_storage(stores.resolve_url(url), must_exist=True)
    if name is None:
        _all_studies(storage)
        return
    study = stores.load_study(storage, name)
    trials = own_trials(study)
    console.print(f"study {name}: " + ", ".join(f"{count} {state.name.lower()}" for state, count in _counts(trials).items()))
    settings = StudySettings.load(study)
    console.print(
        f"profile {settings.profile}, objectives {','.join(settings.objectives)}, {settings.epochs} epochs max, "
        f"data {study.user_attrs.get(DATA_SOURCE_ATTR, settings.data)}"
    )
    copied = len(study.get_trials(deepcopy=False)) - len(trials)
    if copied:
        console.print(f"warm-started from study {settings.warm_start!r}: {copied} trials copied (seed the sampler; not counted or ranked)")
    if settings.n_trials is not None:
        console.print(budget_view(storage, storage.get_study_id_from_name(name), settings.n_trials).describe())
    for key, meaning in stop_rule_rows(settings.to_dict()):
        console.print(f"{key}: {meaning}")
    for reason in study.user_attrs.get(LIFTED_ATTR) or []:
        console.print(f"stopped early before (lifted since): {reason}")
    if study.user_attrs.get(STOPPED_ATTR):
        console.print(
            f"stopped early: {study.user_attrs[STOPPED_ATTR]}; queued trials stay queued "
            f"(`mnist-hpo search --study {name}` without the rule continues it)"
        )
    for line in retry_chains(study):
        console.print(f"retried: {line}")
    if not any(t.state == TrialState.COMPLETE for t in trials):
        return
    if settings.multi_objective:
        console.print("Pareto front (validation accuracy vs parameters):")
        for trial in sorted(own_pareto_front(study), key=lambda t: t.values[1]):
            console.print(f"  trial {trial.number}: {accuracy('validation', trial.values[0])}, {int(trial.values[1]):,} parameters")
    else:
        print_trial(completed_by_validation(study)[0], "best trial")


#: Columns of the all-studies table; the study name comes last so that it is never cut, however long.
STUDY_COLUMNS = ("trials", "complete", "pruned", "running", "waiting", "failed", "best validation", "study")


def _all_studies(storage: optuna.storages.BaseStorage) -> None:
    """One row per study, plain text: the name (what every other command needs) is printed whole, last.

    A terminal narrower than a row wraps it, and piped output is never cut, so the name can always
    be copied; a boxed table would shorten the name to fit 80 columns instead.
    """
    rows = []
    for study_name in stores.list_study_names(storage):
        trials = own_trials(stores.load_study(storage, study_name))  # copied trials are neither counted nor ranked
        counts = _counts(trials)
        best = max((t.values[0] for t in trials if t.state == TrialState.COMPLETE), default=None)
        rows.append(
            (
                str(len(trials)),
                *(
                    str(counts[s])
                    for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL)
                ),
                f"{100 * best:.2f}%" if best is not None else "-",
                study_name,
            )
        )
    if not rows:
        console.print("no studies yet; `mnist-hpo search` creates one")
        return
    widths = [max(len(row[i]) for row in [STUDY_COLUMNS, *rows]) for i in range(len(STUDY_COLUMNS) - 1)]
    for row in [STUDY_COLUMNS, *rows]:
        console.print("  ".join([*(cell.rjust(width) for cell, width in zip(row, widths)), row[-1]]))


def _counts(trials: list[FrozenTrial]) -> dict[TrialState, int]:
    return {state: sum(t.state == state for t in trials) for state in TrialState}


def retry_chains(study: optuna.Study) -> list[str]:
    """One line per retried trial: its chain of attempts and where the last one started."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    retries = [t for t in trials.values() if t.system_attrs.get(OPTUNA_RETRY_HISTORY_ATTR)]
    last_of_chain = [t for t in retries if not any(t.number in r.system_attrs.get(OPTUNA_RETRY_HISTORY_ATTR, []) for r in retries)]
    lines = []
    for trial in sorted(last_of_chain, key=lambda t: t.number):
        parts = []
        for number in [*trial.system_attrs[OPTUNA_RETRY_HISTORY_ATTR], trial.number]:
            attempt = trials.get(number)
            if attempt is None:
                continue
            resumed = attempt.user_attrs.get(RESUMED_FROM_ATTR)
            note = f" resumed after epoch {resumed['epoch']}" if isinstance(resumed, dict) and "epoch" in resumed else ""
            if attempt.user_attrs.get(RESUME_FAILED_ATTR):
                note = " started over (no usable checkpoint)"
            parts.append(f"trial {number} {attempt.state.name}{note}")
        lines.append(" -> ".join(parts))
    return lines


def print_trial(trial: FrozenTrial, title: str) -> None:
    attrs = trial.user_attrs
    console.print(
        f"{title} {trial.number}: {accuracy('validation', trial.values[0])}, {attrs.get(PARAMETERS_ATTR, 0):,} parameters, "
        f"{attrs.get(EPOCHS_RUN_ATTR)} epochs"
    )
    for key, value in trial.params.items():
        console.print(f"  {key} = {value}")


def show_best(url: str | None, name: str, test: bool, artifacts: str | Path | None, device: str = "auto") -> None:
    """The best trial by validation; with ``test``, its checkpoint's test accuracy, measured and recorded (never used to choose)."""
    store = stores.open_artifacts(artifacts, create=False) if test else None  # a wrong bucket: one line, first
    study, storage = open_study(url, name)
    best = completed_by_validation(study)[0]
    print_trial(best, "best trial (chosen on validation)")
    if test:
        from mnist_hpo.commands.trials import study_splits, trial_model
        from mnist_hpo.trainer import evaluate, resolve_device

        target = resolve_device(device)
        model, _ = trial_model(storage, study, best, store)
        splits = study_splits(study)
        value = evaluate(model, splits.test, target)
        record_test_accuracy(study, best.number, value)
        console.print(f"{accuracy('test', value, len(splits.test))}, reported only")


def record_test_accuracy(study: optuna.Study, trial_number: int, value: float) -> None:
    """Finished trials are immutable, so measured test figures live on the study, labelled."""
    measured = dict(study.user_attrs.get(TEST_ACCURACY_ATTR, {}))
    measured[str(trial_number)] = value
    study.set_user_attr(TEST_ACCURACY_ATTR, measured)
