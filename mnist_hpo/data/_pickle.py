"""The restricted unpickler for the PyPI wheel's mnist.pkl.gz: numeric numpy arrays and nothing else."""

from __future__ import annotations

import gzip
import io
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

from mnist_hpo.data._idx import idx_images_bytes, idx_labels_bytes
from mnist_hpo.data._splits import IMAGE_SIDE, PIXELS


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain numeric numpy arrays (and tuples of them) and nothing else.

    A pickle can call any importable function while loading; this one may only reach
    numpy's array-rebuilding functions, and refuses object dtypes (which would unpickle
    arbitrary Python objects element by element).
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _PICKLE_ALLOWED.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        return allowed


def _numeric_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(spec, bool(align), bool(copy))
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refusing to unpickle an array of dtype {dtype}: only numeric arrays are allowed")
    return dtype


def _numpy_reconstruct() -> Callable[..., Any]:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numeric_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
}


def restricted_loads(data: bytes) -> Any:
    """Load a (possibly Python 2) pickle of numpy arrays without letting it run code."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def _to_uint8(x: np.ndarray, what: str) -> np.ndarray:
    """The pickle stores pixel/256 as float32; undo that exactly or refuse."""
    scaled = np.asarray(x, dtype=np.float64) * 256.0
    if scaled.ndim != 2 or scaled.shape[1] != PIXELS:
        raise RuntimeError(f"{what} images have shape {scaled.shape}, expected N×{PIXELS}")
    if not (np.array_equal(scaled, np.rint(scaled)) and scaled.min() >= 0 and scaled.max() <= 255):
        raise RuntimeError(f"{what} pixels are not exact multiples of 1/256 in [0, 1)")
    return scaled.astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def mnist_from_pickle(data: bytes) -> dict[str, bytes]:
    """The four IDX files from mnist.pkl.gz's ((train), (valid), (test)): train = train + valid, in order."""
    parts = restricted_loads(gzip.decompress(data))
    if not (isinstance(parts, tuple) and len(parts) == 3 and all(isinstance(p, tuple) and len(p) == 2 for p in parts)):
        raise RuntimeError("mnist.pkl.gz is not ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))")
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
    train_images = np.concatenate([_to_uint8(train_x, "train"), _to_uint8(valid_x, "valid")])
    train_labels = np.concatenate([np.asarray(train_y), np.asarray(valid_y)])
    test_images, test_labels = _to_uint8(test_x, "test"), np.asarray(test_y)
    for labels, images in ((train_labels, train_images), (test_labels, test_images)):
        if labels.shape != images.shape[:1] or labels.min() < 0 or labels.max() > 9:
            raise RuntimeError("mnist.pkl.gz labels do not match its images or are not digits 0-9")
    return {
        "train-images-idx3-ubyte": idx_images_bytes(train_images),
        "train-labels-idx1-ubyte": idx_labels_bytes(train_labels),
        "t10k-images-idx3-ubyte": idx_images_bytes(test_images),
        "t10k-labels-idx1-ubyte": idx_labels_bytes(test_labels),
    }
