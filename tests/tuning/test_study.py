"""End-to-end studies on real SQLite files, real MNIST subsets and real processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from outside import TINY_SPACE  # ~1 s epochs on one thread

from mnist_hpo import storage
from mnist_hpo.checkpoints import load_checkpoint
from mnist_hpo.commands.export import export_trial
from mnist_hpo.commands.search import search as run_search, show_outcome
from mnist_hpo.commands.status import completed_by_validation
from mnist_hpo.commands.trials import trial_model
from mnist_hpo.data import load_fixture
from mnist_hpo.errors import UserError
from mnist_hpo.trainer import predict_logits
from mnist_hpo.tuning import SearchRequest
from mnist_hpo.tuning.objective import MODEL_ARTIFACT
from mnist_hpo.tuning.settings import SCHEMA, StudySettings
from mnist_hpo.tuning.space import Space

pytestmark = pytest.mark.slow  # real studies or several processes: `-m 'not slow'` leaves it out

CLI = [sys.executable, "-m", "mnist_hpo"]


def smoke(tmp: Path, study: str = "s", **overrides) -> SearchRequest:
    request = SearchRequest(
        study=study, storage=f"sqlite:///{tmp}/study.db", artifacts=tmp / "artifacts", profile="smoke", seed=0, n_trials=6, device="cpu"
    )
    for key, value in overrides.items():
        setattr(request, key, value)
    return request


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory) -> tuple[Path, optuna.Study]:
    tmp = tmp_path_factory.mktemp("smoke")
    return tmp, run_search(smoke(tmp))


def trial_checkpoint(tmp: Path, study: optuna.Study, trial):
    return trial_model(
        storage.open_storage(f"sqlite:///{tmp}/study.db"), study, trial, storage.open_artifacts(tmp / "artifacts", create=False)
    )


def copy_study(source: Path, target: Path) -> None:
    """The database through SQLite's backup API (a WAL file holds recent writes) plus the artifacts."""
    with sqlite3.connect(source / "study.db") as src, sqlite3.connect(target / "study.db") as dst:
        src.backup(dst)
    shutil.copytree(source / "artifacts", target / "artifacts")


def trial_states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials(deepcopy=False)]


def test_smoke_study_completes_prunes_and_records_everything(smoke_study):
    tmp, study = smoke_study
    trials = study.get_trials()
    settings = StudySettings.load(study)
    assert len(trials) == 6 and TrialState.RUNNING not in trial_states(study)
    assert TrialState.COMPLETE in trial_states(study)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "the smoke study should prune at least one trial"
    for trial in pruned:  # really stopped early, not just labelled
        assert trial.user_attrs["epochs_run"] < settings.epochs
        assert len(trial.intermediate_values) == trial.user_attrs["epochs_run"]
    first = trials[0]
    assert first.user_attrs["published_baseline"] is True
    assert first.params == Space.from_dict(settings.space).published()
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            assert trial.value == max(trial.intermediate_values.values())
            assert storage.find_artifact(storage.open_storage(f"sqlite:///{tmp}/study.db"), trial, MODEL_ARTIFACT)
            for key in ("parameters", "mult_adds", "epochs_run", "seconds", "images_per_s", "device", "seed", "versions"):
                assert key in trial.user_attrs, key
    assert settings.profile == "smoke" and settings.data_digest and settings.versions["optuna"] == optuna.__version__
    assert settings.n_trials == 6 and settings.schema == SCHEMA
    assert not list((tmp / "artifacts").glob("resume-*")), "finished trials must not leave resume states behind"


def test_continuing_adds_trials_and_refuses_another_objective_set(smoke_study, tmp_path):
    tmp, _ = smoke_study
    copy_study(tmp, tmp_path)
    study = run_search(smoke(tmp_path, n_trials=2))
    assert len(study.trials) == 8
    assert sum(1 for t in study.trials if t.user_attrs.get("published_baseline")) == 1
    with pytest.raises(UserError, match="optimises accuracy, not accuracy,params"):
        run_search(smoke(tmp_path, objectives="accuracy,params", n_trials=1))
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/study.db").trials) == 8


def test_same_seed_gives_the_same_study(tmp_path):
    first = run_search(smoke(tmp_path, study="a", n_trials=3, seed=11))
    second = run_search(smoke(tmp_path, study="b", n_trials=3, seed=11))
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert [t.values for t in first.trials] == [t.values for t in second.trials]
    assert [t.intermediate_values for t in first.trials] == [t.intermediate_values for t in second.trials]


