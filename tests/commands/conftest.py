"""Two real smoke studies in one ./mnist-hpo.db, made once per run by the real `mnist-hpo search`.

"s" is a single-objective study of 6 trials (seed 0: five complete, one pruned), "mo" a
multi-objective one (--objectives accuracy,params) of 3 trials; both keep their checkpoints in
./mnist-hpo-artifacts, as a user's would. One xdist worker makes them, the others wait and use them
(tests/outside.py: made_once). Tests that read them get their own copy (`studies`), so no test sees
another's writes; tests that must not write compare it before and after (`Unchanged`).
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from outside import completed_by_validation, copy_study, made_once, ok, run, sqlite_url, trials_of

SMOKE = ["search", "--profile", "smoke", "--seed", "0"]


def make_studies(folder: Path) -> None:
    ok(run(folder, *SMOKE, "--study", "s", "--n-trials", "6"))
    ok(run(folder, *SMOKE, "--study", "mo", "--n-trials", "3", "--objectives", "accuracy,params"))
    url = sqlite_url(folder)
    states = [t.state for t in trials_of(url, "s")]
    assert optuna.trial.TrialState.PRUNED in states and len(completed_by_validation(trials_of(url, "s"))) >= 3, states


@pytest.fixture(scope="session")
def made_studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made once per run, also under pytest-xdist (made_once), so the modules using it can run on different workers."""
    return made_once(tmp_path_factory, "studies", make_studies)


@pytest.fixture
def studies(made_studies: Path, tmp_path: Path) -> Path:
    """This test's own copy of ./mnist-hpo.db and ./mnist-hpo-artifacts, in tmp_path (also its working folder)."""
    return copy_study(made_studies, tmp_path)
