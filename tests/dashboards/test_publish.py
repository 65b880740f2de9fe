"""publish_trial on real Optuna trials in a real SQLite study: what it uploads, and that it never fails a trial."""

from __future__ import annotations

import optuna
import pytest
import torch
from optuna.trial import TrialState
from optuna_dashboard import get_note, save_note

from mnist_hpo import storage
from mnist_hpo.dashboards import ensure_study_note, figures, publish_trial
from mnist_hpo.data import Split
from mnist_hpo.models import build_model
from mnist_hpo.trainer import TrainConfig, train

CURVE = [{"epoch": 1, "train_loss": 2.1, "val_accuracy": 0.4}, {"epoch": 2, "train_loss": 1.2, "val_accuracy": 0.8}]
CPU = torch.device("cpu")


@pytest.fixture()
def study(tmp_path) -> optuna.Study:
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=rdb, study_name="publish", direction="maximize")
    study.set_user_attr(
        "mnist_hpo",
        {"command": "mnist-hpo search --profile smoke", "profile": "smoke", "epochs": 2, "objectives": ["accuracy"], "space": {}},
    )
    return study


@pytest.fixture(scope="module")
def trained(fixture_splits):
    small = Split(fixture_splits.train.images[:500], fixture_splits.train.labels[:500])
    return train(build_model("tiny-cnn"), small, TrainConfig(epochs=1, batch_size=100), CPU, val=fixture_splits.val)


def started_trial(study: optuna.Study) -> optuna.Trial:
    trial = study.ask()
    for key, value in {
        "parameters": 9_956,
        "mult_adds": 100_000,
        "device": "cpu",
        "images_per_s": 5000.0,
        "seed": 0,
        "model_spec": {"name": "tiny-cnn"},
    }.items():
        trial.set_user_attr(key, value)
    return trial


def names(study: optuna.Study, trial: optuna.Trial) -> set[str]:
    frozen = next(t for t in study.get_trials() if t.number == trial.number)
    return {m.filename for m in optuna.artifacts.get_all_artifact_meta(frozen, storage=study._storage)}


def completed(trained, val) -> dict:
    """What the search's hook passes for a completed trial: the kept weights' validation predictions."""
    return {
        "val_accuracy": trained.val_accuracy,
        "val_images": val.images.numpy(),
        "val_labels": val.labels.numpy(),
        "predictions": trained.val_predictions.numpy(),
    }


def test_pruned_trial_gets_curves_and_a_note(study, tmp_path):
    store = storage.open_artifacts(tmp_path / "artifacts")
    trial = started_trial(study)
    publish_trial(trial, store, CURVE[:1], stopped="pruned after epoch 1", epochs=2)
    study.tell(trial, state=TrialState.PRUNED)
    assert names(study, trial) == {figures.CURVES}
    note = get_note(trial)
    assert note.startswith("## Trial 0: stopped: pruned after epoch 1") and "| epochs run | 1 of 2, stopped after epoch 1 |" in note
    assert "Conv2d" in note  # the architecture table
    assert "mnist-hpo search --profile smoke" in get_note(study)


def test_completed_trial_gets_all_pictures_from_the_predictions_it_is_given(study, tmp_path, trained, fixture_splits):
    store = storage.open_artifacts(tmp_path / "artifacts")
    trial = started_trial(study)
    publish_trial(trial, store, CURVE, **completed(trained, fixture_splits.val))
    study.tell(trial, trained.val_accuracy)
    assert names(study, trial) == {figures.CURVES, figures.CONFUSION, figures.MISCLASSIFIED}
    frozen = study.trials[0]
    data = storage.download_bytes(store, storage.find_artifact(study._storage, frozen, figures.CONFUSION))
    assert figures.png_size(data) == figures.SIZES[figures.CONFUSION]
    assert f"{100 * trained.val_accuracy:.2f}%" in get_note(trial)


def test_a_failed_upload_never_fails_the_trial(study, tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    trial = started_trial(study)
    publish_trial(trial, storage.AtomicFileSystemArtifactStore(not_a_folder), CURVE)  # must not raise
    frozen = study.get_trials(deepcopy=False)[0]
    assert frozen.state == TrialState.RUNNING and frozen.user_attrs["parameters"] == 9_956, "the trial is left as it was"
    assert "trial 0: dashboard pictures/notes not saved" in capsys.readouterr().out


def test_study_note_is_written_once_and_never_overwritten(study):
    save_note(study, "my own note")
    assert ensure_study_note(study) is False
    assert get_note(study) == "my own note"