def test_parameter_budget_prunes_big_networks_before_training(tmp_path, capsys):
    budget = 20_000
    study = run_search(smoke(tmp_path, n_trials=5, max_params=budget))
    lines = {
        int(line.split()[1]): line for line in capsys.readouterr().out.splitlines() if re.match(r"trial +\d+ (COMPLETE|PRUNED) ", line)
    }
    assert sorted(lines) == [t.number for t in study.trials], lines
    for trial in study.trials:  # each trial's line in the words used everywhere else, counts read as English
        epochs = trial.user_attrs["epochs_run"]
        said = f"  {trial.user_attrs['parameters']:,} parameters  {epochs} {'epoch' if epochs == 1 else 'epochs'}  "
        assert said in lines[trial.number] and "weights" not in lines[trial.number], lines[trial.number]
    over = [t for t in study.trials if t.user_attrs["parameters"] > budget]
    under = [t for t in study.trials if t.user_attrs["parameters"] <= budget]
    assert over and under
    for trial in over:
        assert trial.state == TrialState.PRUNED and trial.user_attrs["epochs_run"] == 0 and not trial.intermediate_values
        assert "parameter budget" in trial.user_attrs["stopped"]
    assert any(t.intermediate_values for t in under)


def test_multi_objective_study_has_a_pareto_front(tmp_path, capsys):
    request = smoke(tmp_path, n_trials=4, objectives="accuracy,params")
    study = run_search(request)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    front = study.best_trials
    assert front and all(len(t.values) == 2 for t in front)
    assert all(t.values[1] == t.user_attrs["parameters"] for t in front)
    show_outcome(study, request.storage, request.artifacts)
    assert "Pareto front" in capsys.readouterr().out


def test_export_loads_with_weights_only_and_predicts_like_the_trial(smoke_study, tmp_path):
    tmp, study = smoke_study
    best = completed_by_validation(study)[0]
    trial_model, _ = trial_checkpoint(tmp, study, best)
    out = tmp_path / "best.pt"
    digest = export_trial(f"sqlite:///{tmp}/study.db", "s", None, out, "pt", tmp / "artifacts").sha256
    payload = torch.load(out, weights_only=True)
    assert payload["metrics"]["val_accuracy"] == best.value and "test_accuracy" in payload["metrics"]
    assert str(torch.__version__).startswith(payload["versions"]["torch"]) and len(digest) == 64
    exported, _ = load_checkpoint(out)
    _, test = load_fixture()
    images = test.images[:200]
    assert torch.equal(predict_logits(exported, images, torch.device("cpu")), predict_logits(trial_model, images, torch.device("cpu")))

    export_trial(f"sqlite:///{tmp}/study.db", "s", best.number, tmp_path / "best.safetensors", "safetensors", tmp / "artifacts")
    from safetensors import safe_open
    from safetensors.torch import load_file

    from mnist_hpo.models import build_model

    with safe_open(tmp_path / "best.safetensors", "pt") as f:  # one file: the spec is in its own header
        header = f.metadata()
    rebuilt = build_model(json.loads(header["model_spec"]))
    rebuilt.load_state_dict(load_file(tmp_path / "best.safetensors"))
    assert torch.equal(
        predict_logits(rebuilt.eval(), images, torch.device("cpu")), predict_logits(trial_model, images, torch.device("cpu"))
    )


