"""Reading a study back: status, the best trial, export, retraining and ensembles.

Selection is by validation accuracy only. The test set is evaluated here, on request, for the
trials already chosen, and every test figure is labelled as such.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from mnist_hpo import storage
from mnist_hpo.checkpoints import load_checkpoint, save_checkpoint
from mnist_hpo.console import accuracy, console
from mnist_hpo.data import Split, Splits, load_splits
from mnist_hpo.errors import UserError
from mnist_hpo.exports import ExportInfo, check_target, export_model
from mnist_hpo.models import SoftmaxAverage, build_model
from mnist_hpo.search.objective import MODEL_ARTIFACT
from mnist_hpo.search.settings import StudySettings
from mnist_hpo.trainer import TrainConfig, evaluate, resolve_device, train


def open_study(url: str | None, name: str) -> optuna.Study:
    rdb = storage.open_storage(storage.resolve_url(url), must_exist=True)
    return storage.load_study(rdb, name)


def completed_by_validation(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials, best validation accuracy first."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not trials:
        raise UserError(f"study {study.study_name!r} has no completed trial yet; run `mnist-hpo search --study {study.study_name}` first")
    return sorted(trials, key=lambda t: (-t.values[0], t.number))


def show_status(url: str | None, name: str | None) -> None:
    rdb = storage.open_storage(storage.resolve_url(url), must_exist=True)
    if name is None:
        table = Table("study", "trials", "complete", "pruned", "running", "failed", "best validation accuracy")
        for study_name in storage.list_study_names(rdb):
            summary = storage.study_summary(rdb, study_name)
            counts = summary["counts"]
            best = summary.get("best_values")
            table.add_row(
                study_name, str(sum(counts.values())), *(str(counts.get(s, 0)) for s in ("COMPLETE", "PRUNED", "RUNNING", "FAIL")),
                f"{100 * best[0]:.2f}%" if best else "-",
            )
        console.print(table)
        return
    study = storage.load_study(rdb, name)
    summary = storage.study_summary(rdb, name)
    console.print(f"study {name}: " + ", ".join(f"{count} {state.lower()}" for state, count in summary["counts"].items()))
    settings = StudySettings.load(study)
    console.print(f"profile {settings.profile}, objectives {','.join(settings.objectives)}, {settings.epochs} epochs max, data {study.user_attrs.get('data_source', settings.data)}")
    _print_budget_and_retries(study, settings)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    if settings.multi_objective:
        console.print("Pareto front (validation accuracy vs parameters):")
        for trial in sorted(study.best_trials, key=lambda t: t.values[1]):
            console.print(f"  trial {trial.number}: validation accuracy {100 * trial.values[0]:.2f}%, {int(trial.values[1]):,} parameters")
    else:
        _print_trial(completed_by_validation(study)[0], "best trial")


def _print_budget_and_retries(study: optuna.Study, settings: StudySettings) -> None:
    """A worker study's global budget, and every chain of retried trials (dead worker -> retry)."""
    from mnist_hpo.search.worker import budget_view, retry_chains

    if settings.n_trials is not None:
        console.print(budget_view(study, settings.n_trials).describe())
    for line in retry_chains(study):
        console.print(f"retried: {line}")


def _print_trial(trial: FrozenTrial, title: str) -> None:
    console.print(f"{title} {trial.number}: {accuracy('validation', trial.values[0])}, {trial.user_attrs.get('parameters', 0):,} parameters, {trial.user_attrs.get('epochs_run')} epochs")
    for key, value in trial.params.items():
        console.print(f"  {key} = {value}")


def trial_checkpoint(study: optuna.Study, trial: FrozenTrial, artifacts_dir: Path | None) -> tuple[torch.nn.Module, dict]:
    store = storage.open_artifacts(artifacts_dir)
    artifact_id = storage.find_artifact(study, trial, MODEL_ARTIFACT)
    if artifact_id is None:
        raise UserError(f"trial {trial.number} of {study.study_name!r} has no {MODEL_ARTIFACT} artifact; is --artifacts pointing at the folder the search wrote?")
    try:
        data = storage.download_bytes(store, artifact_id)
    except Exception:
        raise UserError(f"the checkpoint of trial {trial.number} is missing from the artifact folder {artifacts_dir or storage.DEFAULT_ARTIFACTS}; pass --artifacts DIR") from None
    return load_checkpoint(data, f"trial {trial.number}'s {MODEL_ARTIFACT}")


def _study_splits(study: optuna.Study) -> Splits:
    settings = StudySettings.load(study)
    return load_splits(settings.data, subset=settings.train_subset, log=console.print)


def show_best(url: str | None, name: str, test: bool, artifacts_dir: Path | None, device: str = "auto") -> None:
    study = open_study(url, name)
    best = completed_by_validation(study)[0]
    _print_trial(best, "best trial (chosen on validation)")
    if test:
        model, _ = trial_checkpoint(study, best, artifacts_dir)
        splits = _study_splits(study)
        value = evaluate(model, splits.test, resolve_device(device))
        record_test_accuracy(study, best.number, value)
        console.print(f"{accuracy('test', value, len(splits.test))}, reported only")


def record_test_accuracy(study: optuna.Study, trial_number: int, value: float) -> None:
    """Finished trials are immutable, so measured test figures live on the study, labelled."""
    measured = dict(study.user_attrs.get("test_accuracy", {}))
    measured[str(trial_number)] = value
    study.set_user_attr("test_accuracy", measured)


