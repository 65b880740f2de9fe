"""The study's lock taken through a study's own storage (Optuna's cache around the database) is the database's lock."""

from __future__ import annotations

import threading

import optuna
import pytest

from mnist_hpo.deadline import Deadline
from mnist_hpo.storage import study_lock
from mnist_hpo.storage._locks import StudyLocked


def test_the_lock_through_a_studys_own_storage_excludes_the_lock_through_the_database(tmp_path):
    """PBT places segments under the lock through ``trial.storage``: a cache that once locked nothing (two members placed twice)."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = optuna.create_study(study_name="s", storage=url)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with study_lock(optuna.storages.RDBStorage(url), "s"):
            holding.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(60)
        with pytest.raises(StudyLocked), study_lock(study._storage, "s", deadline=Deadline.after(0.3)):
            pass
    finally:
        release.set()
        holder.join()
    with study_lock(study._storage, "s", deadline=Deadline.after(5)):  # free again
        pass
