"""Population-based training where it cannot work, through the real CLI: one `error: ` line, exit 2, nothing stored.

PBT ranks members by one number (validation accuracy), stops none early (its bottom quantile copies
the top instead), and sets its own budget (population x generations, set once). Each case checks
the line says what is wrong and how to fix it, and that the storage is as it was.
"""

from __future__ import annotations

import optuna
import pytest
from outside import error_line, ok, run, sqlite_dump

pytestmark = pytest.mark.slow

DB = "db.sqlite"
STORAGE = ["--storage", f"sqlite:///{DB}"]
SEARCH = ["search", "--study", "x", "--profile", "smoke", "--device", "cpu", *STORAGE]
CREATE = ["study", "create", "--study", "x", "--profile", "smoke", *STORAGE]

NEW_STUDY = {  # name: (arguments, fragments of the one error line)
    "two objectives": ([*SEARCH, "--pbt", "--objectives", "accuracy,params"], ["--pbt ranks its members by validation accuracy alone"]),
    "a pruner": ([*SEARCH, "--pbt", "--pruner", "hyperband"], ["--pbt stops no member early", "leave out --pruner"]),
    "a trial budget": ([*CREATE, "--pbt", "--n-trials", "5"], ["its population times its generations", "leave out --n-trials"]),
    "one member": ([*SEARCH, "--pbt", "--population", "1"], ["--population must be at least 2 members"]),
    "an interval past the epochs": ([*SEARCH, "--pbt", "--exploit-every", "3"], ["--exploit-every must be 1 to 2 epochs"]),
    "a stop rule that counts trials": ([*SEARCH, "--pbt", "--stop-after", "3"], ["--stop-after and --terminator", "(--target works)"]),
    "a population without --pbt": ([*SEARCH, "--population", "4"], ["set up population-based training; add --pbt"]),
}


@pytest.mark.parametrize("args, fragments", list(NEW_STUDY.values()), ids=list(NEW_STUDY))
def test_pbt_where_it_cannot_work_is_refused_before_anything_is_stored(tmp_path, args, fragments):
    error_line(run(tmp_path, *args, timeout=120), *fragments)
    assert not (tmp_path / DB).exists() or optuna.get_all_study_names(f"sqlite:///{tmp_path / DB}") == []


def test_a_population_based_study_keeps_its_budget_and_a_plain_one_does_not_become_one(tmp_path):
    ok(run(tmp_path, *CREATE, "--pbt", "--population", "3"))
    before = sqlite_dump(tmp_path / DB)
    error_line(run(tmp_path, *SEARCH, "--n-trials", "2"), "study 'x' is population-based: its budget is 6 trials; leave out --n-trials")
    error_line(run(tmp_path, *CREATE, "--n-trials", "9"), "study 'x' is population-based", "leave out --n-trials")
    assert sqlite_dump(tmp_path / DB) == before
    ok(run(tmp_path, *CREATE, "--study", "plain", "--n-trials", "2"))
    error_line(run(tmp_path, *SEARCH, "--study", "plain", "--pbt"), "study 'plain' exists with another pbt")
    plain = optuna.load_study(study_name="plain", storage=f"sqlite:///{tmp_path / DB}")
    assert len(plain.trials) == 2 and plain.user_attrs["mnist_hpo"]["pbt"] is None
