"""Self-describing checkpoints: weights plus the plain-data spec needed to rebuild the network.

Files are written atomically and read with ``torch.load(weights_only=True)``, so loading a
checkpoint can never run code. A checkpoint carries its model spec, metrics named by split, the
input its network expects and the library versions that produced it.

Model files come from anywhere, so reading one is bounded before anything is allocated: the file's
size, its zip directory (parsed here, because torch reads zips with its own reader, and two readers
must never see different entries), and the network its spec describes (counted on the ``meta``
device, where building costs no memory) are checked before torch reads a byte or a network is built.

Every mnist-hpo model file (this checkpoint and the exports) carries ``format_version``. Older
formats are migrated on load; a newer one fails with one line naming both versions and the fix.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import pickle
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_hpo.errors import UserError
from mnist_hpo.files import atomic_write
from mnist_hpo.models import build_model
from mnist_hpo.versions import VERSION, library_versions

FORMAT = "mnist-hpo-checkpoint"
#: 1: spec, weights, metrics, versions. 2: adds ``network_input`` (what the stored network is fed).
FORMAT_VERSION = 2
OLDEST_FORMAT_VERSION = 1

#: What every network of mnist-hpo is fed: the trainer's scaling of raw uint8 pixels (see DeviceLoader).
NETWORK_INPUT = {
    "pixels": "uint8 N×28×28, 0-255, white digit (255) on black (0), as MNIST and Kaggle store them",
    "network_input": "float32 N×1×28×28 = pixels / 127.5 - 1 (range -1..1)",
}


#: The largest model file mnist-hpo reads (the largest network it reads is 200 MB of float32 weights).
MAX_FILE_BYTES = 512 * 2**20
#: The most numbers (parameters and buffers) of a network a model file may describe.
MAX_PARAMETERS = 50_000_000
#: The most networks one spec may describe (an ensemble's members), and the most entries of a zip.
MAX_NETWORKS = 64
MAX_ZIP_ENTRIES = 10_000


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, not ours or for another architecture."""


def check_format_version(name: str, found: object, written_by: object) -> int:
    """The file's format version if this mnist-hpo reads it, else a one-line error with the fix."""
    ours = VERSION
    writer = f"mnist-hpo {written_by}" if written_by else "an unknown mnist-hpo"
    if not isinstance(found, int) or isinstance(found, bool):
        raise CheckpointError(f"{name} has no valid format version ({found!r}); re-export it with `mnist-hpo export`")
    if found > FORMAT_VERSION:
        raise CheckpointError(
            f"{name} is model format {found}, written by {writer}; this mnist-hpo {ours} reads formats "
            f"{OLDEST_FORMAT_VERSION}-{FORMAT_VERSION}: upgrade (pip install 'mnist-hpo>={written_by or ours}') or re-export it with mnist-hpo {ours}"
        )
    if found < OLDEST_FORMAT_VERSION:
        raise CheckpointError(
            f"{name} is model format {found}, written by {writer}; this mnist-hpo {ours} reads formats "
            f"{OLDEST_FORMAT_VERSION}-{FORMAT_VERSION}: re-export it with `mnist-hpo export`, or read it with {writer}"
        )
    return found


