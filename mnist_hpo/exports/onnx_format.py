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
from mnist_hpo.exports.info import INPUT_NAME, OUTPUT_NAMES
from mnist_hpo.exports.program import export_program

EXTRA_HINT = "pip install 'mnist-hpo[onnx]'"
_NUMPY_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8"}


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


def load(data: bytes, name: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any], str]:
    """An onnxruntime session's ``logits`` function on raw-pixel batches, its metadata and input dtype."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"{name} is an ONNX file; running it needs onnxruntime: {EXTRA_HINT}") from None
    try:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for damaged graphs
        raise CheckpointError(f"{name} is an ONNX file onnxruntime cannot load ({str(exc).splitlines()[0][:100]}); re-export it") from None
    props = dict(session.get_modelmeta().custom_metadata_map)
    inputs = session.get_inputs()
    graph_input = inputs[0] if len(inputs) == 1 else None
    dtype = _NUMPY_DTYPES.get(getattr(graph_input, "type", ""))
    if graph_input is None or dtype is None or graph_input.name != INPUT_NAME:
        raise CheckpointError(
            f"{name} is not an ONNX export of mnist-hpo (no uint8/float32 input named {INPUT_NAME!r}); re-export it with `mnist-hpo export --format onnx`"
        )

    def logits(pixels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([OUTPUT_NAMES[0]], {INPUT_NAME: pixels.numpy().astype(dtype)})[0])

    return logits, props, dtype