def export_trial(url: str | None, name: str, trial_number: int | None, out: Path, fmt: str, artifacts_dir: Path | None) -> str:
    """Write one trial in any export format, with its model card, and return the file's sha256."""
    check_target(out, fmt)
    study = open_study(url, name)
    ranked = completed_by_validation(study)
    if trial_number is None:
        trial = ranked[0]
    else:
        matches = [t for t in ranked if t.number == trial_number]
        if not matches:
            raise UserError(f"trial {trial_number} of {name!r} did not complete; completed trials: {', '.join(str(t.number) for t in sorted(ranked, key=lambda t: t.number))}")
        trial = matches[0]
    model, payload = trial_checkpoint(study, trial, artifacts_dir)
    splits = _study_splits(study)
    test_accuracy = evaluate(model, splits.test, torch.device("cpu")) if len(splits.test) else None
    info = _export_info(study, splits, payload["model_spec"], [trial], trial.values[0], test_accuracy)
    result = export_model(model, out, fmt, info)
    test_text = accuracy("test", test_accuracy, len(splits.test)) if test_accuracy is not None else "no test split"
    console.print(f"exported trial {trial.number}: {accuracy('validation', trial.values[0])}, {test_text}")
    console.print(f"wrote {result.path} ({fmt}), sha256 {result.sha256}, model card {result.card}")
    return result.sha256


def _export_info(study: optuna.Study, splits: Splits, spec: dict, trials: list[FrozenTrial], val_accuracy: float, test_accuracy: float | None) -> ExportInfo:
    """What an export records: the trial(s), their parameters and training, the data and its splits."""
    settings = StudySettings.load(study)
    single = len(trials) == 1 and spec.get("name") != "ensemble"
    params = trials[0].params if single else {str(t.number): t.params for t in trials}
    configs = [t.user_attrs.get("train_config") for t in trials]
    subset = f", training on its first {settings.train_subset:,} images" if settings.train_subset else ""
    return ExportInfo(
        model_spec=spec, val_accuracy=val_accuracy, test_accuracy=test_accuracy, study=study.study_name,
        trials=tuple(t.number for t in trials), params=params,
        train_config=configs[0] if single else {str(t.number): c for t, c in zip(trials, configs)},
        data=f"{splits.source} (profile {settings.profile}{subset}; data digest {splits.digest})",
        split_sizes={"train": len(splits.train), "validation": len(splits.val), "test": len(splits.test)},
    )


def train_from_study(url: str | None, name: str, epochs: int | None, device: str, save: Path | None) -> float:
    """Retrain the best configuration on train + validation; its test accuracy is the honest final figure."""
    study = open_study(url, name)
    best = completed_by_validation(study)[0]
    settings = StudySettings.load(study)
    config = TrainConfig(**best.user_attrs["train_config"]) if "train_config" in best.user_attrs else None
    if config is None:
        raise UserError(f"trial {best.number} has no recorded training configuration; it was made by an older mnist-hpo")
    epochs = epochs or settings.epochs
    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}")
    config = replace(config, epochs=epochs)
    splits = _study_splits(study)
    joined = Split(torch.cat([splits.train.images, splits.val.images]), torch.cat([splits.train.labels, splits.val.labels]))
    target = resolve_device(device)
    torch.manual_seed(config.seed)
    model = build_model(best.user_attrs["model_spec"])
    console.print(f"retraining trial {best.number}'s configuration on train + validation ({len(joined):,} images) for {epochs} epochs on {target}")
    # No validation split is left to select on: the last epoch is the model, judged once on test.
    result = train(model, joined, splits.test, replace(config, epochs=epochs), target, on_epoch=lambda r: console.print(f"epoch {r.epoch}/{epochs} train loss {r.train_loss:.4f}"))
    final = result.history[-1].val_accuracy
    console.print(f"final {accuracy('test', final, len(splits.test))} (trained on train + validation, not used for any choice)")
    if save:
        save_checkpoint(save, result.model, best.user_attrs["model_spec"], {"test_accuracy": final}, {"study": name, "trial": best.number})
    return final


def build_ensemble(url: str | None, name: str, top_k: int, out: Path, artifacts_dir: Path | None, device: str = "auto", fmt: str = "pt") -> float:
    """Average the softmax of the K best trials by validation; report each member and the ensemble; export it as one model."""
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    check_target(out, fmt)
    study = open_study(url, name)
    chosen = completed_by_validation(study)[:top_k]
    if len(chosen) < top_k:
        console.print(f"only {len(chosen)} completed trials; the ensemble uses them all")
    splits = _study_splits(study)
    target = resolve_device(device)
    members, specs = [], []
    table = Table("member", "validation accuracy", "test accuracy")
    for trial in chosen:
        model, payload = trial_checkpoint(study, trial, artifacts_dir)
        members.append(model)
        specs.append(payload["model_spec"])
        table.add_row(f"trial {trial.number}", f"{100 * evaluate(model, splits.val, target):.2f}%", f"{100 * evaluate(model, splits.test, target):.2f}%")
    ensemble = SoftmaxAverage(members).eval()
    metrics = {"val_accuracy": evaluate(ensemble, splits.val, target), "test_accuracy": evaluate(ensemble, splits.test, target)}
    table.add_row(f"ensemble of {len(members)}", f"{100 * metrics['val_accuracy']:.2f}%", f"{100 * metrics['test_accuracy']:.2f}%")
    console.print(table)
    info = _export_info(study, splits, {"name": "ensemble", "members": specs}, chosen, metrics["val_accuracy"], metrics["test_accuracy"])
    result = export_model(ensemble, out, fmt, info)
    console.print(f"wrote {result.path} ({fmt}), sha256 {result.sha256}, model card {result.card}")
    return metrics["test_accuracy"]
