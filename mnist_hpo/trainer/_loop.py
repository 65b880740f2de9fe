"""The training loop: one function, read it top to bottom."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnist_hpo.data import Augment, DeviceLoader, Split
from mnist_hpo.errors import TrainingDiverged
from mnist_hpo.trainer._config import TrainConfig
from mnist_hpo.trainer._device import autocast, memory_format
from mnist_hpo.trainer._eval import evaluate_with_predictions
from mnist_hpo.trainer._state import batchwise, make_ema, make_optimizer, make_scheduler, restore, step_scheduler, training_state


@dataclass
class EpochReport:
    epoch: int  # 1-based
    train_loss: float
    val_accuracy: float | None  # None when training without a validation split
    seconds: float
    images_per_s: float
    lr: float


@dataclass
class TrainResult:
    """The weights kept: the best validation epoch when there was a validation split, else the last epoch."""

    model: nn.Module  # the evaluated weights (EMA when enabled), in eval mode
    kept_epoch: int
    val_accuracy: float | None  # of the kept weights; None without a validation split
    history: list[EpochReport] = field(default_factory=list)
    val_predictions: torch.Tensor | None = None  # the kept weights' predicted validation labels
    last_state: dict[str, Any] | None = None  # with ``until``: the training state after the last epoch, to go on from

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def train(
    model: nn.Module,
    train_split: Split,
    config: TrainConfig,
    device: torch.device,
    *,
    val: Split | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    resume: dict[str, Any] | None = None,
    until: int | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_split``; the only split that may choose anything is ``val``.

    With ``val`` the epoch with the best validation accuracy is kept; without it nothing is chosen
    and the last epoch is kept. ``on_checkpoint`` receives the full training state whenever the
    kept weights change; passing such a state back as ``resume`` continues after its epoch.
    ``config.seed`` fixes the batch order, the augmentation and dropout; seed torch before
    building the model if its initial weights must be reproducible too. Whatever ``on_epoch``
    raises (for example ``optuna.TrialPruned``) stops training. ``until`` stops after that epoch of
    the ``config.epochs`` schedule and returns the state to go on from (``last_state``; it keeps no
    accuracy, so the run it resumes keeps the best of its own epochs): a PBT segment.
    """
    config.validate()
    run = _Run(model, train_split, config, device, judged_on_validation=val is not None)
    kept = _Kept(run.evaluated)
    first_epoch = 1
    if resume:
        kept.epoch, kept.accuracy = restore(resume, run.model, run.ema, run.optimizer, run.scheduler, config)
        kept.weights = _copy(run.evaluated)
        first_epoch = kept.epoch + 1

    history: list[EpochReport] = []
    last_epoch = config.epochs if until is None else min(until, config.epochs)
    for epoch in range(first_epoch, last_epoch + 1):
        started = time.perf_counter()
        train_loss = run.one_epoch(epoch, on_step)
        seconds = time.perf_counter() - started
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch}; lower the learning rate")

        accuracy, predictions = (
            evaluate_with_predictions(run.evaluated, val, device, config.eval_batch_size) if val is not None else (None, None)
        )
        lr = run.optimizer.param_groups[0]["lr"]
        step_scheduler(run.scheduler, accuracy, train_loss)
        report = EpochReport(epoch, train_loss, accuracy, seconds, run.images / seconds, lr)
        history.append(report)
        if accuracy is None or kept.accuracy is None or accuracy > kept.accuracy:
            kept.take(run.evaluated, epoch, accuracy, predictions)
            if on_checkpoint:
                on_checkpoint(training_state(run.model, run.ema, run.optimizer, run.scheduler, epoch, accuracy, config))
        if on_epoch:
            on_epoch(report)

    last_state = None
    if until is not None:
        last_state = training_state(run.model, run.ema, run.optimizer, run.scheduler, last_epoch, None, config)
    run.evaluated.load_state_dict(kept.weights)
    if val is not None and kept.predictions is None:  # kept before a resume: predict once more
        kept.accuracy, kept.predictions = evaluate_with_predictions(run.evaluated, val, device, config.eval_batch_size)
    return TrainResult(run.evaluated.eval(), kept.epoch, kept.accuracy, history, kept.predictions, last_state)


class _Run:
    """The moving parts of one training run, set up from its configuration."""

    def __init__(self, model: nn.Module, train_split: Split, config: TrainConfig, device: torch.device, judged_on_validation: bool) -> None:
        torch.manual_seed(config.seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model = model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)
        self.ema = make_ema(self.model, config.ema_decay)
        self.evaluated = self.ema.module if self.ema else self.model
        augment = Augment(config.rotation, config.translation) if (config.rotation or config.translation) else None
        self.loader = DeviceLoader(
            train_split, config.batch_size, device, shuffle=True, seed=config.seed, augment=augment, epoch_size=config.epoch_images
        )
        self.optimizer = make_optimizer(self.model, config, device)
        self.scheduler = make_scheduler(self.optimizer, config, judged_on_validation, len(self.loader))
        self.step = torch.compile(self.model) if config.compile and device.type == "cuda" else self.model
        self.config, self.device, self.images = config, device, self.loader.epoch_images

    def one_epoch(self, epoch: int, on_step: Callable[[int, int], None] | None) -> float:
        """Train through every batch once; returns the mean training loss."""
        self.loader.set_epoch(epoch)
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        for batch_index, (x, y) in enumerate(self.loader):
            with autocast(self.device):
                loss = F.cross_entropy(self.step(memory_format(x, self.device)), y, label_smoothing=self.config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if batchwise(self.scheduler):
                self.scheduler.step()
            if self.ema:
                self.ema.update_parameters(self.model)
            loss_sum += loss.detach() * len(y)  # stays on the device: no host sync per batch
            if on_step:
                on_step(batch_index + 1, len(self.loader))
        return loss_sum.item() / self.images


class _Kept:
    """The weights kept so far: the best validation epoch, or the last one without a validation split."""

    def __init__(self, evaluated: nn.Module) -> None:
        self.take(evaluated, 0, None, None)

    def take(self, evaluated: nn.Module, epoch: int, accuracy: float | None, predictions: torch.Tensor | None) -> None:
        self.weights, self.epoch, self.accuracy, self.predictions = _copy(evaluated), epoch, accuracy, predictions


def _copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
