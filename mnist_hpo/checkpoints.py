"""Self-describing checkpoints: weights plus the plain-data spec needed to rebuild the network.

Files are written atomically and read with ``torch.load(weights_only=True)``, so loading a
checkpoint can never run code. A checkpoint carries its model spec, metrics named by split and
the library versions that produced it.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_hpo.errors import UserError
from mnist_hpo.files import atomic_write
from mnist_hpo.models import build_model
from mnist_hpo.versions import library_versions

FORMAT = "mnist-hpo-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, not ours or for another architecture."""


def checkpoint_bytes(model: nn.Module, spec: dict, metrics: dict[str, float] | None = None, extra: dict | None = None) -> bytes:
    """Serialise a model with its spec; ``metrics`` keys name their split (``val_accuracy``...)."""
    import io

    payload = {
        **(extra or {}),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_spec": spec,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": dict(metrics or {}),
        "versions": library_versions(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(path: Path, model: nn.Module, spec: dict, metrics: dict[str, float] | None = None, extra: dict | None = None) -> str:
    """Write the checkpoint atomically and return its sha256."""
    data = checkpoint_bytes(model, spec, metrics, extra)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def read_checkpoint(source: Path | bytes, name: str | None = None) -> dict[str, Any]:
    """The checkpoint's payload from a file or from bytes (an artifact), loaded with weights_only."""
    import io

    name = name or str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise CheckpointError(f"checkpoint {name} does not exist; pass the path of a file written by `mnist-hpo export` or `train --save`")
    try:
        payload = torch.load(io.BytesIO(source) if isinstance(source, bytes) else Path(source), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"checkpoint {name} cannot be read safely ({_load_failure(exc)}); re-export it with `mnist-hpo export`") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{name} is not an mnist-hpo checkpoint; export one with `mnist-hpo export --study NAME --out FILE`")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{name} is checkpoint format {payload.get('format_version')}, this mnist-hpo reads {FORMAT_VERSION}; re-export it with this version")
    return payload


def _load_failure(exc: Exception) -> str:
    """The useful line of torch's error: what a weights-only load refused, or that it is no torch file."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    refused = [line.strip() for line in text.splitlines() if "Unsupported global" in line]
    if refused:
        return refused[0][:120]
    if isinstance(exc, (pickle.UnpicklingError, RuntimeError, EOFError)) or not text:
        return "not a PyTorch checkpoint or truncated"
    return text.splitlines()[0][:120]


def load_checkpoint(source: Path | bytes, name: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a checkpoint describes and load its weights (eval mode)."""
    payload = read_checkpoint(source, name)
    name = name or str(source)
    try:
        model = build_model(payload["model_spec"])
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError, AttributeError, UserError):
        raise CheckpointError(
            f"checkpoint {name} holds weights that do not fit its architecture "
            f"{str(payload.get('model_spec'))[:80]}; re-export it"
        ) from None
    return model.eval(), payload
