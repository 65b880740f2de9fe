"""Every network by name, plus the configurable family the search samples; knows nothing of Optuna.

A model is described by a plain-data spec, ``{"name": "m3"}`` or
``{"name": "family", "config": {...FamilyConfig fields...}}`` or
``{"name": "ensemble", "members": [spec, ...]}``, so checkpoints and Optuna trials can store it
and rebuild the exact network later. Names are imported on first use: reading a spec
(``FamilyConfig``, ``max_conv_layers``) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_hpo._lazy import lazy_face

if TYPE_CHECKING:
    from mnist_hpo.models._registry import (
        MODELS as MODELS,
        build_model as build_model,
        count_parameters as count_parameters,
        model_names as model_names,
        mult_adds as mult_adds,
        summary_table as summary_table,
    )
    from mnist_hpo.models.config import (
        IMAGE_SIDE as IMAGE_SIDE,
        PAPER_CONFIGS as PAPER_CONFIGS,
        FamilyConfig as FamilyConfig,
        max_conv_layers as max_conv_layers,
    )
    from mnist_hpo.models.ensemble import SoftmaxAverage as SoftmaxAverage
    from mnist_hpo.models.family import FamilyCNN as FamilyCNN, build_family as build_family

__getattr__, __all__ = lazy_face(__name__, __file__)
