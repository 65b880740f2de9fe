"""The Python API as a notebook uses it: `import mnist_hpo`, call, get objects back, nothing printed.

One small study is made through `mnist_hpo.tuning` (the bundled fixture, a tiny space, one epoch,
one thread) and read back through `mnist_hpo.load`; the command line makes the same study with the
same seed and must give the same trials, since it calls the same function.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import subprocess
import sys
import typing

import numpy as np
import optuna
import pytest
import torch
from outside import CLI, FIXTURE_NPZ, TINY_SPACE, cli_env
from PIL import Image

import mnist_hpo

STUDY = dict(profile="smoke", n_trials=3, seed=0, epochs=1, space=TINY_SPACE, threads=1)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(folder, the StudyResult, what the search printed)."""
    folder = tmp_path_factory.mktemp("api")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        result = mnist_hpo.search("s", storage=f"sqlite:///{folder}/api.db", artifacts=folder / "artifacts", **STUDY)
    return folder, result, printed.getvalue()


@pytest.fixture(scope="module")
def digits():
    with np.load(FIXTURE_NPZ) as npz:
        return npz["test_images"][:12], npz["test_labels"][:12]


def test_every_public_name_has_a_docstring_and_type_hints():
    for name in mnist_hpo.__all__:
        value = getattr(mnist_hpo, name)
        assert inspect.getdoc(value), f"mnist_hpo.{name} has no docstring"
        functions = [value] if inspect.isfunction(value) else []
        if inspect.isclass(value) and not issubclass(value, Exception):
            functions = [
                f for n, f in vars(value).items() if inspect.isfunction(f) and (not n.startswith("_") or n in ("__init__", "__call__"))
            ]
            functions += [p.fget for p in vars(value).values() if isinstance(p, property)]
            assert all(inspect.getdoc(f) for f in functions if f.__name__ != "__init__"), f"a method of mnist_hpo.{name} has no docstring"
        for function in functions:
            hints = typing.get_type_hints(function)
            parameters = [p for p in inspect.signature(function).parameters if p not in ("self", "cls")]
            missing = [p for p in [*parameters, "return"] if p not in hints]
            assert not missing, f"{name}.{function.__name__} lacks type hints for {missing}"


def test_importing_the_package_loads_no_torch():
    code = "import sys, mnist_hpo; print(mnist_hpo.__version__, 'torch' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert shown == [mnist_hpo.__version__, "False"]


def test_search_returns_the_study_and_prints_nothing(made):
    folder, result, printed = made
    assert printed == ""
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{folder}/api.db")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3 and result.name == "s"
    best = max(complete, key=lambda t: (t.value, -t.number))
    assert result.best_trial.number == best.number and result.best_accuracy == best.value
    assert [t.number for t in result.best_trials(3)] == [t.number for t in sorted(complete, key=lambda t: (-t.value, t.number))]
    rows = result.trials()
    assert [r["number"] for r in rows] == [t.number for t in study.trials]
    assert rows[0]["validation_accuracy"] == study.trials[0].value and rows[0]["params"] == study.trials[0].params
    assert rows[0]["epochs"] == 1 and rows[0]["parameters"] == study.trials[0].user_attrs["parameters"]


