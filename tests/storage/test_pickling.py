"""What open_storage returns is Optuna's own storage of that kind: it pickles, and the copy works."""

from __future__ import annotations

import pickle

import optuna
import pytest

from mnist_hpo import storage


def round_trip(opened):
    copy = pickle.loads(pickle.dumps(opened))
    assert type(copy) is type(opened)
    return copy


def test_sqlite_and_journal_storages_pickle_and_still_work(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for url in (f"sqlite:///{tmp_path / 'a.db'}", f"journal:{tmp_path / 'a.log'}"):
        opened = storage.open_storage(url, heartbeat_interval=5, grace_period=20)
        assert type(opened) in (optuna.storages.RDBStorage, optuna.storages.JournalStorage)
        optuna.create_study(study_name="p", storage=opened).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        copy = round_trip(opened)
        assert len(optuna.load_study(study_name="p", storage=copy).trials) == 2


def test_a_postgresql_storage_pickles_with_its_reconnects(pg_url):
    opened = storage.open_storage(pg_url, reconnect_s=7)
    assert type(opened) is optuna.storages.RDBStorage
    assert opened.engine_kwargs["plugins"] == ["mnist_hpo_reconnect"] and opened.engine_kwargs["mnist_hpo_reconnect_s"] == 7
    optuna.create_study(study_name="p", storage=opened)
    copy = round_trip(opened)
    assert copy.engine_kwargs == opened.engine_kwargs
    assert [s.study_name for s in copy.get_all_studies()] == ["p"]


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/s.db", "journal:{tmp}/s.log"])
def test_a_pickled_storage_can_be_shared_with_another_process(tmp_path, url):
    """What a multiprocessing pool or Dask does: send the storage to a worker process, which writes the study."""
    import multiprocessing

    opened = storage.open_storage(url.format(tmp=tmp_path))
    optuna.create_study(study_name="mp", storage=opened)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.map(_one_trial, [opened])
    assert len(optuna.load_study(study_name="mp", storage=opened).trials) == 1


def _one_trial(opened) -> None:
    optuna.load_study(study_name="mp", storage=opened).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
