"""``open_export``: any file mnist-hpo wrote, recognised by its content, as one ``logits`` function.

The extension is ignored: a zip with ``data.pkl`` is a checkpoint, a zip with ``archive_format``
a torch.export program, an 8-byte length followed by JSON a safetensors file, a protobuf that
starts with its IR version an ONNX graph. Whatever the format, ``ExportedModel.logits`` takes
uint8 N×28×28 images and returns float32 N×10 logits on the CPU.

Model files are data, never code: nothing from a file is unpickled except by
``torch.load(weights_only=True)``, a ``.pt2`` program is never deserialized (its weights run in
the network its spec names), and every file is bounded (size, zip members, header, the network its
spec describes) before anything it describes is allocated. A file that is not one of ours is a
one-line ``CheckpointError``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mnist_hpo.checkpoints import CheckpointError, check_format_version, load_checkpoint, read_model_file, zip_entries
from mnist_hpo.exports import onnx_format, pt2_format, safetensors_format
from mnist_hpo.exports.info import EXPORT_FORMAT, INPUT_DTYPES
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
            names = list(zip_entries(data, checksums=False))
        except ValueError:  # a damaged or crafted zip: its reader names what is wrong
            return "pt2" if any(mark in data for mark in (b"/archive_format", b"/data/weights/", b"/models/model.json")) else "pt"
        return "pt2" if pt2_format.is_pt2(names) else "pt"
    if data[:2] == b"\x80\x02":  # torch.save's legacy (pre-zip) pickle format: refused by the checkpoint reader
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
    data = read_model_file(Path(path), str(path))
    fmt, name = sniff(data), str(path)
    if fmt is None:
        raise CheckpointError(
            f"checkpoint {name} cannot be read: it is none of the formats mnist-hpo writes (pt, pt2, safetensors, onnx); re-export it with `mnist-hpo export`"
        )
    if fmt == "pt":
        model, payload = load_checkpoint(data, name)
        return _network(fmt, {k: v for k, v in payload.items() if k != "state_dict"}, model, device)
    if fmt == "safetensors":
        layout, metadata = safetensors_format.read_header(data, name)
        props = _checked(metadata, name, fmt)
        return _network(fmt, props, safetensors_format.load(data, name, props, layout), device)
    if fmt == "pt2":
        files, metadata = pt2_format.read_archive(data, name)
        props = _checked(metadata, name, fmt)
        run = pt2_format.load(files, name, props)
        return ExportedModel(fmt, props, _raw_pixels(run, _input_dtype(props, name)))
    graph, metadata = onnx_format.parse(data, name)
    props = _checked(metadata, name, fmt)
    run, dtype = onnx_format.load(data, graph, name)
    return ExportedModel(fmt, props, _raw_pixels(run, dtype))


def _network(fmt: str, props: dict[str, Any], model: torch.nn.Module, device: str | torch.device) -> ExportedModel:
    target = resolve_device(device)
    return ExportedModel(fmt, props, lambda images: predict_logits(model, images, target, BATCH_SIZE))


def _raw_pixels(run: Callable[[torch.Tensor], torch.Tensor], dtype: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The programs take N×1×28×28 raw pixels of their own dtype; mnist-hpo's images are uint8 N×28×28."""
    return lambda images: run(images.unsqueeze(1).to(getattr(torch, dtype)))


def _input_dtype(props: dict[str, Any], name: str) -> str:
    dtype = props.get("input_dtype", "float32")
    if dtype not in INPUT_DTYPES:
        raise CheckpointError(f"{name} names input dtype {str(dtype)[:20]!r}, none of {', '.join(INPUT_DTYPES)}; re-export it")
    return dtype


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
