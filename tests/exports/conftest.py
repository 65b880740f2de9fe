"""One real smoke study for every export test: trained through the CLI, exported through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from export_helpers import FORMATS, STUDY, Study, cli


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Study:
    """Two smoke trials of one epoch, then `mnist-hpo export` in every format, each into folders that do not exist yet."""
    root = tmp_path_factory.mktemp("export-study")
    made = Study(root, {fmt: root / f"new-{fmt}" / "deeper" / f"best.{fmt}" for fmt in FORMATS})
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
    return made


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

    folder = tmp_path_factory.mktemp("ensembles")
    for fmt in FORMATS:
        build_ensemble(study.url, STUDY, 2, folder / f"ensemble.{fmt}", study.artifacts, "cpu", fmt=fmt)
    return {fmt: folder / f"ensemble.{fmt}" for fmt in FORMATS}
