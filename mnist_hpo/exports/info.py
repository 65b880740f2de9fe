"""What an export says about itself: the facts the command layer passes in, and the flat metadata.

Every format stores the same string-to-string metadata (ONNX ``metadata_props``, the safetensors
header, the ``.pt2`` archive's ``extra/mnist_hpo.json``), so one reader understands them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from mnist_hpo.checkpoints import FORMAT_VERSION, NETWORK_INPUT, library_versions
from mnist_hpo.models import count_parameters, mult_adds

#: The ``format`` value of every export's metadata (the ``.pt`` checkpoint keeps its own).
EXPORT_FORMAT = "mnist-hpo-export"
INPUT_NAME = "pixels"
OUTPUT_NAMES = ("logits", "probabilities")
LABELS = "0,1,2,3,4,5,6,7,8,9"
INPUT_DTYPES = ("float32", "uint8")
DEFAULT_INPUT_DTYPE = "float32"

#: The input convention of the self-contained formats (ONNX, pt2): raw pixels, preprocessing inside.
RAW_PIXELS = (
    "raw pixels as MNIST and Kaggle store them: N×1×28×28 {dtype}, values 0-255, white digit (255) on black (0); "
    "an image whose values all lie within 0-1 is taken as scaled to 0-1 and multiplied by 255; "
    "any value outside 0-255 gives NaN outputs for that image"
)
OUTPUTS = "logits N×10 (for an ensemble, the log of the mean member probability) and probabilities N×10 (softmax); class i is digit i"


@dataclass(frozen=True)
class ExportInfo:
    """The facts about a model the export records; accuracies name their split, test only if measured."""

    model_spec: dict[str, Any]
    val_accuracy: float
    test_accuracy: float | None = None
    study: str | None = None
    trials: tuple[int, ...] = ()  # one trial, or an ensemble's members
    params: dict[str, Any] = field(default_factory=dict)  # the trial's parameters; for an ensemble {trial number: parameters}
    train_config: dict[str, Any] | None = None
    data: str = ""  # where the images came from, e.g. "fixture (the bundled real-MNIST subset)"
    split_sizes: dict[str, int] = field(default_factory=dict)  # {"train": 55000, "validation": 5000, "test": 10000}

    @property
    def is_ensemble(self) -> bool:
        return self.model_spec.get("name") == "ensemble"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    sha256: str
    card: Path


def input_convention(fmt: str, input_dtype: str) -> str:
    """What a file of this format must be fed, in one sentence."""
    if fmt in ("onnx", "pt2"):
        return RAW_PIXELS.format(dtype=input_dtype)
    return (
        f"the stored network takes {NETWORK_INPUT['network_input']} of {NETWORK_INPUT['pixels']}; mnist-hpo's predict applies this scaling"
    )


def split_line(info: ExportInfo, split: str) -> str:
    size = info.split_sizes.get(split)
    return f"{split} ({size:,} images)" if size else split


def metadata(info: ExportInfo, model: nn.Module, fmt: str, input_dtype: str) -> dict[str, str]:
    """The flat metadata every format stores (JSON for the nested values)."""
    props = {
        "format": EXPORT_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "kind": fmt,
        "model_spec": json.dumps(info.model_spec),
        "input": input_convention(fmt, input_dtype),
        "input_name": INPUT_NAME,
        "input_dtype": input_dtype,
        "outputs": OUTPUTS,
        "labels": LABELS,
        "network_input": json.dumps(NETWORK_INPUT),
        "study": info.study or "",
        "trial": ", ".join(str(t) for t in info.trials),
        "params": json.dumps(info.params),
        "val_accuracy": repr(float(info.val_accuracy)),
        "validation_split": split_line(info, "validation"),
        "selection": "chosen on validation accuracy only; test accuracy is reported, never used to choose",
        "train_config": json.dumps(info.train_config),
        "data": info.data,
        "parameters": str(count_parameters(model)),
        "mult_adds": str(mult_adds(model)),
        "versions": json.dumps(library_versions()),
    }
    if info.test_accuracy is not None:
        props["test_accuracy"] = repr(float(info.test_accuracy))
        props["test_split"] = split_line(info, "test")
    return props
