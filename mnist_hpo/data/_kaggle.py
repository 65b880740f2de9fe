"""Kaggle Digit Recognizer CSVs: train.csv and test.csv in, submissions out."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from torch import Tensor

from mnist_hpo.data._splits import IMAGE_SIDE, PIXELS, Split
from mnist_hpo.errors import DataError
from mnist_hpo.files import atomic_write

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


def write_kaggle_test_csv(path: Path | str, images: Tensor) -> None:
    """A Kaggle Digit Recognizer test.csv: the ``pixel0..783`` header, then one image per row (0-255, row by row).

    What ``read_kaggle_csv(path, labelled=False)`` reads back pixel for pixel; written atomically.
    """
    if images.dtype != torch.uint8 or images.ndim != 3 or tuple(images.shape[1:]) != (IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"test.csv images must be uint8 N×28×28, got {images.dtype} {tuple(images.shape)}")
    rows = images.reshape(len(images), PIXELS).tolist()
    text = ",".join(_KAGGLE_PIXELS) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows)
    atomic_write(Path(path), text.encode())
