"""``.pt2``: a torch.export program, preprocessing included, that ``torch.export.load`` runs alone.

The metadata travels inside the archive as ``extra/mnist_hpo.json``. ``torch.export.load`` falls
back to unpickling for legacy or tensor-subclass members, so before mnist-hpo loads a ``.pt2`` it
checks that the archive holds only what ``torch.export.save`` writes for plain tensors.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable

import torch
from torch import nn

from mnist_hpo.checkpoints import CheckpointError
from mnist_hpo.exports.program import export_program

EXTRA_NAME = "mnist_hpo.json"
#: Members a plain-tensor program's archive may hold, relative to its root folder.
_ALLOWED_PREFIXES = ("models/", "extra/", ".data/", "data/sample_inputs/", "data/weights/weight_", "data/constants/tensor_")
_ALLOWED_FILES = ("archive_format", "archive_version", "byteorder", "version", ".format_version", ".storage_alignment")
_CONFIGS = ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json")


def to_bytes(network: nn.Module, props: dict[str, str], input_dtype: str) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(export_program(network, input_dtype), buffer, extra_files={EXTRA_NAME: json.dumps(props)})
    return buffer.getvalue()


def is_pt2(names: list[str]) -> bool:
    return any(name.split("/", 1)[-1] == "archive_format" for name in names)


def load(data: bytes, name: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, str]]:
    """The program's ``logits`` function on raw-pixel batches, and its metadata."""
    try:
        check_plain_tensors(data, name)
    except (zipfile.BadZipFile, KeyError, ValueError, AttributeError, IndexError):
        raise CheckpointError(f"{name} is a damaged .pt2 archive; re-export it with `mnist-hpo export --format pt2`") from None
    extra = {EXTRA_NAME: ""}
    try:
        program = torch.export.load(io.BytesIO(data), extra_files=extra)
    except Exception as exc:  # torch raises many types for a damaged archive
        raise CheckpointError(
            f"{name} is a .pt2 archive torch.export cannot load ({str(exc).splitlines()[0][:100]}); re-export it"
        ) from None
    try:
        props = json.loads(extra[EXTRA_NAME] or "{}")
    except json.JSONDecodeError:
        raise CheckpointError(f"{name} has damaged mnist-hpo metadata; re-export it with `mnist-hpo export --format pt2`") from None
    module = program.module()
    return (lambda pixels: module(pixels)[0]), props


def check_plain_tensors(data: bytes, name: str) -> None:
    """Refuse an archive with members that loading would unpickle (legacy weights, subclasses, objects)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = [member.split("/", 1)[-1] for member in archive.namelist()]
        root = archive.namelist()[0].split("/", 1)[0]
        unexpected = [m for m in members if m not in _ALLOWED_FILES and m not in _CONFIGS and not m.startswith(_ALLOWED_PREFIXES)]
        pickled = [m for m in members if m.startswith(("data/weights/", "data/constants/")) and m.endswith(".pt")]
        for config in _CONFIGS:
            if config in members:
                entries = json.loads(archive.read(f"{root}/{config}")).get("config", {})
                pickled += [
                    key
                    for key, entry in entries.items()
                    if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(("weight_", "tensor_"))
                ]
        for member in (m for m in members if m.startswith("data/sample_inputs/")):
            try:
                torch.load(io.BytesIO(archive.read(f"{root}/{member}")), weights_only=True)
            except Exception:
                pickled.append(member)
    if unexpected or pickled:
        raise CheckpointError(
            f"{name} holds members torch.export.load would unpickle ({', '.join((unexpected + pickled)[:3])}); mnist-hpo refuses it: re-export it with `mnist-hpo export --format pt2`"
        )
