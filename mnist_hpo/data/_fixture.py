"""The bundled real-MNIST subset: tests and demos without a download."""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from mnist_hpo.data._splits import Split
from mnist_hpo.files import atomic_write

FIXTURE_RESOURCE = "fixtures/mnist-subset.npz"
FIXTURE_TRAIN, FIXTURE_TEST = 5_000, 1_000


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
