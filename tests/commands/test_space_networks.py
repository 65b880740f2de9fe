"""A space whose networks no trial can train, through the real CLI: one `error: ` line, exit 2, nothing stored.

Before a study is stored, `search` and `study create` build the smallest and the largest network
the space allows (on torch's meta device, so a network of a trillion parameters allocates nothing)
and refuse a space whose largest network is over the ceiling a trial can train, or one torch cannot
even describe. The storage is an SQLite file in the test's folder: afterwards it does not exist or
holds no study, and the folder has no file it did not have before. The function itself, and the
default spaces' sizes, are tested in-process in tests/tuning/test_networks.py.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from outside import error_line, run

pytestmark = pytest.mark.slow  # one `mnist-hpo` process per case (~5 s of torch imports): `-m 'not slow'` leaves it out

DB = "db.sqlite"
STORAGE = ["--storage", f"sqlite:///{DB}"]
CREATE = ["study", "create", "--study", "x", "--profile", "smoke", "--n-trials", "2", *STORAGE]
SEARCH = ["search", "--study", "x", "--profile", "smoke", "--n-trials", "1", "--device", "cpu", *STORAGE]

CASES = {  # name: (space file, arguments, fragments of the one error line)
    "first_channels in the hundred thousands": (
        "[first_channels]\nhigh = 100000\n\n[growth]\nhigh = 48\n",
        CREATE,
        [
            "space file space.toml (on profile smoke): the largest network it allows (kernel 7, 3 layers, first_channels 100000, growth 48",
            "more than the 200,000,000 a trial can train",
            "lower first_channels, growth or head_width",
        ],
    ),
    "a head ten million wide, by search": (
        "[head_width]\nhigh = 10000000\n",
        SEARCH,
        ["the largest network it allows (kernel 3, 4 layers, first_channels 8, growth 4, head 10000000)", "raise conv_layers_k3's low"],
    ),
    "a head no tensor can hold": (
        "[head]\nvalue = true\n\n[head_width]\nvalue = 1000000000000000000\n",
        CREATE,
        ["head 1000000000000000000) cannot be built (", "narrow first_channels, growth, head_width or the depths"],
    ),
}


def nothing_stored(folder: Path, before: set[str]) -> None:
    db = folder / DB
    if db.exists():
        assert optuna.get_all_study_names(f"sqlite:///{db}") == []
    assert {p.name for p in folder.iterdir()} <= before | {DB}


@pytest.mark.parametrize("text, args, fragments", list(CASES.values()), ids=list(CASES))
def test_a_space_no_trial_can_train_is_refused_before_anything_is_stored(tmp_path, text, args, fragments):
    (tmp_path / "space.toml").write_text(text, encoding="utf-8")
    before = {p.name for p in tmp_path.iterdir()}
    error_line(run(tmp_path, *args, "--space", "space.toml", timeout=120), *fragments)
    nothing_stored(tmp_path, before)


def test_max_params_below_the_smallest_network_is_refused_before_anything_is_stored(tmp_path):
    """Every trial would be pruned untrained: the study would fill with trials that never ran."""
    error_line(
        run(tmp_path, *CREATE, "--max-params", "10", timeout=120),
        "--max-params 10 is less than the smallest network profile smoke allows (kernel 7, 3 layers, first_channels 4, growth 0, no head: ",
        "every trial would be pruned untrained",
    )
    nothing_stored(tmp_path, set())
