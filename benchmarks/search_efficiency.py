"""Search efficiency: the same study with pruner none, median and hyperband, several seeds each.

Reports total epochs trained, wall time and best validation accuracy per pruner (median over
seeds) and the ratio of epochs against no pruning. Target: >= 3x fewer epochs at <= 0.1
percentage points lower best validation accuracy. Each study's chosen trial (best validation) is
also scored on the official 10,000-image MNIST test set, reported only: on a 1,000-image
validation split 0.1 pp is one image, so it shows whether a lower best validation figure means a
worse chosen model or a less lucky draw.

A pruner changes which trials the sampler proposes next, so a live comparison mixes two effects.
The replay table isolates the pruner's own decisions: Optuna's real pruner is fed, epoch by epoch,
the learning curves of the no-pruning study's trials, in their order; it shows how many epochs it
would have saved and whether it would have kept that study's best trial.

    python -m benchmarks.search_efficiency [--profile smoke] [--trials 12] [--epochs 6] [--seeds 3]
        [--pruners none,median,hyperband] [--keep DIR]
    python -m benchmarks.search_efficiency --objectives accuracy,params [--trials 24] [--epochs 9] ...
        (the multi-objective mode: pruner none vs threshold vs mo-asha; benchmarks/pareto_efficiency.py)

With --keep DIR the studies stay in DIR/efficiency.db, and a study already finished there (same
name, all its trials done) is read back instead of run again, its wall time taken from its trials.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from benchmarks.machine import describe
from mnist_hpo import storage
from mnist_hpo.commands.search import search as run_search
from mnist_hpo.commands.trials import trial_model
from mnist_hpo.data import Split, load_mnist
from mnist_hpo.trainer import evaluate
from mnist_hpo.tuning import SearchRequest
from mnist_hpo.tuning.pruners import make_pruner

DEFAULT_PRUNERS = "none,median,hyperband"


class StudyResult(NamedTuple):
    epochs: int
    wall: float
    best_val: float
    test: float  # the chosen trial on the official test set, reported only
    trials: list[FrozenTrial]


def one_study(pruner: str, seed: int, args: argparse.Namespace, folder: Path, test: Split) -> StudyResult:
    url, name = f"sqlite:///{folder}/efficiency.db", f"{pruner}-{seed}"
    started = time.perf_counter()
    study = finished_study(url, name, args.trials)
    if study is None:
        study = run_search(
            SearchRequest(
                study=name,
                storage=url,
                artifacts=folder / "artifacts",
                profile=args.profile,
                n_trials=args.trials,
                epochs=args.epochs,
                pruner=pruner,
                seed=seed,
                device=args.device,
            )
        )
        wall = time.perf_counter() - started
    else:
        trials = study.trials
        wall = (trials[-1].datetime_complete - trials[0].datetime_start).total_seconds()
    model, _ = trial_model(storage.open_storage(url), study, study.best_trial, storage.open_artifacts(folder / "artifacts", create=False))
    test_accuracy = evaluate(model, test, torch.device("cpu"))
    epochs = sum(t.user_attrs.get("epochs_run", 0) for t in study.trials)
    return StudyResult(epochs, wall, study.best_value, test_accuracy, study.trials)


def finished_study(url: str, name: str, n_trials: int) -> optuna.Study | None:
    """A study of that name whose n_trials trials all finished (a kept earlier run), else None."""
    rdb = storage.open_storage(url)
    if name not in storage.list_study_names(rdb):
        return None
    study = optuna.load_study(study_name=name, storage=rdb)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return study if len(done) == len(study.trials) == n_trials else None


def replay(pruner: str, trials: list[FrozenTrial], epochs: int) -> tuple[int, float]:
    """Epochs the pruner lets these trials train, and the best validation accuracy among those it lets finish."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(study_name="replay", direction="maximize", pruner=make_pruner(pruner, epochs))
    trained, best = 0, 0.0
    for recorded in sorted(trials, key=lambda t: t.number):
        trial = study.ask()
        for epoch in range(1, epochs + 1):
            trial.report(recorded.intermediate_values[epoch], epoch)
            trained += 1
            if epoch < epochs and trial.should_prune():  # as the objective asks it
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, recorded.value)
            best = max(best, recorded.value)
    return trained, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pruners", default=DEFAULT_PRUNERS, help="comma-separated; 'none' is the baseline and always runs")
    parser.add_argument("--keep", type=Path, help="write the studies (efficiency.db, pareto.db) here instead of a temporary folder")
    parser.add_argument("--objectives", default="accuracy", help="accuracy,params: the multi-objective mode (none vs threshold vs mo-asha)")
    parser.add_argument("--picture", type=Path, default=Path("docs/pareto-efficiency.png"), help="the multi-objective mode's figure")
    args = parser.parse_args()
    if args.objectives == "accuracy,params":
        from benchmarks.pareto_efficiency import main_multi

        main_multi(args)
        return
    pruners = ["none", *(p for p in args.pruners.split(",") if p and p != "none")]
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line per replay
    _, test = load_mnist(log=lambda *_: None)
    results: dict[str, list[StudyResult]] = {p: [] for p in pruners}
    replays: dict[str, list[tuple[int, float]]] = {p: [] for p in pruners}
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for seed in range(args.seeds):
            for pruner in pruners:  # interleaved, so machine drift hits every pruner alike
                result = one_study(pruner, seed, args, folder, test)
                results[pruner].append(result)
                print(
                    f"seed {seed} pruner {pruner}: {result.epochs} epochs, {result.wall:.0f} s, best val {100 * result.best_val:.2f}%, "
                    f"its test {100 * result.test:.2f}%",
                    flush=True,
                )
                if pruner == "none":
                    for name in pruners:
                        replays[name].append(replay(name, result.trials, args.epochs))
    print(f"machine: {describe()}")
    print(
        f"profile {args.profile}, {args.trials} trials x up to {args.epochs} epochs, {args.seeds} seeds (medians); "
        f"test: the chosen trial on the {len(test):,} MNIST test images, reported only"
    )
    print(
        f"{'pruner':<10} {'epochs':>7} {'wall s':>7} {'best val %':>10} {'epochs saved':>13} {'accuracy change':>16} {'its test %':>11} {'test change':>12}"
    )
    base = {field: statistics.median(getattr(r, field) for r in results["none"]) for field in ("epochs", "best_val", "test")}
    for pruner, runs in results.items():
        epochs, wall, accuracy, test_accuracy = (
            statistics.median(getattr(r, f) for r in runs) for f in ("epochs", "wall", "best_val", "test")
        )
        print(
            f"{pruner:<10} {epochs:>7.0f} {wall:>7.0f} {100 * accuracy:>10.2f} {base['epochs'] / epochs:>12.2f}x "
            f"{100 * (accuracy - base['best_val']):>+15.2f}pp {100 * test_accuracy:>11.2f} {100 * (test_accuracy - base['test']):>+11.2f}pp"
        )
    print("per seed (epochs saved, best validation change, its test change):")
    for pruner, runs in results.items():
        cells = (
            f"{b.epochs / r.epochs:.2f}x {100 * (r.best_val - b.best_val):+.2f}pp {100 * (r.test - b.test):+.2f}pp"
            for r, b in zip(runs, results["none"])
        )
        print(f"{pruner:<10} " + " | ".join(cells))
    print("replayed on the no-pruning studies' learning curves, per seed (epochs saved, best validation change):")
    for pruner, runs in replays.items():
        cells = (f"{b[0] / epochs:.2f}x {100 * (best - b[1]):+.2f}pp" for (epochs, best), b in zip(runs, replays["none"]))
        print(f"{pruner:<10} " + " | ".join(cells))


if __name__ == "__main__":
    main()
