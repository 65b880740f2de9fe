"""The quick profile's levers, one at a time: images per trial, the schedule, augmentation, batch size.

The same K configurations (random draws of the quick space's networks, learning rate and dropouts,
by a fixed seed: nothing tuned) are trained under each variant on the real 55k/5k split; the table
gives each variant's validation accuracy (the epoch kept on validation), median and worst over the
configurations, and its CPU seconds per trial. Test accuracy is not measured: nothing here should
be chosen on it.

    python -m benchmarks.quick_levers [--configs 4] [--seed 0] [--variants A,B,C,D,E]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import optuna
import torch

from benchmarks.machine import describe
from mnist_hpo.data import load_splits
from mnist_hpo.models import build_model, count_parameters, mult_adds
from mnist_hpo.trainer import TrainConfig, train
from mnist_hpo.tuning import Space, get_profile

VARIANTS = {  # name: (description, images in the training pool, TrainConfig overrides)
    "A": (
        "24k fixed subset x 2 epochs, exponential lr, ±20°/±20 %",
        24_000,
        {"epochs": 2, "schedule": "exponential", "rotation": 20.0, "translation": 0.2},
    ),
    "B": (
        "12k fresh images per epoch x 4, exponential lr, ±20°/±20 %",
        None,
        {"epochs": 4, "epoch_images": 12_000, "schedule": "exponential", "rotation": 20.0, "translation": 0.2},
    ),
    "C": (
        "12k fresh images per epoch x 4, cosine lr, ±20°/±20 %",
        None,
        {"epochs": 4, "epoch_images": 12_000, "schedule": "cosine", "rotation": 20.0, "translation": 0.2},
    ),
    "D": (
        "12k fresh images per epoch x 4, cosine lr, ±10°/±10 %",
        None,
        {"epochs": 4, "epoch_images": 12_000, "schedule": "cosine", "rotation": 10.0, "translation": 0.1},
    ),
    "E": (
        "16k fresh images per epoch x 4, cosine lr, ±10°/±10 %",
        None,
        {"epochs": 4, "epoch_images": 16_000, "schedule": "cosine", "rotation": 10.0, "translation": 0.1},
    ),
    "F": (
        "12k fresh images per epoch x 4, cosine lr, ±10°/±10 %, batch 120",
        None,
        {"epochs": 4, "epoch_images": 12_000, "schedule": "cosine", "rotation": 10.0, "translation": 0.1, "batch_size": 120},
    ),
}


def draws(profile: str, count: int, seed: int) -> list[tuple[dict, dict]]:
    """``count`` random (network spec, training options) draws of the profile's space."""
    space = Space().with_overrides(get_profile(profile, False).space, origin=f"profile {profile}")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    picked = []
    for _ in range(count):
        trial = study.ask()
        family, training = space.sample(trial)
        study.tell(trial, 0.0)
        picked.append(({"name": "family", "config": family.to_dict()}, training))
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--configs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="A,B,C,D,E")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    device = torch.device("cpu")
    full = load_splits("mnist", log=lambda line: None)
    configs = draws(args.profile, args.configs, args.seed)
    for spec, training in configs:
        model = build_model(spec)
        print(
            f"config: {count_parameters(model):,} weights, {mult_adds(model) / 1e6:.1f} M mult-adds, {spec['config']} {training}",
            flush=True,
        )
    rows = []
    for name in args.variants.split(","):
        description, pool, overrides = VARIANTS[name]
        train_split = full.train.take(slice(0, pool)) if pool else full.train
        accuracies, cpu = [], []
        for index, (spec, training) in enumerate(configs):
            config = replace(TrainConfig(seed=index), **{**training, **overrides})
            torch.manual_seed(index)
            started_cpu, started = time.process_time(), time.perf_counter()
            result = train(build_model(spec), train_split, config, device, val=full.val)
            accuracies.append(result.val_accuracy)
            cpu.append(time.process_time() - started_cpu)
            print(
                f"{name} config {index}: validation {100 * result.val_accuracy:.2f}%  {cpu[-1]:.0f} CPU s  {time.perf_counter() - started:.0f} s",
                flush=True,
            )
        rows.append((name, description, statistics.median(accuracies), min(accuracies), statistics.median(cpu)))
    print()
    print(
        f"Machine: {describe()}; {args.configs} random draws of the {args.profile} space (seed {args.seed}), validation split of 5,000 images."
    )
    print()
    print("| variant | what | validation accuracy, median | worst | CPU s per trial, median |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, description, median, worst, seconds in rows:
        print(f"| {name} | {description} | {100 * median:.2f} % | {100 * worst:.2f} % | {seconds:.0f} |")


if __name__ == "__main__":
    main()
