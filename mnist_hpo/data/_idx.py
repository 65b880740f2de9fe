"""IDX files, the format MNIST ships in: where they live, how to encode and parse them safely."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mnist_hpo.data._splits import IMAGE_SIDE
from mnist_hpo.errors import DataError

TRAIN_SIZE, TEST_SIZE = 60_000, 10_000

#: The four raw files torchvision.datasets.MNIST reads from ``root/MNIST/raw``, with their MD5s.
#: Image MD5s are the official uncompressed files; label MD5s were pinned from the same data.
RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

_IMAGES_MAGIC, _LABELS_MAGIC = 0x0803, 0x0801
FETCH_HINT = "delete it and run `mnist-hpo data fetch`"


def default_root() -> Path:
    """Where MNIST lives unless told otherwise: ``$MNIST_HPO_DATA`` or ``~/.cache/mnist-hpo``."""
    env = os.environ.get("MNIST_HPO_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mnist-hpo"


def raw_dir(root: Path | str | None = None) -> Path:
    """The folder torchvision.datasets.MNIST(root) reads the four IDX files from."""
    return Path(root if root is not None else default_root()).expanduser() / "MNIST" / "raw"


def idx_images_bytes(images: np.ndarray) -> bytes:
    """IDX3 encoding (big-endian header, then row-major uint8 pixels) of N×28×28 uint8 images."""
    n, rows, cols = images.shape
    return struct.pack(">IIII", _IMAGES_MAGIC, n, rows, cols) + np.ascontiguousarray(images, dtype=np.uint8).tobytes()


def idx_labels_bytes(labels: np.ndarray) -> bytes:
    """IDX1 encoding of labels 0–9."""
    return struct.pack(">II", _LABELS_MAGIC, len(labels)) + np.asarray(labels).astype(np.uint8).tobytes()


def _corrupt(path: Path, why: str) -> DataError:
    return DataError(f"MNIST file {path} is corrupt ({why}); {FETCH_HINT}")


def read_idx_images(path: Path, expected: int | None = None) -> Tensor:
    """Parse an IDX3 image file, checking magic, dimensions and size, so damage is reported, not trained on."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size < 16:
        raise _corrupt(path, f"{data.size} bytes, shorter than the 16-byte header")
    magic, n, rows, cols = (int(v) for v in data[:16].view(">u4"))
    if magic != _IMAGES_MAGIC:
        raise _corrupt(path, f"magic number {magic:#010x}, expected {_IMAGES_MAGIC:#010x} for images")
    if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
        raise _corrupt(path, f"images are {rows}×{cols}, expected 28×28")
    if expected is not None and n != expected:
        raise _corrupt(path, f"{n} images, expected {expected}")
    if data.size != 16 + n * rows * cols:
        raise _corrupt(path, f"{data.size} bytes, expected {16 + n * rows * cols} for {n} images; truncated?")
    return torch.from_numpy(data[16:].reshape(n, rows, cols))


def read_idx_labels(path: Path, expected: int | None = None) -> Tensor:
    """Parse an IDX1 label file, checking magic, size and that every label is a digit."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size < 8:
        raise _corrupt(path, f"{data.size} bytes, shorter than the 8-byte header")
    magic, n = (int(v) for v in data[:8].view(">u4"))
    if magic != _LABELS_MAGIC:
        raise _corrupt(path, f"magic number {magic:#010x}, expected {_LABELS_MAGIC:#010x} for labels")
    if expected is not None and n != expected:
        raise _corrupt(path, f"{n} labels, expected {expected}")
    if data.size != 8 + n:
        raise _corrupt(path, f"{data.size} bytes, expected {8 + n} for {n} labels; truncated?")
    labels = data[8:]
    if labels.size and labels.max() > 9:
        raise _corrupt(path, f"label {int(labels.max())} is not a digit 0-9")
    return torch.from_numpy(labels.astype(np.int64))
