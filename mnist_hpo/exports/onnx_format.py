"""``.onnx``: the preprocessed program converted by torch's exporter, described in ``metadata_props``.

The graph takes raw pixels (see ``program``); onnxruntime alone runs it. Both onnx and the
exporter's onnxscript come with the ``onnx`` extra; a missing extra is a one-line error.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mnist_hpo.checkpoints import CheckpointError
from mnist_hpo.errors import UserError
from mnist_hpo.exports import _onnx_graph
from mnist_hpo.exports.info import INPUT_NAME, LABELS, OUTPUT_NAMES
from mnist_hpo.exports.program import export_program

EXTRA_HINT = "pip install 'mnist-hpo[onnx]'"
#: The most all of a graph's values may take in one onnxruntime run (images are batched to fit).
MAX_RUN_BYTES = 512 * 2**20
_REEXPORT = _onnx_graph.REEXPORT


def to_bytes(network: nn.Module, props: dict[str, str], input_dtype: str) -> bytes:
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise UserError(f"ONNX export needs the onnx extra: {EXTRA_HINT}") from None
    program = export_program(network, input_dtype)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its steps on stdout
        converted = torch.onnx.export(program, dynamo=True, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), verbose=False)
    model = converted.model_proto
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    model.doc_string = props["input"]
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def looks_like_onnx(head: bytes) -> bool:
    """A ModelProto starts with its ir_version (protobuf field 1, a small varint)."""
    return len(head) >= 2 and head[0] == 0x08 and 1 <= head[1] <= 64


def parse(data: bytes, name: str) -> tuple[Any, dict[str, str]]:
    """The graph, parsed without reading any other file, and its metadata."""
    onnx = _onnx(name)
    try:
        model = onnx.load_model_from_string(data)  # from bytes: never reads external data
    except Exception:  # protobuf's DecodeError, or onnx's own errors for a damaged model
        raise CheckpointError(f"{name} is a damaged ONNX file (it does not parse); {_REEXPORT}") from None
    return model, {prop.key: prop.value for prop in model.metadata_props}


def load(data: bytes, model: Any, name: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """An onnxruntime session's ``logits`` function on raw-pixel batches, and its input dtype.

    Before onnxruntime sees the bytes, the parsed graph is checked (``_onnx_graph``): no tensor stored
    in another file (onnxruntime would open that path), only standard operators whose output sizes
    follow from their inputs' shapes, the signature of mnist-hpo's programs (one N×1×28×28 input
    named as ours, N×10 float logits and probabilities), and every value's size per image, so that
    images go to onnxruntime in batches whose values fit ``MAX_RUN_BYTES``.
    """
    _onnx_graph.check_contents(model, name)
    dtype = _onnx_graph.check_signature(model, name)
    per_image = _onnx_graph.bytes_per_image(model, name)
    chunk = max(1, MAX_RUN_BYTES // per_image)
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for damaged graphs
        raise CheckpointError(f"{name} is an ONNX file onnxruntime cannot load ({str(exc).splitlines()[0][:100]}); re-export it") from None

    def logits(pixels: torch.Tensor) -> torch.Tensor:
        chunks = []
        for start in range(0, len(pixels), chunk):  # so that one run's values stay within MAX_RUN_BYTES
            batch = pixels[start : start + chunk].numpy().astype(dtype)
            result = session.run([OUTPUT_NAMES[0]], {INPUT_NAME: batch})[0]
            if result.shape != (len(batch), len(LABELS.split(","))):
                raise CheckpointError(f"{name} gave logits of shape {list(result.shape)}, not N×10; {_REEXPORT}")
            chunks.append(torch.from_numpy(result))
        return torch.cat(chunks) if chunks else torch.empty(0, 10)

    return logits, dtype


def _onnx(name: str) -> Any:
    try:
        import onnx
        import onnxruntime  # noqa: F401  (checked here so a missing extra is one line before any work)
    except ImportError:
        raise UserError(f"{name} is an ONNX file; running it needs onnx and onnxruntime: {EXTRA_HINT}") from None
    return onnx
