"""Profiles: how much data, width and time a study spends. Printed whenever one is used."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mnist_hpo.errors import UserError


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    data: str  # "fixture" (bundled real subset) or "mnist" (fetched on first use)
    train_subset: int | None  # first K images of the training split; None = all 55k
    epochs: int  # the most a trial trains; pruning stops many earlier
    epoch_images: int | None
    n_trials: int
    timeout: float | None  # seconds; the default budget of `search`
    space: dict[str, dict[str, Any]] = field(default_factory=dict)  # overrides on the default space
    population: int = 8  # --pbt: members
    exploit_every: int = 2  # --pbt: epochs between exploit steps
    baseline: bool = True  # queue the published configuration as trial 0 (--baseline / --no-baseline)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        "tests: bundled 5k-image subset, narrow nets, 2 epochs, seconds per trial",
        data="fixture",
        train_subset=2000,
        epochs=2,
        epoch_images=None,
        n_trials=6,
        timeout=None,
        population=3,
        exploit_every=1,
        space={
            "first_channels": {"low": 4, "high": 8, "step": 4},
            "growth": {"low": 0, "high": 4, "step": 4},
            "conv_layers_k3": {"low": 3, "high": 5},
            "conv_layers_k5": {"low": 2, "high": 3},
            "conv_layers_k7": {"low": 2, "high": 3},
            "head_width": {"low": 16, "high": 64},
            "batch_size": {"choices": [32, 64]},
            "lr": {"low": 1e-3, "high": 1e-2},
        },
    ),
    "quick": Profile(
        "quick",
        "CPU default: 12k fresh images of the 55k training split per epoch, up to 8 epochs at batch 128, M3's 3x3 "
        "layout at up to a quarter of its width, dropouts and the learning rate searched, as many trials as fit in "
        "10 min (up to 40)",
        data="mnist",
        train_subset=None,
        epochs=8,  # 8 x 12k beat 4 x 12k and 4 x 24k for the same networks (BENCHMARKS.md)
        epoch_images=12_000,
        n_trials=40,
        timeout=600,
        baseline=False,  # its slowest network at lr 1e-3: a quarter of the 10 minutes, never the best (BENCHMARKS.md, Peers)
        space={
            "kernel_size": {"value": 3},
            "conv_layers_k3": {"low": 5, "high": 10},
            "conv_layers_k5": {"drop": True},
            "conv_layers_k7": {"drop": True},
            "first_channels": {"low": 4, "high": 12, "step": 4},
            "growth": {"low": 0, "high": 4, "step": 2},  # the widest net (12..48 channels) trains a trial in about 1 min
            "dropout_in": {"low": 0.0, "high": 0.4},
            "head_width": {"low": 32, "high": 128},
            "dropout_hidden": {"low": 0.0, "high": 0.5},
            "lr": {"low": 1e-3, "high": 1e-2},
            "optimizer": {"value": "adam"},
            "weight_decay": {"drop": True},
            "batch_size": {"value": 128},  # as accurate as 64 at 8 epochs, and 1.13x faster
            "ema": {"value": True},
            "ema_decay": {"value": 0.999},
            "schedule": {"value": "cosine"},
            "lr_gamma": {"drop": True},
            "rotation": {"value": 10.0},
            "translation": {"value": 0.1},
            "label_smoothing": {"drop": True},
        },
    ),
    "paper": Profile(
        "paper",
        "GPU default: the full 55k/5k split, M3-scale widths, up to 30 epochs per trial",
        data="mnist",
        train_subset=None,
        epochs=30,
        epoch_images=None,
        n_trials=30,
        timeout=None,
        exploit_every=5,
    ),
}


def get_profile(name: str | None, has_gpu: bool) -> Profile:
    if name is None:
        return PROFILES["paper" if has_gpu else "quick"]
    if name not in PROFILES:
        raise UserError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[name]