def _v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """Format 1 did not record the network's input; every format-1 network was trained on the same scaling."""
    return {**payload, "network_input": dict(NETWORK_INPUT), "format_version": 2}


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def checkpoint_bytes(model: nn.Module, spec: dict, metrics: dict[str, float] | None = None, extra: dict | None = None) -> bytes:
    """Serialise a model with its spec; ``metrics`` keys name their split (``val_accuracy``...)."""
    payload = {
        **(extra or {}),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_spec": spec,
        "network_input": dict(NETWORK_INPUT),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": dict(metrics or {}),
        "versions": library_versions(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(path: Path, model: nn.Module, spec: dict, metrics: dict[str, float] | None = None, extra: dict | None = None) -> str:
    """Write the checkpoint atomically and return its sha256."""
    data = checkpoint_bytes(model, spec, metrics, extra)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def read_checkpoint(source: Path | bytes, name: str | None = None) -> dict[str, Any]:
    """The checkpoint's payload from a file or from bytes (an artifact), loaded with weights_only, migrated to this format.

    The zip is checked first (``zip_entries``): torch then reads exactly the entries checked here,
    none of them compressed, so what it allocates is bounded by the file's size.
    """
    name = name or ("checkpoint bytes" if isinstance(source, bytes) else str(source))
    data = source if isinstance(source, bytes) else read_model_file(Path(source), name)
    if len(data) > MAX_FILE_BYTES:
        raise CheckpointError(f"checkpoint {name} is {len(data):,} bytes, more than any model mnist-hpo reads ({MAX_FILE_BYTES:,})")
    try:
        if data[:4] != b"PK\x03\x04":
            raise ValueError("not a zip archive as torch.save writes: a legacy or foreign file, or truncated")
        zip_entries(data)
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(
            f"checkpoint {name} cannot be read safely ({_load_failure(exc)}); re-export it with `mnist-hpo export`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{name} is not an mnist-hpo checkpoint; export one with `mnist-hpo export --study NAME --out FILE`")
    version = check_format_version(name, payload.get("format_version"), (payload.get("versions") or {}).get("mnist_hpo"))
    while version < FORMAT_VERSION:
        payload = MIGRATIONS[version](payload)
        version = payload["format_version"]
    return payload


def read_model_file(path: Path, name: str) -> bytes:
    """A model file's bytes, refused before reading when it is larger than any model mnist-hpo reads."""
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise CheckpointError(
            f"checkpoint {name} {what}; pass the path of a file written by `mnist-hpo export`, `ensemble` or `train --save`"
        )
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise CheckpointError(
                f"checkpoint {name} is {size:,} bytes, more than any model mnist-hpo reads ({MAX_FILE_BYTES:,}); it is not an mnist-hpo export"
            )
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {name} cannot be read ({exc.strerror}); check its permissions") from None


def _load_failure(exc: Exception) -> str:
    """The useful line of torch's error: what a weights-only load refused, or that it is no torch file."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    refused = [line.strip() for line in text.splitlines() if "unsupported global" in line.lower()]
    if refused:
        return refused[0][:120]
    if "Weights only load failed" in text:
        return "it holds objects a weights-only load refuses: code, not data"
    if isinstance(exc, ValueError) and not isinstance(exc, pickle.UnpicklingError):
        return text.splitlines()[0][:160]  # zip_entries names what is wrong with the archive
    if isinstance(exc, (pickle.UnpicklingError, RuntimeError, EOFError)) or not text:
        return "not a PyTorch checkpoint or truncated"
    return text.splitlines()[0][:120]


def build_network(spec: Any, state_dict: Any, name: str) -> nn.Module:
    """The network a spec describes with these weights, in eval mode; a mismatch is the file's fault.

    The weights' names, shapes and dtypes are compared with the spec's network built on the
    ``meta`` device first, so a file cannot make mnist-hpo allocate a network it does not hold.
    """
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{name} holds no state dict of tensors; re-export it")
    check_weights(spec, {k: (tuple(v.shape), v.dtype) for k, v in state_dict.items()}, name)
    try:
        model = build_model(spec)
        model.load_state_dict(state_dict)
    except (RuntimeError, KeyError, TypeError, AttributeError, UserError):
        raise CheckpointError(f"{name} holds weights that do not fit its architecture {str(spec)[:80]}; re-export it") from None
    return model.eval()


def expected_weights(spec: Any, name: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor the spec's network holds, found without allocating it."""
    networks = _count_networks(spec)
    if networks > MAX_NETWORKS:
        raise CheckpointError(f"{name} describes {networks} networks, more than mnist-hpo reads ({MAX_NETWORKS}); re-export it")
    try:
        with torch.device("meta"):  # shapes without memory: a spec may describe any size
            state = build_model(spec).state_dict()
    except Exception:  # any spec mnist-hpo did not write: wrong types, sizes, names
        raise CheckpointError(f"{name} describes no network mnist-hpo builds ({str(spec)[:80]}); re-export it") from None
    numbers = sum(tensor.numel() for tensor in state.values())
    if numbers > MAX_PARAMETERS:
        raise CheckpointError(
            f"{name} describes a network of {numbers:,} parameters, more than mnist-hpo reads ({MAX_PARAMETERS:,}); "
            "it is not a file mnist-hpo wrote: re-export it"
        )
    return {key: (tuple(tensor.shape), tensor.dtype) for key, tensor in state.items()}


def check_weights(spec: Any, found: dict[str, tuple[tuple[int, ...], torch.dtype]], name: str) -> None:
    """Refuse weights (name -> shape, dtype) that are not exactly those of the spec's network."""
    expected = expected_weights(spec, name)
    missing, foreign = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = [key for key in expected if key in found and found[key] != expected[key]]
    if missing:
        problem = f"{missing[0]!r} is missing"
    elif foreign:
        problem = f"{foreign[0]!r} is not in the network"
    elif wrong:
        (shape, dtype), (needed, needed_dtype) = found[wrong[0]], expected[wrong[0]]
        problem = f"{wrong[0]!r} is {dtype} {list(shape)} where the network needs {needed_dtype} {list(needed)}"
    else:
        return
    raise CheckpointError(f"{name} holds weights that do not fit its architecture {str(spec)[:80]} ({problem}); re-export it")


def _count_networks(spec: Any) -> int:
    """How many networks a spec describes (an ensemble counts its members), walked without recursion."""
    pending, networks = [spec], 0
    while pending and networks + len(pending) <= MAX_NETWORKS:
        node = pending.pop()
        members = node.get("members") if isinstance(node, dict) and node.get("name") == "ensemble" else None
        if isinstance(members, list):
            pending.extend(members)
        else:
            networks += 1
    return networks + len(pending)


def load_checkpoint(source: Path | bytes, name: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a checkpoint describes and load its weights (eval mode)."""
    name = name or ("checkpoint bytes" if isinstance(source, bytes) else str(source))
    payload = read_checkpoint(source, name)
    return build_network(payload["model_spec"], payload["state_dict"], f"checkpoint {name}"), payload


# ------------------------------------------------------------------ zips, as torch.save and torch.export.save write them

_END = struct.Struct("<4sHHHHIIH")  # end of central directory record
_END64 = struct.Struct("<4sQHHIIQQQQ")  # zip64 end of central directory record
_LOCATOR = struct.Struct("<4sIQI")  # zip64 end of central directory locator
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # central directory file header
_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # local file header


@dataclass(frozen=True)
class ZipEntry:
    """One uncompressed member: its bytes are ``data[start:start + size]``."""

    name: str
    start: int
    size: int


def zip_entries(data: bytes, checksums: bool = True) -> dict[str, ZipEntry]:
    """The members of a zip written by torch, or ``ValueError`` naming what two zip readers could disagree on.

    torch reads archives with miniz, Python with zipfile, and both must see exactly one set of
    members: one end record at the very end (no comment, nothing appended or prepended), every
    member stored uncompressed (so no member is larger than the file: no zip bombs), local and
    central headers that agree, no two names equal or equal but for case, no overlapping data,
    and checksums that hold (unless ``checksums`` is false: a quick look at the names).
    """
    count, directory, end = _directory(data)
    entries: dict[str, ZipEntry] = {}
    folded: set[str] = set()
    spans: list[tuple[int, int]] = []
    position = directory
    for _ in range(count):
        if position + _CENTRAL.size > end:
            raise ValueError("its central directory is truncated")
        fields = _CENTRAL.unpack_from(data, position)
        name_end = position + _CENTRAL.size + fields[10]
        name = _member_name(data[position + _CENTRAL.size : name_end])
        position = name_end + fields[11] + fields[12]
        if fields[0] != b"PK\x01\x02" or position > end:
            raise ValueError("its central directory is damaged")
        if name.lower() in folded:
            raise ValueError(f"it holds two members named {name!r} (zip readers may pick different ones)")
        folded.add(name.lower())
        entry = _member(data, name, fields, directory, checksums)
        entries[name] = entry
        spans.append((fields[16], entry.start + entry.size))
    if position != end:
        raise ValueError("its central directory does not match its end record")
    spans.sort()
    if (spans and spans[0][0] != 0) or any(before[1] > after[0] for before, after in itertools.pairwise(spans)):
        raise ValueError("its members overlap or it has bytes before its first member")
    return entries


def _directory(data: bytes) -> tuple[int, int, int]:
    """Member count, central directory offset and end, from the end record (and zip64's) at the very end."""
    at = len(data) - _END.size
    if at < 0 or data[at : at + 4] != b"PK\x05\x06":
        raise ValueError("it is truncated or carries bytes after its end record")
    _, disk, first_disk, on_disk, count, size, offset, comment = _END.unpack_from(data, at)
    end = at
    if at >= _LOCATOR.size and data[at - _LOCATOR.size : at - _LOCATOR.size + 4] == b"PK\x06\x07":
        _, _, end, disks = _LOCATOR.unpack_from(data, at - _LOCATOR.size)
        if end + _END64.size != at - _LOCATOR.size or disks != 1 or data[end : end + 4] != b"PK\x06\x06":
            raise ValueError("its zip64 end record is not where its locator says")
        _, record, _, _, disk64, first64, on_disk64, count64, size64, offset64 = _END64.unpack_from(data, end)
        if record != _END64.size - 12 or disk64 or first64 or on_disk64 != count64:
            raise ValueError("its zip64 end record is damaged")
        if (count, size, offset) != (count64, size64, offset64) and (count, size, offset) != (0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF):
            raise ValueError("its two end records disagree")
        count, size, offset, on_disk = count64, size64, offset64, on_disk64
    if disk or first_disk or on_disk != count or comment:
        raise ValueError("it spans several disks or carries a comment")
    if count > MAX_ZIP_ENTRIES:
        raise ValueError(f"it holds {count:,} members, more than any model file ({MAX_ZIP_ENTRIES:,})")
    if offset + size != end:
        raise ValueError("its central directory is not where its end record says")
    return count, offset, end


def _member_name(raw: bytes) -> str:
    """A member's name: printable ASCII, a relative path without ``.``, ``..`` or empty parts."""
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"it holds a member whose name is not ASCII ({raw[:60]!r})") from None
    parts = name.split("/")
    if not name.isprintable() or "\\" in name or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"it holds a member with an unsafe name ({name[:60]!r})")
    return name


def _member(data: bytes, name: str, central: tuple, directory: int, checksums: bool) -> ZipEntry:
    """A member checked against its local header: stored, the same name and sizes, inside the file, its CRC right."""
    flags, method, crc, size, usize, offset = central[3], central[4], central[7], central[8], central[9], central[16]
    if flags & 0x1 or method != 0 or size != usize or central[13]:
        raise ValueError(f"member {name!r} is compressed or encrypted (mnist-hpo's files are stored uncompressed)")
    if offset + _LOCAL.size > directory:
        raise ValueError(f"member {name!r} lies outside the archive")
    local = _LOCAL.unpack_from(data, offset)
    start = offset + _LOCAL.size + local[9] + local[10]
    if local[0] != b"PK\x03\x04" or local[4] != method or data[offset + _LOCAL.size : offset + _LOCAL.size + local[9]] != name.encode():
        raise ValueError(f"member {name!r} has a local header that disagrees with the central directory")
    if not local[2] & 0x8 and (local[6], local[7], local[8]) != (crc, size, usize):
        raise ValueError(f"member {name!r} has local sizes that disagree with the central directory")
    if start + size > directory:
        raise ValueError(f"member {name!r} runs past the end of the archive")
    if checksums and zlib.crc32(memoryview(data)[start : start + size]) != crc:
        raise ValueError(f"member {name!r} is damaged (its checksum does not match)")
    return ZipEntry(name, start, size)