def test_the_command_line_gives_the_same_trials_as_the_api(made, tmp_path):
    _, result, _ = made
    options = ["--profile", "smoke", "--n-trials", "3", "--seed", "0", "--epochs", "1", "--space", str(TINY_SPACE), "--threads", "1"]
    storage = f"sqlite:///{tmp_path}/cli.db"
    done = subprocess.run(
        [*CLI, "search", "--study", "s", "--storage", storage, "--artifacts", str(tmp_path / "a"), *options],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "next:" in done.stdout  # the command line prints the commands that come next; the API never does
    cli_trials = optuna.load_study(study_name="s", storage=storage).trials
    api_trials = result.study.trials
    assert [(t.params, t.values) for t in cli_trials] == [(t.params, t.values) for t in api_trials]


def test_best_model_predicts_like_its_export_from_every_kind_of_image(made, digits, tmp_path):
    _, result, _ = made
    model = result.best_model()
    assert isinstance(model, torch.nn.Module) and not model.training
    images, _ = digits
    exported = result.export(tmp_path / "best.onnx", "onnx")
    assert exported.path.is_file() and exported.card.is_file() and len(exported.sha256) == 64
    in_memory = mnist_hpo.predict(model, images)
    from_file = mnist_hpo.predict(exported.path, images)
    assert [p.label for p in in_memory] == [p.label for p in from_file]
    assert np.allclose([p.probability for p in in_memory], [p.probability for p in from_file], atol=1e-4)
    labels = [p.label for p in in_memory]

    pngs = []
    for index, pixels in enumerate(images):
        pngs.append(tmp_path / f"digit-{index}.png")
        Image.fromarray(pixels).save(pngs[-1])
    forms = {
        "files": pngs,
        "path strings": [str(p) for p in pngs],
        "PIL images": [Image.open(p) for p in pngs],
        "a float tensor N×1×28×28 in 0-1": torch.from_numpy(images).float().div(255).unsqueeze(1),
        "black on white RGB arrays": [np.stack([255 - im] * 3, axis=-1) for im in images],
    }
    for form, given in forms.items():
        assert [p.label for p in mnist_hpo.predict(model, given)] == labels, form
    ten_times = np.kron(images[0], np.ones((10, 10), dtype=np.uint8))  # 280×280: the size a drawing pad gives
    assert mnist_hpo.predict(model, ten_times)[0].label == labels[0]
    blank = mnist_hpo.predict(model, np.zeros((50, 50), dtype=np.uint8))[0]
    assert blank.label is None and blank.uncertain and "no digit found" in blank.doubt
    with pytest.raises(mnist_hpo.UserError, match="pass H×W"):
        mnist_hpo.predict(model, np.zeros((2, 2, 5, 5)))


def test_ensemble_and_report(made, tmp_path):
    _, result, _ = made
    ensemble = result.ensemble(2, tmp_path / "ensemble.pt")
    assert [t.number for t in ensemble.trials] == [t.number for t in result.best_trials(2)]
    assert not ensemble.model.training and 0 < ensemble.val_accuracy <= 1 and 0 < ensemble.test_accuracy <= 1
    assert ensemble.export is not None and ensemble.export.path.is_file()
    page = result.report(tmp_path / "report.html")
    assert page.is_file() and "validation" in page.read_text(encoding="utf-8")


def test_load_refuses_what_is_not_there(made):
    folder, result, _ = made
    with pytest.raises(mnist_hpo.UserError, match="'nope'"):
        mnist_hpo.load("nope", storage=f"sqlite:///{folder}/api.db")
    with pytest.raises(mnist_hpo.UserError, match="did not complete"):
        result.best_model(trial=99)


def test_objective_runs_with_a_users_own_study_sampler_and_pruner(tmp_path):
    class CountingSampler(optuna.samplers.RandomSampler):
        calls = 0

        def sample_independent(self, *args, **kwargs):
            CountingSampler.calls += 1
            return super().sample_independent(*args, **kwargs)

    class PruneAfterTheFirstTrial(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number > 0

    objective = mnist_hpo.Objective("smoke", space=TINY_SPACE, epochs=2, artifacts=tmp_path / "artifacts")
    finished = []
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/own.db")
    study = optuna.create_study(
        storage=storage, directions=objective.directions, sampler=CountingSampler(seed=1), pruner=PruneAfterTheFirstTrial()
    )
    study.optimize(objective, n_trials=3, callbacks=[lambda study, trial: finished.append(trial.number)])
    first, *pruned = study.trials
    assert finished == [0, 1, 2] and CountingSampler.calls > 0
    assert first.state == optuna.trial.TrialState.COMPLETE and len(first.user_attrs["learning_curve"]) == 2
    assert [t.state for t in pruned] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(t.user_attrs["stopped"].startswith("pruned by the study's pruner after epoch 1") for t in pruned)
    kept = optuna.artifacts.get_all_artifact_meta(first, storage=storage)
    assert [meta.filename for meta in kept] == ["model.pt"]


def test_train_returns_the_network_and_its_history_quietly(tmp_path):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        trained = mnist_hpo.train("tiny-cnn", data="fixture", subset=1000, epochs=2, threads=1, save=tmp_path / "tiny.pt")
    assert printed.getvalue() == ""
    assert [r.epoch for r in trained.history] == [1, 2] and not trained.model.training
    assert trained.kept_epoch in (1, 2) and 0 < trained.val_accuracy <= 1 and 0 < trained.test_accuracy <= 1
    assert trained.checkpoint == tmp_path / "tiny.pt" and trained.checkpoint.is_file()
    assert trained.config.epochs == 2 and trained.record["data"]["source"].startswith("fixture")
