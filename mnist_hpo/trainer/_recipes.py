"""Training recipes: the paper's, and each seed network's own as its write-up gives it.

Where a seed document leaves a setting out, the recipe uses its framework's default and says so
(``unstated``); nothing here comes from a search.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mnist_hpo.errors import UserError
from mnist_hpo.trainer._config import TrainConfig

RECIPE_NAMES = ("paper", "seed")
NO_AUGMENTATION = {"rotation": 0.0, "translation": 0.0, "ema_decay": 0.0, "lr_gamma": 1.0}


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str  # where it comes from
    config: TrainConfig
    reported: str = ""  # the figure its source reports, with its split
    unstated: tuple[str, ...] = field(default=())  # settings its source leaves out, filled with framework defaults


PAPER = Recipe(
    "paper",
    "An et al. 2020 (arXiv 2008.10400): Adam 1e-3 decayed x0.98 per epoch, batch 120, ±20° rotation, ±20 % translation, EMA 0.999",
    TrainConfig(epochs=150),
)
SEED_RECIPES: dict[str, Recipe] = {
    "tiny-cnn": Recipe(
        "seed",
        "seed 002: SGD lr 1e-2, batch 64, ReduceLROnPlateau, 150 epochs, no augmentation",
        TrainConfig(epochs=150, batch_size=64, optimizer="sgd", lr=1e-2, momentum=0.0, schedule="plateau", **NO_AUGMENTATION),
        reported="98.04 % test",
        unstated=("momentum (plain SGD: 0)", "plateau patience (PyTorch's 10)"),
    ),
    "wide-cnn": Recipe(
        "seed",
        "seed 001: 10 epochs, no augmentation",
        TrainConfig(epochs=10, batch_size=64, optimizer="adam", lr=1e-3, **NO_AUGMENTATION),
        reported="99 % validation, 99 % test",
        unstated=("optimizer (Adam 1e-3)", "batch size (64)"),
    ),
    "kaggle-cnn": Recipe(
        "seed",
        "seed 000 (Kaggle Digit Recognizer): no augmentation",
        TrainConfig(epochs=10, batch_size=64, optimizer="adam", lr=1e-3, **NO_AUGMENTATION),
        unstated=("optimizer (Adam 1e-3)", "batch size (64)", "epochs (10)"),
    ),
    "simple-cnn": Recipe(
        "seed",
        "seed 003 (Keras tutorial): Keras' defaults, no augmentation",
        TrainConfig(epochs=10, batch_size=32, optimizer="adam", lr=1e-3, **NO_AUGMENTATION),
        unstated=("optimizer (Keras' Adam 1e-3)", "batch size (Keras' 32)", "epochs (10, the TensorFlow CNN tutorial's)"),
    ),
}


def recipe_for(model: str, name: str | None = None) -> Recipe:
    """The recipe ``name`` (default: the model's own, which for the paper's networks is the paper's) for ``model``."""
    if name is not None and name not in RECIPE_NAMES:
        raise UserError(f"unknown recipe {name!r}; choose from {', '.join(RECIPE_NAMES)}")
    if name == "paper" or (name is None and model not in SEED_RECIPES):
        return PAPER
    if model not in SEED_RECIPES:
        raise UserError(f"{model} has no seed recipe (it is one of the paper's networks); use --recipe paper")
    return SEED_RECIPES[model]


def with_overrides(recipe: Recipe, **given: object) -> TrainConfig:
    """The recipe's configuration with the options the user gave (None: not given) put over it."""
    return replace(recipe.config, **{key: value for key, value in given.items() if value is not None})
