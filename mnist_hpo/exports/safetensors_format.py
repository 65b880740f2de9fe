"""``.safetensors``: the weights, with the model spec, input scaling and metrics in the file's own header.

``safe_open(path, "pt").metadata()`` shows everything; mnist-hpo rebuilds the network from the
``model_spec`` entry, so the one file is enough. The header is read here by the format's spec
(an 8-byte length, then JSON) to take bytes as well as files, and checked whole before a tensor
is read: its length, every tensor's dtype, shape and byte range (inside the file, in order, no
overlaps or gaps, exactly shape × itemsize), and the names, shapes and dtypes against the network
the spec describes, counted on the ``meta`` device (``checkpoints.check_weights``).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import torch
from safetensors.torch import load as load_tensors, save as save_tensors
from torch import nn

from mnist_hpo.checkpoints import CheckpointError, build_network, check_weights

#: A safetensors header is JSON after its length; mnist-hpo's are a few kilobytes.
MAX_HEADER = 16 * 2**20
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_REEXPORT = "re-export it with `mnist-hpo export --format safetensors`"
Layout = dict[str, tuple[tuple[int, ...], torch.dtype]]


def to_bytes(network: nn.Module, props: dict[str, str], input_dtype: str) -> bytes:
    tensors = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    return save_tensors(tensors, metadata=props)


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """An 8-byte length below 4 GiB then ``{``; a length too large or past the file's end is reported by ``read_header``."""
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 1 < length < 2**32 and head[8:9] == b"{"


def read_header(data: bytes, name: str) -> tuple[Layout, dict[str, str]]:
    """Each tensor's (shape, dtype), and the metadata; a header that does not describe this file exactly is refused."""
    (length,) = struct.unpack("<Q", data[:8])
    if 8 + length > len(data):
        raise CheckpointError(
            f"{name} is a damaged safetensors file (its header claims {length:,} bytes, the file has {len(data):,}: truncated or forged); {_REEXPORT}"
        )
    if length > MAX_HEADER:
        raise CheckpointError(
            f"{name} has a safetensors header of {length:,} bytes, more than mnist-hpo reads ({MAX_HEADER:,}); {_REEXPORT}"
        )
    try:
        header = json.loads(data[8 : 8 + length], object_pairs_hook=_unique)
    except (UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError and _unique's are ValueErrors
        raise CheckpointError(f"{name} is a damaged safetensors file (its header is not JSON of unique names); {_REEXPORT}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} is a damaged safetensors file (its header is not a JSON object); {_REEXPORT}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{name} is a damaged safetensors file (its __metadata__ is not a map of strings); {_REEXPORT}")
    layout, spans = {}, []
    for key, entry in header.items():
        shape, dtype, start, end = _entry(key, entry, name)
        layout[key] = (shape, dtype)
        spans.append((start, end, key))
    position = 0
    for start, end, key in sorted(spans):
        if start != position:
            raise CheckpointError(
                f"{name} is a damaged safetensors file (tensor {key[:60]!r} overlaps another or leaves a gap); {_REEXPORT}"
            )
        position = end
    if position != len(data) - 8 - length:
        raise CheckpointError(
            f"{name} is a damaged safetensors file (its tensors cover {position:,} bytes, the file holds {len(data) - 8 - length:,}); {_REEXPORT}"
        )
    return layout, metadata


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose names are unique: readers disagree on which of two equal names wins."""
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("a name appears twice")
    return dict(pairs)


def _entry(key: str, entry: Any, name: str) -> tuple[tuple[int, ...], torch.dtype, int, int]:
    """One tensor's shape, dtype and byte range, each checked: sizes are Python ints, so no product overflows."""
    fields = entry if isinstance(entry, dict) and set(entry) == {"dtype", "shape", "data_offsets"} else {}
    dtype, shape, offsets = DTYPES.get(str(fields.get("dtype"))), fields.get("shape"), fields.get("data_offsets")
    valid = isinstance(shape, list) and len(shape) <= 8 and all(_natural(size) for size in shape)
    valid = valid and isinstance(offsets, list) and len(offsets) == 2 and all(_natural(offset) for offset in offsets)
    if dtype is None or not valid or offsets[0] > offsets[1]:
        raise CheckpointError(
            f"{name} is a damaged safetensors file (tensor {key[:60]!r} has no valid dtype, shape and offsets); {_REEXPORT}"
        )
    numel = 1
    for size in shape:
        numel *= size
    if offsets[1] - offsets[0] != numel * dtype.itemsize:
        raise CheckpointError(
            f"{name} is a damaged safetensors file (tensor {key[:60]!r} is {shape} {fields['dtype']} but holds "
            f"{offsets[1] - offsets[0]:,} bytes); {_REEXPORT}"
        )
    return tuple(shape), dtype, offsets[0], offsets[1]


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load(data: bytes, name: str, props: dict[str, Any], layout: Layout) -> nn.Module:
    """The network the header's ``model_spec`` describes, with the file's weights, checked before either is allocated."""
    try:
        spec = json.loads(props["model_spec"])
    except (KeyError, TypeError, ValueError, RecursionError):
        raise CheckpointError(f"{name} has no readable model_spec in its metadata; {_REEXPORT}") from None
    check_weights(spec, layout, name)
    try:
        tensors = load_tensors(data)
    except Exception:  # safetensors raises its own SafetensorError for damaged data
        raise CheckpointError(f"{name} is a damaged safetensors file; {_REEXPORT}") from None
    return build_network(spec, tensors, name)
