"""``.pt2``: a torch.export program, preprocessing included, that ``torch.export.load`` runs alone.

The metadata travels inside the archive as ``extra/mnist_hpo.json``. mnist-hpo itself never hands
a ``.pt2`` to ``torch.export.load``, because that is not data loading: it unpickles members (legacy
weights, pickled constants, sample inputs it cannot load weights-only) and runs Python the program
carries (its ``guards_code``, ``sympify`` of its shape expressions, any ``torch.*`` callable named as
an operator). Instead mnist-hpo reads the raw weights the archive holds and runs them in the network
the metadata's ``model_spec`` describes, behind the program's own preprocessing (``RawPixels``).

An archive is refused unless it holds exactly the members ``torch.export.save`` writes for
mnist-hpo's programs (``_archive.check_members``), and nothing that ``torch.export.load`` would
unpickle or run as code (``_archive.check_program``): a file mnist-hpo accepts is data for it and,
as far as those loaders go, for torch too.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mnist_hpo.checkpoints import CheckpointError, build_network, check_weights, zip_entries
from mnist_hpo.exports import _archive
from mnist_hpo.exports.program import RawPixels, export_program

EXTRA_NAME = "mnist_hpo.json"
_PREFIX = "network."  # RawPixels holds the network under this name
_REEXPORT = "re-export it with `mnist-hpo export --format pt2`"


def to_bytes(network: nn.Module, props: dict[str, str], input_dtype: str) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(export_program(network, input_dtype), buffer, extra_files={EXTRA_NAME: json.dumps(props)})
    return buffer.getvalue()


def is_pt2(names: list[str]) -> bool:
    return any(name.split("/", 1)[-1] == "archive_format" for name in names)


def read_archive(data: bytes, name: str) -> tuple[dict[str, bytes], dict[str, str]]:
    """The archive's members by name below its root folder, and its metadata; anything mnist-hpo never writes is refused."""
    try:
        entries = zip_entries(data)
    except ValueError as exc:
        raise CheckpointError(f"{name} is not a .pt2 archive mnist-hpo can read safely ({exc}); {_REEXPORT}") from None
    members = _archive.check_members(entries, name)
    files = {member: data[entry.start : entry.start + entry.size] for member, entry in members.items()}
    _archive.check_markers(files, name)
    try:
        props = json.loads(files[f"extra/{EXTRA_NAME}"])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{name} has damaged mnist-hpo metadata; {_REEXPORT}") from None
    if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
        raise CheckpointError(f"{name} has damaged mnist-hpo metadata (not a map of strings); {_REEXPORT}")
    return files, props


def load(files: dict[str, bytes], name: str, props: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ``logits`` function on raw-pixel batches: the archive's weights in the network its spec describes."""
    _archive.check_program(files, name)
    _archive.check_sample_inputs(files["data/sample_inputs/model.pt"], name)
    try:
        spec = json.loads(props["model_spec"])
    except (KeyError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{name} has no readable model_spec in its metadata; {_REEXPORT}") from None
    layout = _archive.weight_layout(files, name)
    keys = {key: key.removeprefix(_PREFIX) for key in layout}
    check_weights(spec, {keys[key]: (weight.shape, weight.dtype) for key, weight in layout.items()}, name)
    state = {
        keys[key]: _tensor(files[f"data/weights/{weight.path}"], weight, f"{name}: weight {key[:60]!r}") for key, weight in layout.items()
    }
    module = RawPixels(build_network(spec, state, name)).eval()

    def logits(pixels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(pixels)[0]

    return logits


def _tensor(raw: bytes, weight: _archive.Weight, what: str) -> torch.Tensor:
    """The weight as a view of its raw storage, once its sizes, strides and offset are known to lie inside it."""
    if len(raw) % weight.dtype.itemsize:
        raise CheckpointError(f"{what} holds {len(raw):,} bytes, no whole number of {weight.dtype} values; {_REEXPORT}")
    storage = torch.frombuffer(bytearray(raw), dtype=weight.dtype) if raw else torch.empty(0, dtype=weight.dtype)
    if 0 not in weight.shape:
        last = weight.offset + sum((size - 1) * stride for size, stride in zip(weight.shape, weight.strides))
        if last >= len(storage):
            raise CheckpointError(f"{what} reaches past its {len(raw):,} bytes; {_REEXPORT}")
    elif not raw:
        return torch.zeros(weight.shape, dtype=weight.dtype)  # torch.export.save writes empty tensors as no bytes
    return torch.as_strided(storage, weight.shape, weight.strides, weight.offset)
