"""`mnist-hpo export` and `mnist-hpo ensemble`: a trial, or the K best, as a file that runs elsewhere."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from rich.table import Table

from mnist_hpo.checkpoints import save_checkpoint
from mnist_hpo.commands._trials import study_splits, trial_model
from mnist_hpo.commands.status import completed_by_validation, open_study
from mnist_hpo.console import accuracy, console
from mnist_hpo.errors import UserError
from mnist_hpo.files import atomic_write
from mnist_hpo.models import SoftmaxAverage
from mnist_hpo.trainer import evaluate, resolve_device
from mnist_hpo.versions import library_versions

EXPORT_FORMATS = ("pt", "safetensors", "onnx")


def export_trial(url: str | None, name: str, trial_number: int | None, out: Path, fmt: str, artifacts: Path | None) -> str:
    """Write one trial's kept weights (the best validation trial unless ``trial_number``); returns the file's sha256."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
    study, storage = open_study(url, name)
    ranked = completed_by_validation(study)
    if trial_number is None:
        trial = ranked[0]
    else:
        matches = [t for t in ranked if t.number == trial_number]
        if not matches:
            done = ", ".join(str(t.number) for t in sorted(ranked, key=lambda t: t.number))
            raise UserError(f"trial {trial_number} of {name!r} did not complete, so it has no model; completed trials: {done}")
        trial = matches[0]
    model, payload = trial_model(storage, study, trial, artifacts)
    splits = study_splits(study)
    metrics = {"val_accuracy": trial.values[0], "test_accuracy": evaluate(model, splits.test, torch.device("cpu"))}
    extra = {"study": name, "trial": trial.number, "params": trial.params}
    digest = write_model(model, payload["model_spec"], metrics, extra, out, fmt)
    console.print(f"exported trial {trial.number}: {accuracy('validation', metrics['val_accuracy'])}, "
                  f"{accuracy('test', metrics['test_accuracy'], len(splits.test))} (reported only)")
    console.print(f"wrote {out} ({fmt}), sha256 {digest}")
    return digest


def build_ensemble(url: str | None, name: str, top_k: int, out: Path, artifacts: Path | None, device: str = "auto") -> float:
    """Average the softmax of the K best trials by validation; report each member and the ensemble on both splits."""
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    target = resolve_device(device)
    study, storage = open_study(url, name)
    chosen = completed_by_validation(study)[:top_k]
    if len(chosen) < top_k:
        console.print(f"only {len(chosen)} completed trials; the ensemble uses them all")
    splits = study_splits(study)
    members, specs = [], []
    table = Table("member", "validation accuracy", "test accuracy (reported only)")
    for trial in chosen:
        model, payload = trial_model(storage, study, trial, artifacts)
        members.append(model)
        specs.append(payload["model_spec"])
        table.add_row(f"trial {trial.number}", f"{100 * evaluate(model, splits.val, target):.2f}%", f"{100 * evaluate(model, splits.test, target):.2f}%")
    ensemble = SoftmaxAverage(members).eval()
    metrics = {"val_accuracy": evaluate(ensemble, splits.val, target), "test_accuracy": evaluate(ensemble, splits.test, target)}
    table.add_row(f"ensemble of {len(members)}", f"{100 * metrics['val_accuracy']:.2f}%", f"{100 * metrics['test_accuracy']:.2f}%")
    console.print(table)
    digest = save_checkpoint(out, ensemble, {"name": "ensemble", "members": specs}, metrics, {"study": name, "trials": [t.number for t in chosen]})
    console.print(f"wrote {out}, sha256 {digest}")
    return metrics["test_accuracy"]


def write_model(model: torch.nn.Module, spec: dict, metrics: dict, extra: dict, out: Path, fmt: str) -> str:
    out = Path(out)
    if fmt == "pt":
        return save_checkpoint(out, model, spec, metrics, extra)
    if fmt == "safetensors":
        from safetensors.torch import save

        data = save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
        sidecar = {"model_spec": spec, "metrics": metrics, "versions": library_versions(), **extra}
        atomic_write(out, data)
        atomic_write(out.with_name(out.name + ".json"), json.dumps(sidecar, indent=2).encode())
        return hashlib.sha256(data).hexdigest()
    return _write_onnx(model, out)


def _write_onnx(model: torch.nn.Module, out: Path) -> str:
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the onnx extra: pip install 'mnist-hpo[onnx]'") from None
    import io

    buffer = io.BytesIO()
    torch.onnx.export(model.eval(), (torch.zeros(1, 1, 28, 28),), buffer, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    atomic_write(out, data)
    return hashlib.sha256(data).hexdigest()
