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
    epochs: int
    n_trials: int
    timeout: float | None  # seconds; the default budget of `search`
    space: dict[str, dict[str, Any]] = field(default_factory=dict)  # overrides on the default space


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        "tests: bundled 5k-image subset, narrow nets, 2 epochs, seconds per trial",
        data="fixture", train_subset=2000, epochs=2, n_trials=6, timeout=None,
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
        "CPU default: 24k training images, the family at a quarter of M3's width or less, 2 epochs, as many trials as fit in 10 min (up to 40)",
        data="mnist", train_subset=24000, epochs=2, n_trials=40, timeout=600,
        space={
            "first_channels": {"low": 4, "high": 12, "step": 4},
            "growth": {"low": 4, "high": 8, "step": 4},
            "conv_layers_k3": {"low": 5, "high": 10},
            "conv_layers_k5": {"low": 3, "high": 5},
            "conv_layers_k7": {"low": 2, "high": 4},
            "head_width": {"low": 32, "high": 128},
            "batch_size": {"choices": [32, 64, 120]},
            "lr": {"low": 1e-3, "high": 1e-2},
        },
    ),
    "paper": Profile(
        "paper",
        "GPU default: the full 55k/5k split, M3-scale widths, up to 30 epochs per trial",
        data="mnist", train_subset=None, epochs=30, n_trials=30, timeout=None,
    ),
}


def get_profile(name: str | None, has_gpu: bool) -> Profile:
    if name is None:
        return PROFILES["paper" if has_gpu else "quick"]
    if name not in PROFILES:
        raise UserError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[name]
