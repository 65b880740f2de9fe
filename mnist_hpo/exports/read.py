"""``open_export``: any file mnist-hpo wrote, recognised by its content, as one ``logits`` function.

The extension is ignored: a zip with ``data.pkl`` is a checkpoint, a zip with ``archive_format``
a torch.export program, an 8-byte length followed by JSON a safetensors file, a protobuf that
starts with its IR version an ONNX graph. Whatever the format, ``ExportedModel.logits`` takes
uint8 N×28×28 images and returns float32 N×10 logits on the CPU.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mnist_hpo.checkpoints import CheckpointError, check_format_version, load_checkpoint
from mnist_hpo.exports import onnx_format, pt2_format, safetensors_format
from mnist_hpo.exports.info import EXPORT_FORMAT
from mnist_hpo.trainer import predict_logits, resolve_device

BATCH_SIZE = 2048


@dataclass(frozen=True)
class ExportedModel:
    """An opened export: its format, its metadata and a function from uint8 image batches to logits."""

    format: str
    metadata: dict[str, Any]
    run: Callable[[torch.Tensor], torch.Tensor]

    def logits(self, images: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """Logits for uint8 N×28×28 images, in batches."""
        chunks = [self.run(images[start : start + batch_size]).float() for start in range(0, len(images), batch_size)]
        return torch.cat(chunks) if chunks else torch.empty(0, 10)


def sniff(data: bytes) -> str | None:
    """The format of a model file's bytes, or None for anything mnist-hpo does not write."""
    if data[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            return "pt"  # a truncated zip: torch.load names the damage
        return "pt2" if pt2_format.is_pt2(names) else "pt"
    if data[:2] == b"\x80\x02":  # torch.save's legacy (pre-zip) pickle format
        return "pt"
    if safetensors_format.looks_like_safetensors(data[:9], len(data)):
        return "safetensors"
    if onnx_format.looks_like_onnx(data[:2]):
        return "onnx"
    return None


def open_export(path: Path, device: str | torch.device = "cpu") -> ExportedModel:
    """Open any export; a bad file is a one-line ``CheckpointError`` naming it.

    ``device`` places the networks of pt and safetensors files; ONNX graphs and pt2 programs run on the CPU.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise CheckpointError(
            f"checkpoint {path} {what}; pass the path of a file written by `mnist-hpo export`, `ensemble` or `train --save`"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror}); check its permissions") from None
    fmt, name = sniff(data), str(path)
    if fmt is None:
        raise CheckpointError(
            f"checkpoint {name} cannot be read: it is none of the formats mnist-hpo writes (pt, pt2, safetensors, onnx); re-export it with `mnist-hpo export`"
        )
    if fmt == "pt":
        model, payload = load_checkpoint(data, name)
        return _network(fmt, {k: v for k, v in payload.items() if k != "state_dict"}, model, device)
    if fmt == "safetensors":
        props = _checked(safetensors_format.header_metadata(data, name), name, fmt)
        return _network(fmt, props, safetensors_format.load(data, name, props), device)
    if fmt == "pt2":
        run, props = pt2_format.load(data, name)
        return ExportedModel(fmt, _checked(props, name, fmt), _raw_pixels(run, props.get("input_dtype", "float32")))
    run, props, dtype = onnx_format.load(data, name)
    return ExportedModel(fmt, _checked(props, name, fmt), _raw_pixels(run, dtype))


def _network(fmt: str, props: dict[str, Any], model: torch.nn.Module, device: str | torch.device) -> ExportedModel:
    target = resolve_device(device)
    return ExportedModel(fmt, props, lambda images: predict_logits(model, images, target, BATCH_SIZE))


def _raw_pixels(run: Callable[[torch.Tensor], torch.Tensor], dtype: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The programs take N×1×28×28 raw pixels of their own dtype; mnist-hpo's images are uint8 N×28×28."""
    return lambda images: run(images.unsqueeze(1).to(getattr(torch, dtype)))


def _checked(props: dict[str, Any], name: str, fmt: str) -> dict[str, Any]:
    """The metadata if it is mnist-hpo's, in a format version this mnist-hpo reads."""
    if props.get("format") != EXPORT_FORMAT:
        raise CheckpointError(
            f"{name} is a {fmt} file without mnist-hpo's metadata (not exported by mnist-hpo, or by one older than model format 2); "
            f"re-export it with `mnist-hpo export --format {fmt}`"
        )
    try:
        version = int(props.get("format_version", ""))
        writer = json.loads(props.get("versions") or "{}").get("mnist_hpo")
    except (ValueError, AttributeError):
        version, writer = props.get("format_version"), None
    check_format_version(name, version, writer)
    return props
