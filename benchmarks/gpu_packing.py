"""Trials per hour with 1, 2 and 4 worker processes packed onto one GPU (the CPU, without one).

A small-model study keeps one process from filling a GPU: kernels are short and the host
launches them one at a time. Several workers on the same GPU overlap that launch overhead.
Each setting runs the same number of quick-profile trials (no pruning, so every trial costs the
same) into a fresh journal file; the wall time includes starting the worker processes.

    python -m benchmarks.gpu_packing [--trials 12] [--epochs 3] [--packing 1,2,4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.machine import describe
from mnist_hpo.commands.search import search as run_search
from mnist_hpo.tuning import SearchRequest, quiet_optuna


def trials_per_hour(workers: int, on_gpu: bool, args: argparse.Namespace, folder: Path) -> tuple[float, int]:
    started = time.perf_counter()
    study = run_search(
        SearchRequest(
            study=f"packing-{workers}",
            storage=f"journal:{folder}/packing-{workers}.log",
            artifacts=folder / "artifacts",
            profile=args.profile,
            n_trials=args.trials,
            epochs=args.epochs,
            pruner="none",
            seed=0,
            trials_per_gpu=workers if on_gpu else None,
            workers=None if on_gpu else workers,
            device="auto" if on_gpu else "cpu",
        )
    )
    done = sum(1 for t in study.trials if t.state.is_finished())
    return done / (time.perf_counter() - started) * 3600, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--packing", default="1,2,4")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    quiet_optuna()
    on_gpu = args.device != "cpu" and torch.cuda.is_available()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for workers in (int(k) for k in args.packing.split(",")):
            rows.append((workers, *trials_per_hour(workers, on_gpu, args, Path(folder))))
    print(f"machine: {describe()}")
    print(
        f"profile {args.profile}, {args.trials} trials x {args.epochs} epochs, no pruning, workers on {'one GPU' if on_gpu else 'the CPU'}"
    )
    print(f"{'workers':>7} {'trials':>6} {'trials/hour':>12} {'vs 1':>6}")
    base = rows[0][1]
    for workers, rate, done in rows:
        print(f"{workers:>7} {done:>6} {rate:>12,.0f} {rate / base:>5.2f}x")


if __name__ == "__main__":
    main()
