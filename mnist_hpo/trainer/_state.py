"""The parts of a run that carry state: optimiser, schedule, EMA copy, and their snapshot for resuming."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from mnist_hpo.trainer._config import TrainConfig

Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = {"fused": True} if device.type == "cuda" else {}
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, **fused)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, judged_on_validation: bool, steps_per_epoch: int) -> Scheduler:
    """The learning-rate schedule; the plateau one watches validation accuracy, or the training loss without a validation split.

    The cosine schedule steps every batch (``BATCHWISE``), the others once an epoch.
    """
    if config.schedule == "plateau":
        mode = "max" if judged_on_validation else "min"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, patience=config.plateau_patience)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_gamma)


def batchwise(scheduler: Scheduler) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)


def step_scheduler(scheduler: Scheduler, val_accuracy: float | None, train_loss: float) -> None:
    """The once-an-epoch step (the cosine schedule has stepped with every batch already)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_accuracy if val_accuracy is not None else train_loss)
    elif not batchwise(scheduler):
        scheduler.step()


def make_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    return AveragedModel(model, multi_avg_fn=ema_with_warmup(decay), use_buffers=True) if decay else None


def ema_with_warmup(decay: float) -> Callable:
    """EMA update whose decay ramps up as (1 + t) / (10 + t) until it reaches ``decay``.

    A fixed 0.999 remembers the random initial weights for thousands of steps, which ruins
    the short trials of a search; the ramp (TensorFlow's ``num_updates`` rule) does not. The
    decay stays a tensor on the device, so the update never waits for the host. BatchNorm
    statistics are averaged too (``use_buffers=True``); integer buffers are copied.
    """

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        steps = num_averaged.to(averaged[0].dtype)
        keep = torch.clamp((1 + steps) / (10 + steps), max=decay)
        delta = torch._foreach_sub(averaged, current)
        torch._foreach_mul_(delta, 1 - keep)
        torch._foreach_sub_(averaged, delta)

    return update


def training_state(
    model: nn.Module,
    ema: AveragedModel | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler,
    epoch: int,
    kept_accuracy: float | None,
    config: TrainConfig,
) -> dict[str, Any]:
    """Everything needed to continue after ``epoch``: weights, EMA, optimizer, schedule, RNG.

    A deep copy: the live tensors keep changing as training goes on.
    """
    return copy.deepcopy(
        {
            "epoch": epoch,
            "best_val_accuracy": kept_accuracy,
            "train_config": config.to_dict(),
            "model": model.state_dict(),
            "ema": ema.state_dict() if ema else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
    )


def restore(
    state: dict[str, Any],
    model: nn.Module,
    ema: AveragedModel | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler,
    config: TrainConfig,
) -> tuple[int, float | None]:
    """Load a ``training_state``; returns the epoch it was taken after and the accuracy kept then.

    The run goes on with ``config``'s learning rate and weight decay (the schedule's progress is kept):
    a retry has the same ones; a population-based training member may have new ones (``retune``).
    """
    model.load_state_dict(state["model"])
    if ema and state.get("ema"):
        ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    retune(optimizer, scheduler, float(state["train_config"]["lr"]), config)
    torch.set_rng_state(state["rng_cpu"])
    if state.get("rng_cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return int(state["epoch"]), state.get("best_val_accuracy")


def retune(optimizer: torch.optim.Optimizer, scheduler: Scheduler, old_lr: float, config: TrainConfig) -> None:
    """Scale the learning rate, from here on, by ``config.lr / old_lr``, and take ``config``'s weight decay.

    Every schedule here (exponential, cosine, plateau) computes the next rate from the current one
    and its base, so scaling both scales the rest of the schedule: PBT's explore step.
    """
    ratio = config.lr / old_lr
    for group in optimizer.param_groups:
        group["lr"] *= ratio
        group["weight_decay"] = config.weight_decay
        if "initial_lr" in group:
            group["initial_lr"] *= ratio
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]
