"""Commands started truly at once (a barrier, tests/racer.py) on one study: creation is idempotent, budgets exact.

Five `study create` of one study on an empty PostgreSQL database raced to create Optuna's tables
("duplicate key", reported as a connection failure) and to write the settings ("not created by
mnist-hpo"). Three `study create --n-trials 30` on a study of budget 20 left 43 waiting trials, and
two `search --n-trials 3` both read the old budget: each budget change now holds the study's lock
(storage/_locks.py), so concurrent ones apply one after the other.
"""

from __future__ import annotations

import optuna
import pytest
from outside import TINY_SPACE, cli_env, ok, run
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


def _study(url: str):
    study = optuna.load_study(study_name="r", storage=url)
    return study.user_attrs["mnist_hpo"]["n_trials"], study.trials


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_raises_of_one_budget_end_at_it_with_nothing_queued_beyond(backend, postgres, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}" if backend == "sqlite" else postgres.create_database(f"raise_{tmp_path.name[-12:].lower()}")
    create = ["study", "create", "--study", "r", "--profile", "smoke", "--storage", url, "--n-trials"]
    ok(run(tmp_path, *create, "20"))
    done = race(tmp_path, [[*create, "30"] for _ in range(3)], cli_env())
    assert [d.returncode for d in done] == [0, 0, 0], [d.stderr[-500:] for d in done]
    budget, trials = _study(url)
    assert budget == 30 and len(trials) == 30, (budget, len(trials))  # before: 43 WAITING trials


def test_concurrent_searches_each_add_their_trials_exactly(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    # the tiny space for one epoch: each of the 8 trials trains about a second (this test is about the budget)
    tiny = ["--profile", "smoke", "--space", str(TINY_SPACE), "--epochs", "1"]
    ok(run(tmp_path, "study", "create", "--study", "r", *tiny, "--n-trials", "2", "--storage", url))
    # --timeout bounds the whole command, waiting for the other's lock included: long enough for that
    search = ["search", "--study", "r", "--storage", url, "--n-trials", "3", "--timeout", "120", "--device", "cpu"]
    done = race(tmp_path, [search, search], cli_env())
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-500:] for d in done]
    budget, trials = _study(url)
    assert budget == 8 and len(trials) == 8, (budget, [t.state.name for t in trials])  # before: both read 2 and wrote 5
