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

from mnist_hpo._lazy import lazy_face

if TYPE_CHECKING:
    from mnist_hpo.trainer._config import OPTIMIZERS as OPTIMIZERS, SCHEDULES as SCHEDULES, TrainConfig as TrainConfig
    from mnist_hpo.trainer._device import resolve_device as resolve_device
    from mnist_hpo.trainer._eval import (
        evaluate as evaluate,
        evaluate_with_predictions as evaluate_with_predictions,
        predict_logits as predict_logits,
    )
    from mnist_hpo.trainer._loop import EpochReport as EpochReport, TrainResult as TrainResult, train as train
    from mnist_hpo.trainer._recipes import (
        PAPER as PAPER,
        RECIPE_NAMES as RECIPE_NAMES,
        SEED_RECIPES as SEED_RECIPES,
        Recipe as Recipe,
        recipe_for as recipe_for,
        with_overrides as with_overrides,
    )
    from mnist_hpo.trainer._state import ema_with_warmup as ema_with_warmup
    from mnist_hpo.trainer._threads import (
        check_threads as check_threads,
        default_threads as default_threads,
        usable_cores as usable_cores,
        use_threads as use_threads,
        wait_passively as wait_passively,
    )

__getattr__, __all__ = lazy_face(__name__, __file__)
