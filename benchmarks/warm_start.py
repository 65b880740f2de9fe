"""Warm start against cold start: the same timed study, seeded or not with an earlier study's finished trials.

    python -m benchmarks.warm_start [--profile quick] [--budget 600] [--source-budget 600] [--seeds 3]
        [--source-seed 100] [--unseeded] [--keep DIR] [--device cpu]

First a source study (`ws-source`, sampler seed --source-seed, --source-budget seconds) runs, unless
--keep DIR already holds it finished. Then, for each seed, a cold study (`ws-cold-SEED`) and a study
warm-started from the source (`ws-warm-SEED`, `search --warm-start ws-source`) run for --budget
seconds each (`search --timeout`: no trial starts after it; the running one finishes), interleaved so
that machine drift hits both alike. Both have trial 0 = the published baseline, as every study does.
--unseeded gives no study a sampler seed, as the README's `mnist-hpo search`: the source and cold studies
are then runs of the default quick study as a newcomer gets it (a timed study does not repeat even seeded).

Reported: each study's best validation accuracy over time (seconds from the study's first trial
start to each trial's end, own trials only: the copies are never counted) and the best among the
trials that had finished by --budget seconds. All accuracies are on the validation split.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import optuna
from optuna.trial import TrialState

from benchmarks.machine import describe
from mnist_hpo.commands.search import search as run_search
from mnist_hpo.tuning import SearchRequest, own_trials

SOURCE = "ws-source"


def best_over_time(study: optuna.Study) -> list[tuple[float, float]]:
    """(seconds since the study's first trial started, best validation so far) at each own completed trial's end."""
    trials = [t for t in own_trials(study) if t.state.is_finished() and t.datetime_start]
    if not trials:
        return []
    start = min(t.datetime_start for t in trials)
    curve, best = [], 0.0
    for trial in sorted(trials, key=lambda t: t.datetime_complete):
        if trial.state == TrialState.COMPLETE:
            best = max(best, trial.values[0])
        curve.append(((trial.datetime_complete - start).total_seconds(), best))
    return curve


def best_by(curve: list[tuple[float, float]], seconds: float) -> float:
    reached = [best for at, best in curve if at <= seconds]
    return reached[-1] if reached else 0.0


def run(name: str, url: str, folder: Path, args: argparse.Namespace, seed: int, budget: float, warm: bool = False) -> optuna.Study:
    rdb_names = optuna.get_all_study_names(url) if Path(url.split(":///", 1)[1]).exists() else []
    if name in rdb_names:  # kept from an earlier run
        study = optuna.load_study(study_name=name, storage=url)
        if not [t for t in study.trials if t.state in (TrialState.RUNNING,)]:
            return study
    return run_search(
        SearchRequest(
            study=name,
            storage=url,
            artifacts=folder / "artifacts",
            profile=args.profile,
            timeout=budget,
            seed=None if args.unseeded else seed,
            device=args.device,
            warm_start=SOURCE if warm else None,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of each cold and warm study")
    parser.add_argument("--source-budget", type=float, default=600.0, help="seconds of the source study")
    parser.add_argument("--source-seed", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3, help="how many cold and warm pairs")
    parser.add_argument("--unseeded", action="store_true", help="no sampler seed for any study (as the README's search)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", type=Path, help="write the studies (warm-start.db) here; finished studies there are read back")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{folder}/warm-start.db"
        source = run(SOURCE, url, folder, args, args.source_seed, args.source_budget)
        copied = len(own_trials(source, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        source_best = best_by(best_over_time(source), float("inf"))
        print(
            f"source study {SOURCE}: seed {_seed(args, args.source_seed)}, {args.source_budget:.0f} s, {copied} finished trials, "
            f"best validation {100 * source_best:.2f}%",
            flush=True,
        )
        rows = []
        for seed in range(args.seeds):
            cold = best_over_time(run(f"ws-cold-{seed}", url, folder, args, seed, args.budget))
            warm = best_over_time(run(f"ws-warm-{seed}", url, folder, args, seed, args.budget, warm=True))
            rows.append((seed, cold, warm))
            print(
                f"seed {seed}: best validation by {args.budget:.0f} s: cold {100 * best_by(cold, args.budget):.2f}%, "
                f"warm {100 * best_by(warm, args.budget):.2f}%",
                flush=True,
            )
    report(rows, args, copied, source_best)


def report(rows: list, args: argparse.Namespace, copied: int, source_best: float) -> None:
    print(f"machine: {describe()}")
    print(
        f"profile {args.profile}; each study {args.budget:.0f} s (no trial starts after it); warm = seeded with the {copied} finished "
        f"trials of {SOURCE} (seed {_seed(args, args.source_seed)}, {args.source_budget:.0f} s, best validation {100 * source_best:.2f}%); "
        "accuracies on the validation split, own trials only"
    )
    print(f"{'seed':>4} {'cold best %':>12} {'warm best %':>12} {'cold trials':>12} {'warm trials':>12}   best over time (s: %)")
    for seed, cold, warm in rows:
        done = [sum(1 for at, _ in c if at <= args.budget) for c in (cold, warm)]
        print(
            f"{seed:>4} {100 * best_by(cold, args.budget):>12.2f} {100 * best_by(warm, args.budget):>12.2f} {done[0]:>12} {done[1]:>12}   "
            f"cold {_curve(cold)} | warm {_curve(warm)}"
        )
    cold_median = statistics.median(best_by(c, args.budget) for _, c, _ in rows)
    warm_median = statistics.median(best_by(w, args.budget) for _, _, w in rows)
    print(
        f"median best validation by {args.budget:.0f} s: cold {100 * cold_median:.2f}%, warm {100 * warm_median:.2f}% "
        f"({100 * (warm_median - cold_median):+.2f} pp)"
    )


def _seed(args: argparse.Namespace, seed: int) -> str:
    return "none" if args.unseeded else str(seed)


def _curve(curve: list[tuple[float, float]]) -> str:
    return " ".join(f"{at:.0f}:{100 * best:.2f}" for at, best in curve)


if __name__ == "__main__":
    main()
