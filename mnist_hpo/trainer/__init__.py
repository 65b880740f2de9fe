"""Training and scoring networks; knows nothing of Optuna.

Defaults are the recipe of An et al. 2020: Adam at 1e-3, the learning rate multiplied by 0.98
after every epoch, batches of 120, random rotation (±20°) and translation (±20 %), and an
exponential moving average (EMA) of the weights with decay 0.999. The EMA copy is what gets
evaluated: it is smoother and more accurate than the raw weights (its decay ramps up over the
first steps, see ``ema_with_warmup``).

``train`` reports through ``on_epoch`` after every epoch; whatever that callback raises (for
example ``optuna.TrialPruned``) stops training. Only a validation split can choose an epoch.
Names are imported on first use: the CLI sets how OpenMP threads wait (``wait_passively``)
before anything loads torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_hpo._lazy import lazy_names

if TYPE_CHECKING:
    from mnist_hpo.trainer._config import OPTIMIZERS, SCHEDULES, TrainConfig
    from mnist_hpo.trainer._device import resolve_device
    from mnist_hpo.trainer._eval import evaluate, evaluate_with_predictions, predict_logits
    from mnist_hpo.trainer._loop import EpochReport, TrainResult, train
    from mnist_hpo.trainer._recipes import PAPER, RECIPE_NAMES, SEED_RECIPES, Recipe, recipe_for, with_overrides
    from mnist_hpo.trainer._state import ema_with_warmup
    from mnist_hpo.trainer._threads import check_threads, default_threads, usable_cores, use_threads, wait_passively

_WHERE = {
    "OPTIMIZERS": "_config",
    "SCHEDULES": "_config",
    "TrainConfig": "_config",
    "resolve_device": "_device",
    "evaluate": "_eval",
    "evaluate_with_predictions": "_eval",
    "predict_logits": "_eval",
    "EpochReport": "_loop",
    "TrainResult": "_loop",
    "train": "_loop",
    "PAPER": "_recipes",
    "RECIPE_NAMES": "_recipes",
    "SEED_RECIPES": "_recipes",
    "Recipe": "_recipes",
    "recipe_for": "_recipes",
    "with_overrides": "_recipes",
    "ema_with_warmup": "_state",
    "check_threads": "_threads",
    "default_threads": "_threads",
    "usable_cores": "_threads",
    "use_threads": "_threads",
    "wait_passively": "_threads",
}
__all__ = [
    "OPTIMIZERS",
    "PAPER",
    "RECIPE_NAMES",
    "SCHEDULES",
    "SEED_RECIPES",
    "EpochReport",
    "Recipe",
    "TrainConfig",
    "TrainResult",
    "check_threads",
    "default_threads",
    "ema_with_warmup",
    "evaluate",
    "evaluate_with_predictions",
    "predict_logits",
    "recipe_for",
    "resolve_device",
    "train",
    "usable_cores",
    "use_threads",
    "wait_passively",
    "with_overrides",
]
__getattr__ = lazy_names(__name__, _WHERE)
