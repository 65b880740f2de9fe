"""Search efficiency: the same study with pruner none, median and hyperband, several seeds each.

Reports total epochs trained, wall time and best validation accuracy per pruner (median over
seeds) and the ratio of epochs against no pruning. Target: >= 3x fewer epochs at <= 0.1
percentage points lower best validation accuracy.

    python -m benchmarks.search_efficiency [--profile smoke] [--trials 12] [--epochs 6] [--seeds 3]
        [--pruners none,median,hyperband]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe
from mnist_hpo.search import SearchRequest, run_search

DEFAULT_PRUNERS = "none,median,hyperband"


def one_study(pruner: str, seed: int, args: argparse.Namespace, folder: Path) -> tuple[int, float, float]:
    started = time.perf_counter()
    study = run_search(SearchRequest(
        study=f"{pruner}-{seed}", storage=f"sqlite:///{folder}/efficiency.db", artifacts=folder / "artifacts",
        profile=args.profile, n_trials=args.trials, epochs=args.epochs, pruner=pruner, seed=seed, device=args.device,
    ))
    epochs = sum(t.user_attrs.get("epochs_run", 0) for t in study.trials)
    return epochs, time.perf_counter() - started, study.best_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pruners", default=DEFAULT_PRUNERS, help="comma-separated; 'none' is the baseline and always runs")
    args = parser.parse_args()
    pruners = ["none", *(p for p in args.pruners.split(",") if p and p != "none")]
    results: dict[str, list[tuple[int, float, float]]] = {p: [] for p in pruners}
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            for pruner in pruners:  # interleaved, so machine drift hits every pruner alike
                epochs, wall, accuracy = one_study(pruner, seed, args, Path(folder))
                results[pruner].append((epochs, wall, accuracy))
                print(f"seed {seed} pruner {pruner}: {epochs} epochs, {wall:.0f} s, best val {100 * accuracy:.2f}%", flush=True)
    print(f"machine: {describe()}")
    print(f"profile {args.profile}, {args.trials} trials x up to {args.epochs} epochs, {args.seeds} seeds (medians)")
    print(f"{'pruner':<10} {'epochs':>7} {'wall s':>7} {'best val %':>10} {'epochs saved':>13} {'accuracy change':>16}")
    base_epochs = statistics.median(r[0] for r in results["none"])
    base_accuracy = statistics.median(r[2] for r in results["none"])
    for pruner, runs in results.items():
        epochs, wall, accuracy = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"{pruner:<10} {epochs:>7.0f} {wall:>7.0f} {100 * accuracy:>10.2f} {base_epochs / epochs:>12.2f}x {100 * (accuracy - base_accuracy):>+15.2f}pp")


if __name__ == "__main__":
    main()
