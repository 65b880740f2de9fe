"""What a run uses: the official MNIST files, or the fixture, or a Kaggle train.csv, split the same way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mnist_hpo.data._fetch import fetch
from mnist_hpo.data._fixture import load_fixture
from mnist_hpo.data._idx import RAW_MD5, TEST_SIZE, TRAIN_SIZE, raw_dir, read_idx_images, read_idx_labels
from mnist_hpo.data._kaggle import read_kaggle_csv
from mnist_hpo.data._splits import Split, Splits, splits_digest, train_val_split
from mnist_hpo.errors import DataError

Log = Callable[[str], None]


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