def test_kaggle_csv_round_trip_through_the_cli(smoke_study, tmp_path):
    tmp, study = smoke_study
    best = completed_by_validation(study)[0]
    model, _ = trial_checkpoint(tmp, study, best)
    export_trial(f"sqlite:///{tmp}/study.db", "s", None, tmp_path / "best.pt", "pt", tmp / "artifacts")
    _, test = load_fixture()
    images = test.images[:40]
    rows = [",".join(f"pixel{i}" for i in range(784))]
    rows += [",".join(str(int(v)) for v in image.flatten()) for image in images]
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    done = subprocess.run(
        [
            *CLI,
            "predict",
            "--checkpoint",
            str(tmp_path / "best.pt"),
            "--kaggle-csv",
            str(tmp_path / "test.csv"),
            "--out",
            str(tmp_path / "sub.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "sub.csv").read_text().splitlines()
    expected = predict_logits(model, images, torch.device("cpu")).argmax(1).tolist()
    assert lines[0] == "ImageId,Label"
    assert lines[1:] == [f"{i},{label}" for i, label in enumerate(expected, start=1)]


def test_optunas_own_cli_reads_our_storage(smoke_study):
    tmp, study = smoke_study
    url = f"sqlite:///{tmp}/study.db"
    optuna_cli = shutil.which("optuna", path=os.path.dirname(sys.executable))
    trials = subprocess.run(
        [optuna_cli, "trials", "--study-name", "s", "--storage", url, "-f", "json"], capture_output=True, text=True, timeout=120
    )
    assert trials.returncode == 0, trials.stderr
    assert len(json.loads(trials.stdout)) == len(study.trials)
    best = subprocess.run(
        [optuna_cli, "best-trial", "--study-name", "s", "--storage", url, "-f", "json"], capture_output=True, text=True, timeout=120
    )
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["number"] == study.best_trial.number


def test_sigint_fails_the_running_trial_re_queues_it_and_the_study_continues_to_its_budget(tmp_path):
    db = tmp_path / "study.db"
    command = [
        *CLI,
        "search",
        "--profile",
        "smoke",
        "--study",
        "i",
        "--storage",
        f"sqlite:///{db}",
        "--artifacts",
        str(tmp_path / "a"),
        "--seed",
        "0",
        "--device",
        "cpu",
    ]
    process = subprocess.Popen([*command, "--n-trials", "6"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until a trial is running
        time.sleep(0.5)
        if not db.exists():
            continue
        try:
            with sqlite3.connect(db) as connection:
                rows = connection.execute("select number, state from trials").fetchall()
        except sqlite3.OperationalError:  # the search has not created its tables yet
            continue
        if any(state == "RUNNING" for number, state in rows):
            break
    else:
        process.kill()
        pytest.fail("no trial started in time")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "mnist-hpo search --study i" in err
    study = optuna.load_study(study_name="i", storage=f"sqlite:///{db}")
    states = trial_states(study)
    assert TrialState.RUNNING not in states and TrialState.FAIL in states
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert failed.user_attrs["fail_reason"].startswith("interrupted by SIGINT")
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == failed.number)
    assert retry.state == TrialState.WAITING and retry.params == failed.params

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)  # no --n-trials: on to the budget
    assert again.returncode == 0, again.stderr
    trials = optuna.load_study(study_name="i", storage=f"sqlite:///{db}").trials
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 6
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_onnx_export_computes_what_the_trial_computes(smoke_study, tmp_path):
    onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx extra")
    from onnx.reference import ReferenceEvaluator

    tmp, study = smoke_study
    best = completed_by_validation(study)[0]
    model, _ = trial_checkpoint(tmp, study, best)
    export_trial(f"sqlite:///{tmp}/study.db", "s", None, tmp_path / "best.onnx", "onnx", tmp / "artifacts")
    _, test = load_fixture()
    images = test.images[:8]
    x = images.unsqueeze(1).float().numpy()  # raw 0-255 pixels: the graph scales them itself
    logits, _ = ReferenceEvaluator(onnx.load(tmp_path / "best.onnx")).run(None, {"pixels": x})
    expected = predict_logits(model, images, torch.device("cpu"))
    assert torch.allclose(torch.from_numpy(logits), expected, atol=1e-4)


def test_without_n_trials_the_profiles_timeout_stops_the_search(tmp_path, monkeypatch, capsys):
    """The quick profile's 10 minutes, shrunk: a profile timeout applies when --n-trials is not given (from the command's start)."""
    from dataclasses import replace

    from mnist_hpo.tuning.profiles import PROFILES

    monkeypatch.setitem(PROFILES, "smoke", replace(PROFILES["smoke"], n_trials=200, timeout=6))
    request = SearchRequest(
        study="t",
        storage=f"sqlite:///{tmp_path}/study.db",
        artifacts=tmp_path / "artifacts",
        profile="smoke",
        seed=0,
        device="cpu",
        space_file=TINY_SPACE,
    )
    study = run_search(request)
    ran = [t for t in study.trials if t.state != TrialState.WAITING]
    assert 1 <= len(ran) < 200 and all(t.state.is_finished() for t in ran)
    out = capsys.readouterr().out
    assert re.search(r"starting trials for up to [0-6]\.\d s more \(--timeout counts from the command's start\)", out), out
    assert "--timeout reached, starting no more trials" in out
