"""Every network by name, plus the configurable family the search samples; knows nothing of Optuna.

A model is described by a plain-data spec, ``{"name": "m3"}`` or
``{"name": "family", "config": {...FamilyConfig fields...}}`` or
``{"name": "ensemble", "members": [spec, ...]}``, so checkpoints and Optuna trials can store it
and rebuild the exact network later. Names are imported on first use: reading a spec
(``FamilyConfig``, ``max_conv_layers``) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_hpo._lazy import lazy_names

if TYPE_CHECKING:
    from mnist_hpo.models._registry import MODELS, build_model, count_parameters, model_names, mult_adds, summary_table
    from mnist_hpo.models.config import IMAGE_SIDE, PAPER_CONFIGS, FamilyConfig, max_conv_layers
    from mnist_hpo.models.ensemble import SoftmaxAverage
    from mnist_hpo.models.family import FamilyCNN, build_family

_WHERE = {
    "MODELS": "_registry",
    "build_model": "_registry",
    "count_parameters": "_registry",
    "model_names": "_registry",
    "mult_adds": "_registry",
    "summary_table": "_registry",
    "IMAGE_SIDE": "config",
    "PAPER_CONFIGS": "config",
    "FamilyConfig": "config",
    "max_conv_layers": "config",
    "SoftmaxAverage": "ensemble",
    "FamilyCNN": "family",
    "build_family": "family",
}
__all__ = [
    "IMAGE_SIDE",
    "MODELS",
    "PAPER_CONFIGS",
    "FamilyCNN",
    "FamilyConfig",
    "SoftmaxAverage",
    "build_family",
    "build_model",
    "count_parameters",
    "max_conv_layers",
    "model_names",
    "mult_adds",
    "summary_table",
]
__getattr__ = lazy_names(__name__, _WHERE)
