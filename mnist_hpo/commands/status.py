"""`mnist-hpo status` and `mnist-hpo best`: a study's counts, budget, retries, best trial or Pareto front."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from mnist_hpo import storage as stores
from mnist_hpo.console import accuracy, console
from mnist_hpo.errors import UserError
from mnist_hpo.search import StudySettings, budget_view


def open_study(url: str | None, name: str) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    storage = stores.open_storage(stores.resolve_url(url), must_exist=True)
    return stores.load_study(storage, name), storage


def completed_by_validation(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials, best validation accuracy first (the only ranking anything is chosen by)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not trials:
        raise UserError(f"study {study.study_name!r} has no completed trial yet; run `mnist-hpo search --study {study.study_name}` first")
    return sorted(trials, key=lambda t: (-t.values[0], t.number))


def show_status(url: str | None, name: str | None) -> None:
    storage = stores.open_storage(stores.resolve_url(url), must_exist=True)
    if name is None:
        _all_studies(storage)
        return
    study = stores.load_study(storage, name)
    summary = stores.study_summary(storage, name)
    console.print(f"study {name}: " + ", ".join(f"{count} {state.lower()}" for state, count in summary["counts"].items()))
    settings = StudySettings.load(study)
    console.print(f"profile {settings.profile}, objectives {','.join(settings.objectives)}, {settings.epochs} epochs max, "
                  f"data {study.user_attrs.get('data_source', settings.data)}")
    if settings.n_trials is not None:
        console.print(budget_view(storage, storage.get_study_id_from_name(name), settings.n_trials).describe())
    if study.user_attrs.get("stopped"):
        console.print(f"stopped early: {study.user_attrs['stopped']}")
    for line in retry_chains(study):
        console.print(f"retried: {line}")
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    if settings.multi_objective:
        console.print("Pareto front (validation accuracy vs parameters):")
        for trial in sorted(study.best_trials, key=lambda t: t.values[1]):
            console.print(f"  trial {trial.number}: {accuracy('validation', trial.values[0])}, {int(trial.values[1]):,} parameters")
    else:
        print_trial(completed_by_validation(study)[0], "best trial")


def _all_studies(storage: optuna.storages.BaseStorage) -> None:
    table = Table("study", "trials", "complete", "pruned", "running", "waiting", "failed", "best validation accuracy")
    for study_name in stores.list_study_names(storage):
        summary = stores.study_summary(storage, study_name)
        counts = summary["counts"]
        best = summary.get("best_values")
        table.add_row(study_name, str(summary["n_trials"]), *(str(counts.get(s, 0)) for s in ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL")),
                      f"{100 * best[0]:.2f}%" if best else "-")
    console.print(table)


def retry_chains(study: optuna.Study) -> list[str]:
    """One line per retried trial: its chain of attempts and where the last one started."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    retries = [t for t in trials.values() if t.system_attrs.get("retry_history")]
    last_of_chain = [t for t in retries if not any(t.number in r.system_attrs.get("retry_history", []) for r in retries)]
    lines = []
    for trial in sorted(last_of_chain, key=lambda t: t.number):
        parts = []
        for number in [*trial.system_attrs["retry_history"], trial.number]:
            attempt = trials.get(number)
            if attempt is None:
                continue
            resumed = attempt.user_attrs.get("resumed_from")
            note = f" resumed after epoch {resumed['epoch']}" if isinstance(resumed, dict) and "epoch" in resumed else ""
            if attempt.user_attrs.get("resume_failed"):
                note = " started over (no usable checkpoint)"
            parts.append(f"trial {number} {attempt.state.name}{note}")
        lines.append(" -> ".join(parts))
    return lines


def print_trial(trial: FrozenTrial, title: str) -> None:
    attrs = trial.user_attrs
    console.print(f"{title} {trial.number}: {accuracy('validation', trial.values[0])}, {attrs.get('parameters', 0):,} parameters, "
                  f"{attrs.get('epochs_run')} epochs")
    for key, value in trial.params.items():
        console.print(f"  {key} = {value}")


def show_best(url: str | None, name: str, test: bool, artifacts: str | Path | None, device: str = "auto") -> None:
    """The best trial by validation; with ``test``, its checkpoint's test accuracy, measured and recorded (never used to choose)."""
    store = stores.open_artifacts(artifacts, create=False) if test else None  # a wrong bucket: one line, first
    study, storage = open_study(url, name)
    best = completed_by_validation(study)[0]
    print_trial(best, "best trial (chosen on validation)")
    if test:
        from mnist_hpo.commands._trials import study_splits, trial_model
        from mnist_hpo.trainer import evaluate, resolve_device

        target = resolve_device(device)
        model, _ = trial_model(storage, study, best, store)
        splits = study_splits(study)
        value = evaluate(model, splits.test, target)
        record_test_accuracy(study, best.number, value)
        console.print(f"{accuracy('test', value, len(splits.test))}, reported only")


def record_test_accuracy(study: optuna.Study, trial_number: int, value: float) -> None:
    """Finished trials are immutable, so measured test figures live on the study, labelled."""
    measured = dict(study.user_attrs.get("test_accuracy", {}))
    measured[str(trial_number)] = value
    study.set_user_attr("test_accuracy", measured)
