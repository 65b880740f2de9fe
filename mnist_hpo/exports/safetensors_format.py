"""``.safetensors``: the weights, with the model spec, input scaling and metrics in the file's own header.

``safe_open(path, "pt").metadata()`` shows everything; mnist-hpo rebuilds the network from the
``model_spec`` entry, so the one file is enough. The header is read here by the format's spec
(an 8-byte length, then JSON) to take bytes as well as files.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from mnist_hpo.checkpoints import CheckpointError, build_network

#: A safetensors header is JSON after its length; this bounds the length a real file could have.
MAX_HEADER = 100_000_000


def to_bytes(network: nn.Module, props: dict[str, str], input_dtype: str) -> bytes:
    tensors = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    return save_tensors(tensors, metadata=props)


def looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 0 < length <= min(size - 8, MAX_HEADER) and head[8:9] == b"{"


def header_metadata(data: bytes, name: str) -> dict[str, str]:
    (length,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + length])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{name} is a damaged safetensors file (its header is not JSON); re-export it") from None
    return dict(header.get("__metadata__") or {}) if isinstance(header, dict) else {}


def load(data: bytes, name: str, props: dict[str, Any]) -> nn.Module:
    """The network the header's ``model_spec`` describes, with the file's weights."""
    try:
        tensors = load_tensors(data)
        spec = json.loads(props["model_spec"])
    except Exception:  # safetensors raises its own SafetensorError for damaged data
        raise CheckpointError(f"{name} is a damaged safetensors file; re-export it with `mnist-hpo export --format safetensors`") from None
    return build_network(spec, tensors, name)
