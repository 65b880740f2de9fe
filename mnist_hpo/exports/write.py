"""``export_model``: one entry point for every format, with the same output-path rules for all.

The output is checked before anything is computed, every byte is produced in memory, and the
file and its model card are staged beside their targets and renamed into place: a failure leaves
the old files (or none), never half of one. A missing parent folder is created, for every format.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from pathlib import Path

from torch import nn

from mnist_hpo.errors import UserError
from mnist_hpo.exports import onnx_format, pt2_format, pt_format, safetensors_format
from mnist_hpo.exports.card import card_path, card_text
from mnist_hpo.exports.info import DEFAULT_INPUT_DTYPE, INPUT_DTYPES, ExportInfo, ExportResult, metadata

EXPORT_FORMATS = ("pt", "safetensors", "onnx", "pt2")


def export_model(model: nn.Module, out: Path, fmt: str, info: ExportInfo, input_dtype: str = DEFAULT_INPUT_DTYPE) -> ExportResult:
    """Write ``model`` (a network or a SoftmaxAverage ensemble) as ``fmt`` to ``out``, with ``OUT.md`` beside it.

    ``input_dtype`` is the pixel dtype the ONNX and pt2 programs take (float32 or uint8, values 0-255).
    """
    out = Path(out)
    check_target(out, fmt, input_dtype)
    card = card_path(out)
    network = copy.deepcopy(model).cpu().eval()  # the caller's model keeps its device and mode
    props = metadata(info, network, fmt, input_dtype)
    if fmt == "pt":
        data = pt_format.to_bytes(network, info, props)
    else:
        data = {"safetensors": safetensors_format, "onnx": onnx_format, "pt2": pt2_format}[fmt].to_bytes(network, props, input_dtype)
    digest = hashlib.sha256(data).hexdigest()
    write_together({out: data, card: card_text(info, fmt, out, digest, props).encode()})
    return ExportResult(out, fmt, digest, card)


def check_target(out: Path, fmt: str, input_dtype: str = DEFAULT_INPUT_DTYPE) -> None:
    """Refuse an unknown format or an unusable output before any work: call it first, then export."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
    if input_dtype not in INPUT_DTYPES:
        raise UserError(f"unknown input dtype {input_dtype!r}; choose from {', '.join(INPUT_DTYPES)}")
    for path in (Path(out), card_path(Path(out))):
        check_output(path, fmt)


def check_output(path: Path, fmt: str) -> None:
    """One-line errors for a path that is a folder, lies under a file, or cannot be written."""
    if path.is_dir():
        raise UserError(f"output {path} is a folder; pass a file name such as {path / ('model.' + fmt)}")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"output {path} lies under {existing}, which is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output {path} cannot be written ({existing} is read-only); choose a writable --out")


def write_together(files: dict[Path, bytes]) -> None:
    """Stage every file in its target folder (created if missing), then rename them all into place."""
    staged: list[tuple[str, Path]] = []
    current = next(iter(files))
    try:
        for current, data in files.items():
            current.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=current.parent, prefix=f".{current.name}.", suffix=".tmp")
            staged.append((tmp, current))
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {current} ({exc.strerror or exc}); choose a writable --out") from None
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
