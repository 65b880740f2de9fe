"""What one training run does: the optimiser, the schedule, augmentation, the EMA, the batch size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from mnist_hpo.errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("exponential", "cosine", "plateau")


@dataclass
class TrainConfig:
    """Defaults are the recipe of An et al. 2020 (see the package docstring)."""

    epochs: int = 10
    batch_size: int = 120
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    schedule: str = "exponential"  # lr × lr_gamma per epoch; "cosine": to 0 over the run; "plateau": ReduceLROnPlateau
    lr_gamma: float = 0.98  # ExponentialLR factor per epoch
    plateau_patience: int = 10  # epochs without improvement before the plateau schedule lowers the lr (PyTorch's default)
    epoch_images: int | None = None  # images per epoch, a fresh random draw from the training split each epoch; None: all
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
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown learning-rate schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.epoch_images is not None and self.epoch_images < 1:
            raise UserError(f"images per epoch must be at least 1, got {self.epoch_images}")
        if not self.lr > 0:
            raise UserError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"EMA decay must be in [0, 1), got {self.ema_decay}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild a stored configuration; fields another mnist-hpo added or dropped are a clear error."""
        if data.get("optimizer") == "sgd-plateau":  # how mnist-hpo 0.1 wrote seed 002's recipe
            data = {**data, "optimizer": "sgd", "schedule": "plateau", "plateau_patience": 3}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(
                f"the stored training configuration has settings this mnist-hpo does not know ({', '.join(unknown)}); "
                "it was written by a newer mnist-hpo: upgrade it (pip install -U mnist-hpo)"
            )
        return cls(**data)
