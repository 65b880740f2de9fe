"""Commands started truly at once (a barrier, tests/racer.py) on one new study: creation is idempotent.

Five `study create` of one study on an empty PostgreSQL database raced to create Optuna's tables
("duplicate key", reported as a connection failure) and to write the settings ("not created by
mnist-hpo"). Each round uses a fresh, empty database; every command must succeed and agree.
"""

from __future__ import annotations

import optuna
import pytest
from outside import cli_env
from racer import race

pytestmark = pytest.mark.slow  # real processes: `-m 'not slow'` leaves it out

RACERS = 5


@pytest.mark.parametrize("round_", range(2))
def test_concurrent_creates_of_one_new_study_on_an_empty_database_all_succeed(postgres, tmp_path, round_):
    url = postgres.create_database(f"race_{round_}_{tmp_path.name[-12:].lower().replace('-', '_')}")
    create = ["study", "create", "--study", "r", "--profile", "smoke", "--n-trials", "5"]
    done = race(tmp_path, [[*create, "--storage", url] for _ in range(RACERS)], cli_env())
    assert [d.returncode for d in done] == [0] * RACERS, [d.stderr[-500:] for d in done]
    created = [d for d in done if "created study 'r' with a budget of 5 trials" in d.stdout]
    assert len(created) == 1, [d.stdout for d in done]
    study = optuna.load_study(study_name="r", storage=url)
    assert len(study.trials) == 5 and study.user_attrs["mnist_hpo"]["n_trials"] == 5
