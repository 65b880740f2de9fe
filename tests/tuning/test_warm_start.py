"""Warm starts on real SQLite studies: copies are labelled, seed the sampler, and count in nothing; refusals are one line.

One real source study (tiny networks) and one study warm-started from it through the CLI are made once per module; a
copied trial better than any of the new study's own is then added, so every ranking that let copies in would pick it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from mnist_hpo import storage
from mnist_hpo.commands.search import search as run_search
from mnist_hpo.commands.status import completed_by_validation
from mnist_hpo.errors import UserError
from mnist_hpo.tuning import SearchRequest, budget_view, get_profile, new_settings, own_trials
from mnist_hpo.tuning.attrs import COPIED_ATTR
from mnist_hpo.tuning.copies import check_compatible, copy_trials
from mnist_hpo.tuning.settings import StudySettings
from mnist_hpo.tuning.space import Space
from mnist_hpo.tuning.stopping import StopRules, target_reason

CLI = [sys.executable, "-m", "mnist_hpo"]
TINY_SPACE = Path(__file__).parents[1] / "distributed" / "tiny_space.toml"
TINY = ["--profile", "smoke", "--space", str(TINY_SPACE)]


def env() -> dict[str, str]:
    cleaned = {k: v for k, v in os.environ.items() if k != "MNIST_HPO_STORAGE"}
    return {**cleaned, "OMP_NUM_THREADS": "1", "COLUMNS": "250"}


def cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=folder, env=env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


class Made:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = f"sqlite:///{folder / 'study.db'}"
        self.rdb = storage.open_storage(self.url)

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.rdb)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks on a small shared CPU: one thread is faster than two."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Made:
    folder = tmp_path_factory.mktemp("warm")
    made = Made(folder)
    run_search(
        SearchRequest(
            study="src",
            storage=made.url,
            artifacts=folder / "mnist-hpo-artifacts",
            profile="smoke",
            space_file=TINY_SPACE,
            n_trials=4,
            seed=0,
            pruner="none",
            device="cpu",
        )
    )
    done = cli(
        folder,
        "search",
        *TINY,
        "--study",
        "w",
        "--storage",
        made.url,
        "--warm-start",
        "src",
        "--n-trials",
        "2",
        "--seed",
        "1",
        "--device",
        "cpu",
    )
    assert done.returncode == 0, done.stderr
    assert "seeded with 4 finished trials copied from 'src'" in done.stdout
    w = made.study("w")
    best_copy = next(t for t in made.study("src").trials if t.state == TrialState.COMPLETE)
    better = optuna.trial.create_trial(
        value=0.999, params=best_copy.params, distributions=best_copy.distributions, user_attrs={"parameters": 1}
    )
    better.number = 99
    assert copy_trials(w, "src", [better]) == 1  # a copy better than anything: nothing may rank it
    return made


def test_copies_are_labelled_and_count_in_no_budget(made):
    source, w = made.study("src"), made.study("w")
    copies = [t for t in w.trials if COPIED_ATTR in t.user_attrs]
    assert sorted(t.user_attrs[COPIED_ATTR]["trial"] for t in copies) == [0, 1, 2, 3, 99]
    assert all(t.user_attrs[COPIED_ATTR]["study"] == "src" and t.state == TrialState.COMPLETE for t in copies)
    by_number = {t.number: t for t in source.trials}
    for copy in copies[:4]:
        original = by_number[copy.user_attrs[COPIED_ATTR]["trial"]]
        assert copy.params == original.params and copy.values == original.values
        assert copy.intermediate_values == original.intermediate_values and "published_baseline" not in copy.user_attrs
    own = own_trials(w)
    assert [t.number for t in own] == [0, 1] and own[0].user_attrs["published_baseline"]  # trial 0 is still this study's baseline
    assert w.user_attrs["warm_start"] == {"study": "src", "copied": {"COMPLETE": 5, "PRUNED": 0}}
    view = budget_view(made.rdb, made.rdb.get_study_id_from_name("w"), 2)
    assert view.finished == 2 and view.met and view.counts[TrialState.COMPLETE] == 2
    assert StudySettings.load(w).warm_start == "src"


def test_rankings_leave_copies_out(made, capsys):
    from mnist_hpo.dashboards.notes import study_note
    from mnist_hpo.dashboards.report import render_report
    from mnist_hpo.tuning import print_outcome

    w = made.study("w")
    own_best = max(own_trials(w, states=(TrialState.COMPLETE,)), key=lambda t: t.values[0])
    assert completed_by_validation(w)[0].number == own_best.number  # best, export, ensemble and train --from-study rank this
    settings = StudySettings.load(w)
    settings.target = 0.99  # the copy reached 0.999; the study's own tiny networks did not
    assert target_reason(w.get_trials(states=(TrialState.COMPLETE,)), 0.99) is not None  # with the copy counted it would stop
    assert StopRules(settings, 1000).reason(w, 0) is None
    print_outcome(w, StudySettings.load(w), "--study w")
    out = capsys.readouterr().out
    assert f"best trial {own_best.number}:" in out and "against the published baseline (trial 0)" in out
    status = cli(made.folder, "status", "--study", "w", "--storage", made.url)
    assert status.returncode == 0, status.stderr
    assert "study w: 0 running, 2 complete" in status.stdout and "5 trials copied" in status.stdout
    assert f"best trial {own_best.number}:" in status.stdout and "99.90%" not in status.stdout
    html = render_report(w, made.rdb)
    assert "99.90%" not in html and "5 finished trials copied from study src" in html
    assert "5 finished trials copied from study src" in study_note("w", w.user_attrs)


def test_the_copies_seed_the_sampler(made):
    """Same sampler seed: the cold study's first free trial is a random start-up draw, the warm one's comes from TPE."""
    cold = run_search(
        SearchRequest(
            study="cold",
            storage=made.url,
            artifacts=made.folder / "mnist-hpo-artifacts",
            profile="smoke",
            space_file=TINY_SPACE,
            n_trials=2,
            seed=1,
            device="cpu",
        )
    )
    assert cold.trials[0].params == made.study("w").trials[0].params  # the published baseline in both
    assert cold.trials[1].params != made.study("w").trials[1].params


def test_compatibility_names_the_parameter_or_the_objectives():
    smoke = get_profile("smoke", False)
    ours = new_settings(SearchRequest(profile="smoke"), smoke)
    narrower = new_settings(SearchRequest(profile="smoke", space_file=TINY_SPACE), smoke)
    with pytest.raises(
        UserError,
        match=r"parameter batch_size differs \(one of 32, 64 here, fixed at 64 there\) \(and 5 more: "
        r"conv_layers_k7, first_channels, growth, head, kernel_size\)",
    ):
        check_compatible(narrower, ours, "other")
    lr = StudySettings(**{**ours.to_dict(), "space": Space.from_dict(ours.space).with_overrides({"lr": {"low": 1e-4}}).to_dict()})
    with pytest.raises(
        UserError, match=re.escape("parameter lr differs (float in [0.001, 0.01], log here, float in [0.0001, 0.01], log there);")
    ):
        check_compatible(lr, ours, "other")
    two = new_settings(SearchRequest(profile="smoke", objectives="accuracy,params"), smoke)
    with pytest.raises(UserError, match="it optimises accuracy,params, this study accuracy"):
        check_compatible(two, ours, "other")
    check_compatible(ours, new_settings(SearchRequest(profile="smoke", seed=3, epochs=5), smoke), "other")  # seeds, epochs may differ


def snapshot(url: str) -> dict:
    rdb = storage.open_storage(url)
    return {
        name: [
            (t.number, t.state, t.values, t.params, sorted(t.user_attrs)) for t in optuna.load_study(study_name=name, storage=rdb).trials
        ]
        for name in storage.list_study_names(rdb)
    } | {"attrs": [optuna.load_study(study_name=n, storage=rdb).user_attrs for n in storage.list_study_names(rdb)]}


def add_study_with_other_data(made: Made) -> None:
    """An mnist-hpo study like src, whose recorded data digest differs (as a study on other data records)."""
    if "other-data" in storage.list_study_names(made.rdb):
        return
    src = made.study("src")
    study = optuna.create_study(study_name="other-data", storage=made.rdb, direction="maximize")
    settings = StudySettings.load(src)
    settings.data_digest = "0123456789abcdef"
    settings.save(study)
    study.add_trial(src.trials[1])


REFUSALS = {
    "another space": (
        ["--profile", "smoke", "--study", "x", "--warm-start", "src"],
        ["cannot warm-start from 'src': parameter", "differs", "--space"],
    ),
    "other data": (
        [*TINY, "--study", "x", "--warm-start", "other-data"],
        ["cannot warm-start from 'other-data': its data differ", "data digest 0123456789abcdef there"],
    ),
    "an existing study": ([*TINY, "--study", "w", "--warm-start", "src"], ["study 'w' exists; --warm-start seeds a new study only"]),
    "no such study": ([*TINY, "--study", "x", "--warm-start", "nope"], ["no study 'nope' in", "existing studies: src, w"]),
    "itself": ([*TINY, "--study", "x", "--warm-start", "x"], ["a study cannot warm-start from itself"]),
}


@pytest.mark.parametrize(("args", "fragments"), list(REFUSALS.values()), ids=list(REFUSALS))
def test_refusals_are_one_line_and_write_nothing(made, capsys, args, fragments):
    from mnist_hpo.cli import main

    add_study_with_other_data(made)
    before = snapshot(made.url)
    with pytest.raises(SystemExit) as exited:
        main(["search", *args, "--storage", made.url, "--n-trials", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert snapshot(made.url) == before


def test_through_the_console_script_a_missing_storage_is_refused_and_not_created(tmp_path):
    done = cli(tmp_path, "search", *TINY, "--study", "x", "--warm-start", "src", "--storage", f"sqlite:///{tmp_path / 'none.db'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1, done.stderr
    assert not (tmp_path / "none.db").exists()
