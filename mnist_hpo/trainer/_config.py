"""What one training run does: the optimiser, the schedule, augmentation, the EMA, the batch size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from mnist_hpo.errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd", "sgd-plateau")


@dataclass
class TrainConfig:
    """Defaults are the recipe of An et al. 2020 (see the package docstring)."""

    epochs: int = 10
    batch_size: int = 120
    optimizer: str = "adam"  # "sgd-plateau" is seed 002's recipe: SGD + ReduceLROnPlateau
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    lr_gamma: float = 0.98  # ExponentialLR factor per epoch
    ema_decay: float = 0.999  # 0 turns the EMA off
    label_smoothing: float = 0.0
    rotation: float = 20.0  # degrees
    translation: float = 0.2  # fraction of the side
    seed: int = 0
    compile: bool = False  # torch.compile on CUDA
    eval_batch_size: int = 1000

    def validate(self) -> None:
        if self.epochs < 1:
            raise UserError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if not self.lr > 0:
            raise UserError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"EMA decay must be in [0, 1), got {self.ema_decay}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild a stored configuration; fields another mnist-hpo added or dropped are a clear error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(
                f"the stored training configuration has settings this mnist-hpo does not know ({', '.join(unknown)}); "
                "it was written by a newer mnist-hpo: upgrade it (pip install -U mnist-hpo)"
            )
        return cls(**data)
