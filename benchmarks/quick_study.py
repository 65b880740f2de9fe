"""The README's first command, run as a newcomer runs it: `mnist-hpo search` in an empty folder, N times.

Each run is unseeded (as the README's), on the embedded SQLite default, with the quick profile's
600 s. Afterwards the study is read back through Optuna: trials (complete / pruned), the best
validation accuracy and when it was found (from the first trial's start to the best trial's end),
the published baseline (trial 0) and its time, and the chosen trial's test accuracy from
`mnist-hpo best --test`, which chooses nothing. The printed rows go into BENCHMARKS.md.

    python -m benchmarks.quick_study [--runs 5] [--keep DIR]
    python -m benchmarks.quick_study --read URL --studies A,B --artifacts DIR   # rows of studies run elsewhere

"Best by 600 s" counts only trials that had ended 600 s after the first trial started; the search starts
no trial after 600 s but lets the running one finish, which "best validation" includes.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
from optuna.trial import TrialState

from benchmarks.machine import describe
from benchmarks.warm_start import best_by, best_over_time
from mnist_hpo.tuning import own_trials
from mnist_hpo.tuning.profiles import PROFILES

STUDY = "mnist-quick"
CLI = [str(Path(sys.executable).with_name("mnist-hpo"))]
BUDGET_S = PROFILES["quick"].timeout
ENV = {k: v for k, v in os.environ.items() if k != "MNIST_HPO_STORAGE"}  # the default storage, as a newcomer has it


def run_once(folder: Path) -> dict:
    search = subprocess.run([*CLI, "search"], cwd=folder, env=ENV, capture_output=True, text=True)
    if search.returncode != 0:
        raise SystemExit(f"mnist-hpo search failed ({search.returncode}): {search.stderr[-2000:]}")
    return read_study(f"sqlite:///{folder / 'mnist-hpo.db'}", STUDY, folder / "mnist-hpo-artifacts")


def read_study(url: str, name: str, artifacts: Path) -> dict:
    """One row's figures from a finished study; the chosen trial's test accuracy through `mnist-hpo best --test`."""
    study = optuna.load_study(study_name=name, storage=url)
    ran = [t for t in own_trials(study) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    best = max((t for t in ran if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    began = min(t.datetime_start for t in ran)
    baseline = min(ran, key=lambda t: t.number)
    shown = subprocess.run(
        [*CLI, "best", "--study", name, "--storage", url, "--artifacts", str(artifacts), "--test"],
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    test = re.search(r"test accuracy ([\d.]+)%", shown.stdout)
    return {
        "trials": len(ran),
        "complete": sum(t.state == TrialState.COMPLETE for t in ran),
        "pruned": sum(t.state == TrialState.PRUNED for t in ran),
        "best": best.value,
        "best_by_budget": best_by(best_over_time(study), BUDGET_S),
        "best_number": best.number,
        "weights": best.user_attrs.get("parameters"),
        "found": (best.datetime_complete - began).total_seconds(),
        "search_s": (max(t.datetime_complete for t in ran) - began).total_seconds(),
        "baseline": baseline.value if baseline.state == TrialState.COMPLETE else None,
        "baseline_s": (baseline.datetime_complete - baseline.datetime_start).total_seconds() if baseline.datetime_complete else None,
        "test": float(test.group(1)) if test else None,
    }


def row(index: int, r: dict) -> str:
    base = f"{100 * r['baseline']:.2f} % in {r['baseline_s']:.0f} s" if r["baseline"] is not None else "pruned"
    test = f"{r['test']:.2f} %" if r["test"] is not None else ""
    return (
        f"| {index} | {r['trials']} ({r['complete']} / {r['pruned']}) | {r['search_s']:.0f} | **{100 * r['best_by_budget']:.2f} %** "
        f"| {100 * r['best']:.2f} % "
        f"(trial {r['best_number']}, {r['weights']:,} weights) | {r['found']:.0f} s | {base} | {test} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep each run's folder under DIR")
    parser.add_argument("--read", metavar="URL", help="run nothing: read the finished --studies in this storage")
    parser.add_argument("--studies", default=STUDY, help="with --read: comma-separated study names")
    parser.add_argument("--artifacts", type=Path, default=Path("mnist-hpo-artifacts"), help="with --read: their artifact folder")
    args = parser.parse_args()
    print(f"machine: {describe()}", flush=True)
    print(
        "| run | trials (complete / pruned) | search s | best validation by 600 s | best validation | found after | baseline (trial 0) "
        "| test of the chosen trial (reported only) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    results = []
    for index, name in enumerate(args.studies.split(",") if args.read else [], start=1):
        results.append(read_study(args.read, name, args.artifacts))
        print(row(index, results[-1]), flush=True)
    for index in range(1, (0 if args.read else args.runs) + 1):
        if args.keep:
            folder = args.keep / f"run{index}"
            folder.mkdir(parents=True, exist_ok=False)
            results.append(run_once(folder))
        else:
            with tempfile.TemporaryDirectory(prefix="quick-study-") as tmp:
                results.append(run_once(Path(tmp)))
        print(row(index, results[-1]), flush=True)
    bests = [100 * r["best"] for r in results]
    print(
        f"best validation over {len(bests)} runs: median {statistics.median(bests):.2f} %, worst {min(bests):.2f} %, "
        f"best {max(bests):.2f} %",
        flush=True,
    )


if __name__ == "__main__":
    main()
