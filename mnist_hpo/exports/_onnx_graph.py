"""What an ONNX graph may be before onnxruntime sees it: mnist-hpo's kind of program, its sizes bounded.

An ONNX graph is a program that onnxruntime runs, and its operators allocate what their shapes
say: a broadcast, an ``Expand`` or a ``Concat`` can ask for gigabytes from a few bytes of file. So
a graph is accepted only with the operators mnist-hpo's exporter writes and others whose output
sizes follow from their inputs' shapes (never data-dependent ones such as ``NonZero``, ``Range``,
``ConstantOfShape`` or control flow), and with every value's shape known once ONNX's own shape
inference has run: the batch dimension aside, each size is a number, so the bytes one image takes
are known before anything runs.
"""

from __future__ import annotations

from typing import Any

from mnist_hpo.checkpoints import CheckpointError
from mnist_hpo.exports.info import INPUT_NAME, OUTPUT_NAMES
from mnist_hpo.models.config import IMAGE_SIDE

REEXPORT = "re-export it with `mnist-hpo export --format onnx`"
#: The most all of a graph's values may take for one image (mnist-hpo's networks take well under 2 MB).
MAX_BYTES_PER_IMAGE = 64 * 2**20
#: Standard operators (the ``ai.onnx`` domain) whose output sizes follow from input shapes and constants.
OPERATORS = frozenset(
    {
        *("Abs", "Add", "And", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "Div"),
        *("Dropout", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten", "Gelu", "Gemm", "GlobalAveragePool", "Greater"),
        *("GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax"),
        *("MatMul", "Max", "MaxPool", "Mean", "Min", "Mish", "Mul", "Neg", "Not", "Or", "Pow", "PRelu", "Reciprocal"),
        *("ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape", "Selu", "Shape", "Sigmoid", "Softmax"),
        *("Softplus", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Transpose", "Unsqueeze", "Where", "Xor"),
    }
)
_DTYPES = {1: "float32", 2: "uint8"}  # TensorProto.FLOAT, TensorProto.UINT8
#: Bytes per element of each TensorProto data type (8 for any other).
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


def check_contents(model: Any, name: str) -> None:
    """No external data anywhere (initializers, constants, functions), only the standard operator set, no subgraphs."""
    tensors = [*model.graph.initializer]
    tensors += [part for sparse in model.graph.sparse_initializer for part in (sparse.values, sparse.indices)]
    nodes = [*model.graph.node, *(node for function in model.functions for node in function.node)]
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type not in OPERATORS:
            raise CheckpointError(
                f"{name} uses operator {'.'.join(filter(None, (node.domain, node.op_type)))[:60]}, which mnist-hpo's ONNX exports never hold; "
                f"mnist-hpo refuses it: {REEXPORT}"
            )
        for attribute in node.attribute:
            if attribute.HasField("g") or len(attribute.graphs):
                raise CheckpointError(f"{name} holds a subgraph ({node.op_type}), which mnist-hpo's ONNX exports never hold; {REEXPORT}")
            tensors += [*([attribute.t] if attribute.HasField("t") else []), *attribute.tensors]
            sparse = [*([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []), *attribute.sparse_tensors]
            tensors += [part for item in sparse for part in (item.values, item.indices)]
    for tensor in tensors:
        if tensor.data_location == 1 or len(tensor.external_data):  # TensorProto.EXTERNAL
            raise CheckpointError(
                f"{name} stores tensor {tensor.name[:60]!r} in another file (external data), which onnxruntime would open; "
                f"mnist-hpo refuses it: {REEXPORT}"
            )


def check_signature(model: Any, name: str) -> str:
    """The input dtype if the graph takes N×1×28×28 ``pixels`` and gives N×10 float logits and probabilities."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    dtype = _DTYPES.get(inputs[0].type.tensor_type.elem_type) if len(inputs) == 1 else None
    if dtype is None or inputs[0].name != INPUT_NAME or _dims(inputs[0])[1:] != [1, IMAGE_SIDE, IMAGE_SIDE]:
        raise CheckpointError(
            f"{name} is not an ONNX export of mnist-hpo (no single uint8/float32 N×1×28×28 input named {INPUT_NAME!r}); {REEXPORT}"
        )
    outputs = {value.name: value for value in model.graph.output}
    for output in OUTPUT_NAMES:
        value = outputs.get(output)
        if value is None or value.type.tensor_type.elem_type != 1 or _dims(value)[1:] != [10] or len(outputs) != len(OUTPUT_NAMES):
            shape = _dims(value) if value is not None else "missing"
            raise CheckpointError(
                f"{name} is not an ONNX export of mnist-hpo (its outputs must be {', '.join(OUTPUT_NAMES)}: float N×10 for the ten digits; "
                f"{output!r} is {shape}); {REEXPORT}"
            )
    return dtype


def _dims(value: Any) -> list[int | str]:
    """A value's shape: sizes, a named dimension as its name, an unknown one as ``?``."""
    shape = value.type.tensor_type.shape
    return [dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?") for dim in shape.dim]


def bytes_per_image(model: Any, name: str) -> int:
    """What all the graph's values take for one image, from ONNX's shape inference (the file's own shapes ignored)."""
    from onnx import shape_inference

    bare = type(model)()
    bare.CopyFrom(model)
    bare.graph.ClearField("value_info")  # a crafted file could claim any shapes: infer them afresh
    try:
        inferred = shape_inference.infer_shapes(bare, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx's InferenceError and ValidationError for graphs that do not type-check
        raise CheckpointError(f"{name} is an ONNX graph whose shapes do not check ({str(exc).splitlines()[0][:80]}); {REEXPORT}") from None
    values = {value.name: value for value in (*inferred.graph.value_info, *inferred.graph.output)}
    total = 0
    for output in (out for node in model.graph.node for out in node.output if out):
        value = values.get(output)
        dims = value.type.tensor_type.shape.dim if value is not None and value.type.tensor_type.HasField("shape") else None
        if dims is None or sum(not dim.HasField("dim_value") for dim in dims) > 1:
            raise CheckpointError(f"{name} has a value ({output[:40]!r}) whose size is not known before running; {REEXPORT}")
        size = _ITEMSIZE.get(value.type.tensor_type.elem_type, 8)
        for dim in dims:
            size *= dim.dim_value if dim.HasField("dim_value") else 1
        total += size
    if total > MAX_BYTES_PER_IMAGE:
        raise CheckpointError(
            f"{name} is an ONNX graph whose values take {total:,} bytes per image, more than mnist-hpo's exports "
            f"({MAX_BYTES_PER_IMAGE:,}); mnist-hpo refuses it: {REEXPORT}"
        )
    return max(total, 1)
