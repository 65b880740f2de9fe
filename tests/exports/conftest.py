"""One real smoke study for every export test: trained through the CLI, exported through the CLI, once per run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from export_helpers import FORMATS, STUDY, Study, cli
from outside import made_once


def exported_study(root: Path) -> Study:
    return Study(root, {fmt: root / f"new-{fmt}" / "deeper" / f"best.{fmt}" for fmt in FORMATS})


def make_study(root: Path) -> None:
    """Two smoke trials of one epoch, then `mnist-hpo export` in every format, each into folders that do not exist yet."""
    made = exported_study(root)
    done = cli(
        root,
        "search",
        "--profile",
        "smoke",
        "--n-trials",
        "2",
        "--storage",
        made.url,
        "--artifacts",
        str(made.artifacts),
        "--epochs",
        "1",
        "--seed",
        "0",
        "--device",
        "cpu",
        "--pruner",
        "none",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for fmt, out in made.exports.items():
        done = cli(root, "export", *made.args(), "--format", fmt, "--out", str(out))
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"wrote {out} ({fmt})" in done.stdout.replace("\n", "")


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Study:
    """The study and its exports, made once per run however many xdist workers ask (tests/outside.py: made_once)."""
    return exported_study(made_once(tmp_path_factory, "export-study", make_study))


@pytest.fixture(scope="session")
def best_trial(study):
    import optuna

    loaded = optuna.load_study(study_name=STUDY, storage=study.url)
    return max(loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: (t.values[0], -t.number))


@pytest.fixture(scope="session")
def real_images() -> np.ndarray:
    """2,000 real MNIST digits: the bundled fixture's 1,000 test images and its first 1,000 training images, uint8 N×28×28."""
    from mnist_hpo.data import load_fixture

    train, test = load_fixture()
    return np.concatenate([test.images.numpy(), train.images[:1000].numpy()])


@pytest.fixture(scope="session")
def ensembles(study, tmp_path_factory) -> dict[str, object]:
    """The two trials' softmax ensemble in every format, written by `build_ensemble` (the command's function)."""
    from mnist_hpo.commands.export import build_ensemble

    def make(folder: Path) -> None:
        for fmt in FORMATS:
            build_ensemble(study.url, STUDY, 2, folder / f"ensemble.{fmt}", study.artifacts, "cpu", fmt=fmt)

    folder = made_once(tmp_path_factory, "ensembles", make)
    return {fmt: folder / f"ensemble.{fmt}" for fmt in FORMATS}
