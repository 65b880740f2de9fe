"""Self-describing checkpoints: weights plus the plain-data spec needed to rebuild the network.

Files are written atomically and read with ``torch.load(weights_only=True)``, so loading a
checkpoint can never run code. A checkpoint carries its model spec, metrics named by split, the
input its network expects and the library versions that produced it.

Every mnist-hpo model file (this checkpoint and the exports) carries ``format_version``. Older
formats are migrated on load; a newer one fails with one line naming both versions and the fix.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import mnist_hpo
from mnist_hpo.errors import UserError
from mnist_hpo.files import atomic_write
from mnist_hpo.models import build_model
from mnist_hpo.versions import library_versions

FORMAT = "mnist-hpo-checkpoint"
#: 1: spec, weights, metrics, versions. 2: adds ``network_input`` (what the stored network is fed).
FORMAT_VERSION = 2
OLDEST_FORMAT_VERSION = 1

#: What every network of mnist-hpo is fed: the trainer's scaling of raw uint8 pixels (see DeviceLoader).
NETWORK_INPUT = {
    "pixels": "uint8 N×28×28, 0-255, white digit (255) on black (0), as MNIST and Kaggle store them",
    "network_input": "float32 N×1×28×28 = pixels / 127.5 - 1 (range -1..1)",
}


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, not ours or for another architecture."""


def check_format_version(name: str, found: object, written_by: object) -> int:
    """The file's format version if this mnist-hpo reads it, else a one-line error with the fix."""
    ours = mnist_hpo.__version__
    writer = f"mnist-hpo {written_by}" if written_by else "an unknown mnist-hpo"
    if not isinstance(found, int) or isinstance(found, bool):
        raise CheckpointError(f"{name} has no valid format version ({found!r}); re-export it with `mnist-hpo export`")
    if found > FORMAT_VERSION:
        raise CheckpointError(
            f"{name} is model format {found}, written by {writer}; this mnist-hpo {ours} reads formats "
            f"{OLDEST_FORMAT_VERSION}-{FORMAT_VERSION}: upgrade (pip install 'mnist-hpo>={written_by or ours}') or re-export it with mnist-hpo {ours}"
        )
    if found < OLDEST_FORMAT_VERSION:
        raise CheckpointError(
            f"{name} is model format {found}, written by {writer}; this mnist-hpo {ours} reads formats "
            f"{OLDEST_FORMAT_VERSION}-{FORMAT_VERSION}: re-export it with `mnist-hpo export`, or read it with {writer}"
        )
    return found


def _v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """Format 1 did not record the network's input; every format-1 network was trained on the same scaling."""
    return {**payload, "network_input": dict(NETWORK_INPUT), "format_version": 2}


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def checkpoint_bytes(model: nn.Module, spec: dict, metrics: dict[str, float] | None = None, extra: dict | None = None) -> bytes:
    """Serialise a model with its spec; ``metrics`` keys name their split (``val_accuracy``...)."""
    payload = {
        **(extra or {}),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_spec": spec,
        "network_input": dict(NETWORK_INPUT),
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
    """The checkpoint's payload from a file or from bytes (an artifact), loaded with weights_only, migrated to this format."""
    name = name or ("checkpoint bytes" if isinstance(source, bytes) else str(source))
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise CheckpointError(f"checkpoint {name} does not exist; pass the path of a file written by `mnist-hpo export` or `train --save`")
    try:
        payload = torch.load(io.BytesIO(source) if isinstance(source, bytes) else Path(source), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(
            f"checkpoint {name} cannot be read safely ({_load_failure(exc)}); re-export it with `mnist-hpo export`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{name} is not an mnist-hpo checkpoint; export one with `mnist-hpo export --study NAME --out FILE`")
    version = check_format_version(name, payload.get("format_version"), (payload.get("versions") or {}).get("mnist_hpo"))
    while version < FORMAT_VERSION:
        payload = MIGRATIONS[version](payload)
        version = payload["format_version"]
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


def build_network(spec: Any, state_dict: dict[str, torch.Tensor], name: str) -> nn.Module:
    """The network a spec describes with these weights, in eval mode; a mismatch is the file's fault."""
    try:
        model = build_model(spec)
        model.load_state_dict(state_dict)
    except (RuntimeError, KeyError, TypeError, AttributeError, UserError):
        raise CheckpointError(f"{name} holds weights that do not fit its architecture {str(spec)[:80]}; re-export it") from None
    return model.eval()


def load_checkpoint(source: Path | bytes, name: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a checkpoint describes and load its weights (eval mode)."""
    name = name or ("checkpoint bytes" if isinstance(source, bytes) else str(source))
    payload = read_checkpoint(source, name)
    return build_network(payload["model_spec"], payload["state_dict"], f"checkpoint {name}"), payload
