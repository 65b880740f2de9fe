"""A real search writes a SQLite study while a real `mnist-hpo dashboard` serves it and is polled.

The session's `live` fixture (conftest.py) runs the search; these tests read what it left: no trial
failed under the polling (optuna-dashboard#545: "database is locked"), every trial has its pictures
and note, and the dashboard serves them.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState
from optuna_dashboard import get_note

from mnist_hpo import storage
from mnist_hpo.dashboards import figures

from .conftest import N_TRIALS, get, get_json

pytestmark = pytest.mark.slow  # real studies or several processes: `-m 'not slow'` leaves it out


@pytest.fixture(scope="module")
def opened(live):
    return storage.open_storage(live.url, must_exist=True)


@pytest.fixture(scope="module")
def study(live, opened) -> optuna.Study:
    return storage.load_study(opened, live.study)


def test_polled_dashboard_fails_no_trial(live, study):
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert len(states) == N_TRIALS
    assert TrialState.FAIL not in states, [t.system_attrs.get("fail_reason") for t in study.trials if t.state == TrialState.FAIL]
    assert states.count(TrialState.COMPLETE) >= 2
    assert live.poller.errors == []
    # It read the study while trials were being written: the dashboard showed it at several sizes.
    assert len(live.poller.trial_counts) >= 2, live.poller.trial_counts
    assert live.poller.seen_trials >= 1
    log = live.dashboard_log.read_text(errors="replace")
    assert "database is locked" not in log and "Traceback" not in log, log[-3000:]


def test_every_trial_has_pictures_and_a_note(live, study, opened):
    store = storage.open_artifacts(live.artifacts)
    finished = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert finished
    for trial in finished:
        expected = [figures.CURVES] + ([figures.CONFUSION, figures.MISCLASSIFIED] if trial.state == TrialState.COMPLETE else [])
        for name in expected:
            artifact_id = storage.find_artifact(opened, trial, name)
            assert artifact_id is not None, (trial.number, name)
            data = storage.download_bytes(store, artifact_id)
            assert figures.png_size(data) == figures.SIZES[name]
        if trial.state == TrialState.COMPLETE:
            assert storage.find_artifact(opened, trial, "model.pt") is not None
        else:
            assert storage.find_artifact(opened, trial, figures.CONFUSION) is None
        note = get_note(_trial_handle(study, trial))
        assert note.startswith(f"## Trial {trial.number}: "), note[:200]
        assert f"| parameters | {trial.user_attrs['parameters']:,} |" in note
        assert "| device | cpu |" in note and "### Architecture" in note
        if trial.state == TrialState.PRUNED:
            assert "stopped" in note.splitlines()[0]
    study_note = get_note(study)
    assert "mnist-hpo" in study_note and "### Search space" in study_note and "| profile | smoke |" in study_note
    assert study.metric_names == ["validation accuracy"]


def _trial_handle(study: optuna.Study, trial) -> optuna.Trial:
    # optuna_dashboard.get_note takes a Study or a live Trial; a Trial object for a finished trial reads the same note.
    return optuna.Trial(study, trial._trial_id)


def test_dashboard_api_lists_the_study_and_serves_artifacts(live, study):
    summaries = get_json(live.base + "/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == [live.study]
    detail = get_json(f"{live.base}/api/studies/{live.study_id}")
    assert len(detail["trials"]) == N_TRIALS
    assert "Search space" in detail["note"]["body"]
    best = study.best_trial
    served = next(t for t in detail["trials"] if t["number"] == best.number)
    names = {a["filename"]: a for a in served["artifacts"]}
    assert {figures.CURVES, figures.CONFUSION, figures.MISCLASSIFIED, "model.pt"} <= set(names)
    meta = names[figures.CONFUSION]
    status, content_type, body = get(f"{live.base}/artifacts/{live.study_id}/{served['trial_id']}/{meta['artifact_id']}")
    assert status == 200 and content_type == "image/png"
    assert body == storage.download_bytes(storage.open_artifacts(live.artifacts), meta["artifact_id"])
