"""The seed networks, each trained with its own recipe and with the paper's, on the real 55k/5k/10k split.

For every seed network: the figure its write-up reports, ours with its own recipe (trainer/_recipes.py,
settings the write-up leaves out filled with its framework's defaults), ours with An et al.'s recipe
for the same number of epochs, and the time. The epoch kept is the best on validation; the test
accuracy is that of the kept weights, reported only.

    python -m benchmarks.seed_recipes [--models tiny-cnn,wide-cnn,kaggle-cnn,simple-cnn] [--epochs N]
                                      [--picture docs/seed-recipes.png]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch

from benchmarks.machine import describe
from mnist_hpo.data import load_splits
from mnist_hpo.models import build_model
from mnist_hpo.trainer import PAPER, SEED_RECIPES, evaluate, train


class Result(NamedTuple):
    val: float  # of the kept epoch
    test: float  # of the kept weights, reported only
    kept_epoch: int
    wall_s: float
    curve: list[float]  # validation accuracy per epoch


def run(model: str, config, splits, device) -> Result:
    """Train ``model`` with ``config``, keep its best validation epoch and score that on test."""
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    result = train(build_model(model), splits.train, config, device, val=splits.val)
    wall = time.perf_counter() - started
    curve = [report.val_accuracy for report in result.history]
    return Result(result.val_accuracy, evaluate(result.model, splits.test, device), result.kept_epoch, wall, curve)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SEED_RECIPES))
    parser.add_argument("--epochs", type=int, default=None, help="Override every recipe's epochs (for a shorter run).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--picture", type=Path, default=None, help="Draw validation error per epoch, own recipe against the paper's (PNG).")
    args = parser.parse_args()
    device = torch.device(args.device)
    splits = load_splits("mnist", log=lambda line: None)
    rows = []
    for model in args.models.split(","):
        recipe = SEED_RECIPES[model]
        epochs = args.epochs or recipe.config.epochs
        own = run(model, replace(recipe.config, epochs=epochs), splits, device)
        print(f"{model} own recipe: {cell(own)}, {own.wall_s:.0f} s", flush=True)
        paper = run(model, replace(PAPER.config, epochs=epochs), splits, device)
        print(f"{model} paper recipe: {cell(paper)}, {paper.wall_s:.0f} s", flush=True)
        rows.append((model, recipe, epochs, own, paper))
    machine = describe()
    print()
    print(f"Machine: {machine}; 55,000 train / 5,000 validation / 10,000 test images; the epoch kept is the best on validation.")
    print()
    print("| model | the seed's reported figure | ours, its own recipe | ours, the paper's recipe | epochs | time (own / paper) |")
    print("| --- | --- | --- | --- | ---: | --- |")
    for model, recipe, epochs, own, paper in rows:
        reported = recipe.reported or "none reported"
        print(f"| `{model}` | {reported} | {cell(own)} | {cell(paper)} | {epochs} | {own.wall_s / 60:.1f} / {paper.wall_s / 60:.1f} min |")
    if args.picture:
        picture(rows, args.picture, machine)


def cell(result: Result) -> str:
    """One table cell: the kept epoch's validation accuracy, which epoch that was, and its test accuracy."""
    return f"{100 * result.val:.2f} % validation (epoch {result.kept_epoch}), {100 * result.test:.2f} % test"


def picture(rows: list, path: Path, machine: str) -> None:
    """One panel per model: validation error per epoch (log scale) with its own recipe and with the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.6), squeeze=False)
    for axis, (model, recipe, _, own, paper) in zip(axes[0], rows, strict=True):
        for label, result in (("its own recipe", own), ("the paper's recipe", paper)):
            epochs_run = range(1, len(result.curve) + 1)
            axis.plot(epochs_run, [100 * (1 - a) for a in result.curve], label=f"{label}: {100 * result.val:.2f} %")
        axis.set(yscale="log", xlabel="epoch", ylabel="validation error, %", title=f"{model} ({recipe.reported or 'no figure reported'})")
        axis.grid(alpha=0.3, which="both")
        axis.legend(title="best validation accuracy", fontsize=8, title_fontsize=8)
    figure.suptitle(f"Seed networks, 55k train / 5k validation; {machine}", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
