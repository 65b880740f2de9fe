"""Splits: what one run trains, validates and tests on, with a digest a study can record."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import torch
from torch import Tensor

from mnist_hpo.errors import DataError

IMAGE_SIDE = 28
PIXELS = IMAGE_SIDE * IMAGE_SIDE


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

    def __add__(self, other: Split) -> Split:
        """Both splits, one after the other (e.g. train + validation for a final retrain)."""
        return Split(torch.cat([self.images, other.images]), torch.cat([self.labels, other.labels]))


@dataclass(frozen=True, eq=False)
class Splits:
    """What one run trains, validates and tests on, plus where it came from and a hash to record."""

    train: Split
    val: Split
    test: Split
    source: str
    digest: str

    def describe(self) -> str:
        """One line for a study's record: source, sizes and digest."""
        return f"{self.source} ({len(self.train):,} train / {len(self.val):,} validation, sha256 {self.digest})"


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
