"""A pytest plugin for Optuna's own storage tests: their "sqlite" storages come from mnist-hpo's open_storage.

Loaded with `-p conformance_plugin` in a subprocess that runs tests/storages_tests of Optuna's sdist
(see test_optuna_conformance.py). $MNIST_HPO_CONFORMANCE is "sqlite" (a fresh SQLite file per
storage, WAL mode and busy timeout as mnist-hpo opens it) or "postgresql" (a fresh database per
storage on the cluster at $MNIST_HPO_CONFORMANCE_PG, with mnist-hpo's pool and reconnect plugin).
Each storage handed out is counted in $MNIST_HPO_CONFORMANCE_COUNT, so the caller sees it was used.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import optuna.testing.storages as supplied
import psycopg

from mnist_hpo.storage import open_storage

KWARGS = {
    "heartbeat_interval": "heartbeat_interval",
    "grace_period": "grace_period",
    "heartbeat_stale_trial_callback": "stale_trial_callback",
    "failed_trial_callback": "stale_trial_callback",
}
_original_enter = supplied.StorageSupplier.__enter__
_numbers = itertools.count()


def _url() -> str:
    if os.environ["MNIST_HPO_CONFORMANCE"] == "postgresql":
        admin = os.environ["MNIST_HPO_CONFORMANCE_PG"]
        name = f"conformance_{os.getpid()}_{next(_numbers)}"
        with psycopg.connect(admin.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return admin.rsplit("/", 1)[0] + f"/{name}"
    folder = Path(tempfile.mkdtemp(prefix="conformance-"))
    return f"sqlite:///{folder / 'optuna.db'}"


def _enter(self):
    if self.storage_specifier != "sqlite":
        return _original_enter(self)
    self.storage = open_storage(_url(), **{KWARGS[key]: value for key, value in self.extra_args.items()})
    counter = Path(os.environ["MNIST_HPO_CONFORMANCE_COUNT"])
    with open(counter, "a") as f:
        f.write(f"{type(self.storage).__name__}\n")
    return self.storage


supplied.StorageSupplier.__enter__ = _enter
