"""The few Optuna internals mnist-hpo relies on still do what it needs, on real SQLite and journal storages.

If Optuna changes its schema or these internals, this is the test that fails, with a message saying
which internal and which Optuna versions mnist-hpo was tested with.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from mnist_hpo import storage


@pytest.fixture
def sql(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 'x.db'}", heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(study_name="s", storage=rdb, direction="maximize")
    for _ in range(3):
        study.enqueue_trial({})
    return rdb, study, rdb.get_study_id_from_name("s")


def test_the_installed_optuna_has_every_internal_used():
    storage.check_optuna()  # raises OptunaInternalsChanged naming the missing piece


def test_take_is_atomic_prefers_the_first_key_and_records_the_first_heartbeat(sql):
    rdb, study, study_id = sql
    retry = optuna.create_trial(state=TrialState.WAITING, system_attrs={"retry_history": [0]})
    study.add_trial(retry)
    taken = storage.take_waiting_trial(rdb, study_id, "retry_history")
    assert taken is not None and taken[1] == 3, "the retry goes first, whatever its number"
    assert rdb.get_trial(taken[0]).state == TrialState.RUNNING
    assert storage.running_without_heartbeat(rdb, study_id) == [], "the take recorded the first heartbeat"
    others = [storage.take_waiting_trial(rdb, study_id, "retry_history") for _ in range(4)]
    assert [t[1] for t in others[:3]] == [0, 1, 2] and others[3] is None
    assert storage.count_states(rdb, study_id) == {TrialState.RUNNING: 4}


def test_the_take_marks_the_trial_in_the_same_transaction_and_running_marks_are_read_in_one_query(sql):
    rdb, study, study_id = sql
    owner = {"host": "h", "pid": 7}
    trial_id, number = storage.take_waiting_trial(rdb, study_id, "retry_history", ("mnist_hpo:owner", owner))
    assert rdb.get_trial(trial_id).system_attrs["mnist_hpo:owner"] == owner, "read back through Optuna's public API"
    assert storage.take_waiting_trial(rdb, study_id, "retry_history") is not None  # taken without a mark
    assert storage.running_attrs(rdb, study_id, "mnist_hpo:owner") == {trial_id: owner}, "unmarked trials are left out"
    trial = storage.trial_handle(study, trial_id, number)
    study.tell(trial, trial.suggest_float("x", 0, 1))
    assert storage.running_attrs(rdb, study_id, "mnist_hpo:owner") == {}, "finished trials are left out"


def test_running_trials_that_never_beat_are_found(sql):
    rdb, _, study_id = sql
    trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, 0)
    assert rdb.set_trial_state_values(trial_id, state=TrialState.RUNNING)  # as study.ask() or another tool leaves it
    assert storage.running_without_heartbeat(rdb, study_id) == [trial_id]
    rdb.record_heartbeat(trial_id)
    assert storage.running_without_heartbeat(rdb, study_id) == []


def test_a_taken_trial_takes_parameters_and_is_told_through_the_public_api(sql):
    rdb, study, study_id = sql
    trial_id, number = storage.take_waiting_trial(rdb, study_id, "retry_history")
    trial = storage.trial_handle(study, trial_id, number)
    x = trial.suggest_float("x", 0, 1)
    trial.report(x, 1)
    study.tell(trial, x)
    frozen = study.trials[number]
    assert frozen.state == TrialState.COMPLETE and frozen.params == {"x": x} and frozen.intermediate_values == {1: x}


def test_counts_and_takes_on_a_journal_storage_use_the_public_api(tmp_path):
    journal = storage.open_storage(f"journal:{tmp_path / 'j.log'}")
    study = optuna.create_study(study_name="j", storage=journal)
    study.enqueue_trial({})
    study_id = journal.get_study_id_from_name("j")
    assert not storage.is_sql(journal)
    assert storage.count_states(journal, study_id) == {TrialState.WAITING: 1}
    trial_id = journal.get_trial_id_from_study_id_trial_number(study_id, 0)
    assert journal.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    trial = storage.trial_handle(study, trial_id, 0)
    study.tell(trial, trial.suggest_float("x", 0, 1))
    assert storage.count_states(journal, study_id) == {TrialState.COMPLETE: 1}


def test_a_missing_internal_is_a_one_line_error_naming_the_tested_versions(monkeypatch):
    from optuna.storages._rdb import models

    monkeypatch.delattr(models, "TrialHeartbeatModel")
    with pytest.raises(storage.OptunaInternalsChanged, match=r"lacks an internal .*TrialHeartbeatModel.*pip install 'optuna>=5\.0,<5\.1'"):
        storage.check_optuna()
