"""The registry: every network by name, built from a plain-data spec, with its size.

A model is described by a plain-data spec, ``{"name": "m3"}`` or
``{"name": "family", "config": {...FamilyConfig fields...}}`` or
``{"name": "ensemble", "members": [spec, ...]}``, so checkpoints and Optuna
trials can store it and rebuild the exact network later.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from mnist_hpo.errors import ModelError
from mnist_hpo.models.baselines import kaggle_cnn, simple_cnn, tiny_cnn, wide_cnn
from mnist_hpo.models.config import PAPER_CONFIGS
from mnist_hpo.models.ensemble import SoftmaxAverage
from mnist_hpo.models.family import FamilyCNN, build_family

FAMILY = "family"
ENSEMBLE = "ensemble"
MODELS: dict[str, Callable[[], nn.Module]] = {
    **{name: (lambda config=config: FamilyCNN(config)) for name, config in PAPER_CONFIGS.items()},
    "kaggle-cnn": kaggle_cnn,
    "wide-cnn": wide_cnn,
    "tiny-cnn": tiny_cnn,
    "simple-cnn": simple_cnn,
}


def model_names() -> list[str]:
    return list(MODELS)


def build_model(spec: str | dict) -> nn.Module:
    """Build a network from its name or its spec dict (see the module docstring)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    name = spec.get("name")
    if name == FAMILY:
        return build_family(spec.get("config") or {})
    if name == ENSEMBLE:
        return SoftmaxAverage([build_model(member) for member in spec.get("members", [])])
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; choose from {', '.join(MODELS)} (see `mnist-hpo models`)")
    return MODELS[name]()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _torchinfo_summary(model: nn.Module, verbose: int = 0):
    import torchinfo

    return torchinfo.summary(
        model,
        input_size=(1, 1, 28, 28),
        device="cpu",
        mode="eval",
        verbose=verbose,
        col_names=("output_size", "num_params", "mult_adds"),
        row_settings=("var_names",),
    )


def mult_adds(model: nn.Module) -> int:
    """Multiply-accumulates for one 28x28 image, known before any training."""
    return int(_torchinfo_summary(model).total_mult_adds)


_UNIT = {"KILOBYTES": "k", "MEGABYTES": "M", "GIGABYTES": "G", "TERABYTES": "T"}


def summary_table(model: nn.Module) -> str:
    """The per-layer table (output shape, parameters, mult-adds) that `mnist-hpo summary` prints.

    torchinfo prints its unit enum's repr on Python 3.11+ ("(Units.MEGABYTES)"); we print "(M)".
    """
    table = str(_torchinfo_summary(model))
    return re.sub(r"\(Units\.(\w+)\)", lambda unit: f"({_UNIT.get(unit.group(1), unit.group(1).lower())})", table)
