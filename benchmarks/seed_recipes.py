"""The seed networks, each trained with its own recipe and with the paper's, on the real 55k/5k/10k split.

For every seed network: the figure its write-up reports, ours with its own recipe (trainer/_recipes.py,
settings the write-up leaves out filled with its framework's defaults), ours with An et al.'s recipe
for the same number of epochs, and the time. The epoch kept is the best on validation; the test
accuracy is that of the kept weights, reported only.

    python -m benchmarks.seed_recipes [--models tiny-cnn,wide-cnn,kaggle-cnn,simple-cnn] [--epochs N]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from benchmarks.machine import describe
from mnist_hpo.data import load_splits
from mnist_hpo.models import build_model
from mnist_hpo.trainer import PAPER, SEED_RECIPES, evaluate, train


def run(model: str, config, splits, device) -> tuple[float, float, int, float, float]:
    """(validation accuracy of the kept epoch, its test accuracy, the kept epoch, wall s, CPU s)."""
    torch.manual_seed(config.seed)
    started, cpu = time.perf_counter(), time.process_time()
    result = train(build_model(model), splits.train, config, device, val=splits.val)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return result.val_accuracy, evaluate(result.model, splits.test, device), result.kept_epoch, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SEED_RECIPES))
    parser.add_argument("--epochs", type=int, default=None, help="Override every recipe's epochs (for a shorter run).")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    splits = load_splits("mnist", log=lambda line: None)
    rows = []
    for model in args.models.split(","):
        recipe = SEED_RECIPES[model]
        epochs = args.epochs or recipe.config.epochs
        own = run(model, replace(recipe.config, epochs=epochs), splits, device)
        print(f"{model} own recipe: validation {100 * own[0]:.2f}%, test {100 * own[1]:.2f}% (epoch {own[2]}), {own[3]:.0f} s", flush=True)
        paper = run(model, replace(PAPER.config, epochs=epochs), splits, device)
        print(
            f"{model} paper recipe: validation {100 * paper[0]:.2f}%, test {100 * paper[1]:.2f}% (epoch {paper[2]}), {paper[3]:.0f} s",
            flush=True,
        )
        rows.append((model, recipe, epochs, own, paper))
    print()
    print(f"Machine: {describe()}; 55,000 train / 5,000 validation / 10,000 test images; the epoch kept is the best on validation.")
    print()
    print("| model | the seed's reported figure | ours, its own recipe | ours, the paper's recipe | epochs | time (own / paper) |")
    print("| --- | --- | --- | --- | ---: | --- |")
    for model, recipe, epochs, own, paper in rows:
        reported = recipe.reported or "none reported"
        print(
            f"| `{model}` | {reported} | {100 * own[0]:.2f} % validation, {100 * own[1]:.2f} % test | "
            f"{100 * paper[0]:.2f} % validation, {100 * paper[1]:.2f} % test | {epochs} | {own[3] / 60:.0f} / {paper[3] / 60:.0f} min |"
        )


if __name__ == "__main__":
    main()
