"""`mnist-hpo export` and `mnist-hpo ensemble`: a trial, or the K best, as a file that runs elsewhere.

Every format (pt, safetensors, onnx, pt2) gets a model card beside it. Members are chosen on
validation; the test accuracy is measured for the record and labelled as test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial
from rich.table import Table

from mnist_hpo import storage as stores
from mnist_hpo.commands.status import completed_by_validation, open_study
from mnist_hpo.commands.trials import study_splits, trial_model
from mnist_hpo.console import accuracy, console
from mnist_hpo.data import Splits
from mnist_hpo.errors import UserError
from mnist_hpo.exports import DEFAULT_INPUT_DTYPE, ExportInfo, ExportResult, check_target, export_model
from mnist_hpo.models import SoftmaxAverage
from mnist_hpo.trainer import evaluate, resolve_device
from mnist_hpo.tuning import StudySettings, is_copied
from mnist_hpo.tuning.attrs import COPIED_ATTR, TRAIN_CONFIG_ATTR
from mnist_hpo.tuning.pbt import Segment, one_per_member


def export_trial(
    url: str | None,
    name: str,
    trial_number: int | None,
    out: Path,
    fmt: str,
    artifacts: str | Path | None,
    input_dtype: str = DEFAULT_INPUT_DTYPE,
) -> ExportResult:
    """Write one trial's kept weights (the best validation trial unless ``trial_number``): the file, its sha256 and card."""
    check_target(out, fmt, input_dtype)
    store = stores.open_artifacts(artifacts, create=False)  # a wrong folder, bucket or credentials: one line, first
    study, storage = open_study(url, name)
    ranked = completed_by_validation(study)
    if trial_number is None:
        trial = ranked[0]
    else:
        matches = [t for t in ranked if t.number == trial_number]
        copied = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number and is_copied(t)]
        if copied:
            source = copied[0].user_attrs[COPIED_ATTR]
            raise UserError(
                f"trial {trial_number} of {name!r} was copied from study {source['study']!r} (trial {source['trial']}) "
                f"by its warm start; export it from there: --study {source['study']} --trial {source['trial']}"
            )
        if not matches:
            done = ", ".join(str(t.number) for t in sorted(ranked, key=lambda t: t.number))
            raise UserError(f"trial {trial_number} of {name!r} did not complete, so it has no model; completed trials: {done}")
        trial = matches[0]
    model, payload = trial_model(storage, study, trial, store)
    splits = study_splits(study)
    test_accuracy = evaluate(model, splits.test, torch.device("cpu")) if len(splits.test) else None
    info = export_info(study, splits, payload["model_spec"], [trial], trial.values[0], test_accuracy)
    result = export_model(model, out, fmt, info, input_dtype)
    test_text = accuracy("test", test_accuracy, len(splits.test)) + " (reported only)" if test_accuracy is not None else "no test split"
    console.print(f"exported trial {trial.number}: {accuracy('validation', trial.values[0])}, {test_text}")
    console.print(f"wrote {result.path} ({fmt}), sha256 {result.sha256}, model card {result.card}")
    return result


def build_ensemble(
    url: str | None,
    name: str,
    top_k: int,
    out: Path | None,
    artifacts: str | Path | None,
    device: str = "auto",
    fmt: str = "pt",
    input_dtype: str = DEFAULT_INPUT_DTYPE,
) -> Ensemble:
    """Average the softmax of the K best trials by validation; report each member and the ensemble; export it as one model
    (``out`` None: only the network, scored)."""
    check_top_k(top_k)
    if out is not None:
        check_target(out, fmt, input_dtype)
    target = resolve_device(device)
    study, members = best_members(url, name, top_k, artifacts)
    splits = study_splits(study)
    table = Table("member", "validation accuracy", "test accuracy (reported only)")
    for trial, model, _ in members:
        segment = Segment.of(trial)
        table.add_row(
            f"trial {trial.number}" + (f" (member {segment.member})" if segment else ""),
            f"{100 * evaluate(model, splits.val, target):.2f}%",
            f"{100 * evaluate(model, splits.test, target):.2f}%",
        )
    ensemble = SoftmaxAverage([model for _, model, _ in members]).eval()
    metrics = {"val_accuracy": evaluate(ensemble, splits.val, target), "test_accuracy": evaluate(ensemble, splits.test, target)}
    table.add_row(f"ensemble of {len(members)}", f"{100 * metrics['val_accuracy']:.2f}%", f"{100 * metrics['test_accuracy']:.2f}%")
    console.print(table)
    done = Ensemble(ensemble, [trial for trial, _, _ in members], metrics["val_accuracy"], metrics["test_accuracy"])
    if out is None:
        return done
    specs = [payload["model_spec"] for _, _, payload in members]
    info = export_info(study, splits, {"name": "ensemble", "members": specs}, done.trials, done.val_accuracy, done.test_accuracy)
    done.export = export_model(ensemble, out, fmt, info, input_dtype)
    console.print(f"wrote {done.export.path} ({fmt}), sha256 {done.export.sha256}, model card {done.export.card}")
    return done


@dataclass
class Ensemble:
    """The mean softmax of the best trials by validation (eval mode); its accuracies; its file when exported."""

    model: torch.nn.Module
    trials: list[FrozenTrial]
    val_accuracy: float
    test_accuracy: float  # reported only: the members were chosen on validation
    export: ExportResult | None = None


def check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")


def best_members(
    url: str | None, name: str, top_k: int, artifacts: str | Path | None
) -> tuple[optuna.Study, list[tuple[FrozenTrial, torch.nn.Module, dict]]]:
    """The K best trials by validation (of a PBT study: the K best members) with their kept networks (eval mode) and
    checkpoint payloads."""
    check_top_k(top_k)
    store = stores.open_artifacts(artifacts, create=False)
    study, storage = open_study(url, name)
    chosen = one_per_member(completed_by_validation(study))[:top_k]  # a PBT study: its best members, one segment each
    if len(chosen) < top_k:
        what = "members" if StudySettings.load(study).pbt else "completed trials"
        console.print(f"only {len(chosen)} {what}; the ensemble uses them all")
    return study, [(trial, *trial_model(storage, study, trial, store)) for trial in chosen]


def export_info(
    study: optuna.Study, splits: Splits, spec: dict, trials: list[FrozenTrial], val_accuracy: float, test_accuracy: float | None
) -> ExportInfo:
    """What an export records: the trial(s), their parameters and training, the data and its splits."""
    settings = StudySettings.load(study)
    single = len(trials) == 1 and spec.get("name") != "ensemble"
    params = trials[0].params if single else {str(t.number): t.params for t in trials}
    configs = [t.user_attrs.get(TRAIN_CONFIG_ATTR) for t in trials]
    subset = f", training on its first {settings.train_subset:,} images" if settings.train_subset else ""
    return ExportInfo(
        model_spec=spec,
        val_accuracy=val_accuracy,
        test_accuracy=test_accuracy,
        study=study.study_name,
        trials=tuple(t.number for t in trials),
        params=params,
        train_config=configs[0] if single else {str(t.number): c for t, c in zip(trials, configs)},
        data=f"{splits.source} (profile {settings.profile}{subset}; data digest {splits.digest})",
        split_sizes={"train": len(splits.train), "validation": len(splits.val), "test": len(splits.test)},
    )
