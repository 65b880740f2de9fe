"""The training loop: one function, read it top to bottom.

Defaults are the recipe of An et al. 2020: Adam at 1e-3, the learning rate multiplied by 0.98
after every epoch, batches of 120, random rotation (±20°) and translation (±20 %), and an
exponential moving average (EMA) of the weights with decay 0.999. The EMA copy is what gets
evaluated: it is smoother and more accurate than the raw weights (its decay ramps up over the
first steps, see ``ema_with_warmup``).

The trainer knows nothing of Optuna. It reports through ``on_epoch`` after every epoch, and
whatever that callback raises (for example ``optuna.TrialPruned``) stops training.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from mnist_hpo.data import Augment, DeviceLoader, Split
from mnist_hpo.errors import TrainingDiverged, UserError

OPTIMIZERS = ("adam", "adamw", "sgd", "sgd-plateau")


@dataclass
class TrainConfig:
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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochReport:
    epoch: int  # 1-based
    train_loss: float
    val_accuracy: float
    seconds: float
    images_per_s: float
    lr: float


@dataclass
class TrainResult:
    model: nn.Module  # the evaluated weights (EMA when enabled), in eval mode
    best_val_accuracy: float
    best_epoch: int
    history: list[EpochReport] = field(default_factory=list)
    val_predictions: torch.Tensor | None = None  # predicted validation labels of the best epoch (None if it was before a resume)

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is the user's error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return device


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """Logits for uint8 images (N×28×28), in large batches; returned on the CPU in float32.

    Moves ``model`` to ``device`` first: a checkpoint loads on the CPU, its images go to the GPU.
    """
    model.to(device).eval()
    loader = DeviceLoader(Split(images, torch.zeros(len(images), dtype=torch.long)), batch_size, device)
    outputs = []
    with _autocast(device):
        for x, _ in loader:
            outputs.append(model(_memory_format(x, device)).float())
    return torch.cat(outputs).cpu() if outputs else torch.empty(0, 10)


def evaluate(model: nn.Module, split: Split, device: torch.device, batch_size: int = 1000) -> float:
    """Accuracy = correct / examples evaluated, the partial last batch included."""
    return evaluate_with_predictions(model, split, device, batch_size)[0]


def evaluate_with_predictions(model: nn.Module, split: Split, device: torch.device, batch_size: int = 1000) -> tuple[float, torch.Tensor]:
    """Accuracy as in ``evaluate``, plus the predicted labels (int64, on the CPU) it was computed from."""
    if len(split) == 0:
        raise UserError("cannot evaluate on an empty split")
    predictions = predict_logits(model, split.images, device, batch_size).argmax(1)
    return (predictions == split.labels).sum().item() / len(split), predictions


def train(
    model: nn.Module,
    train_split: Split,
    val_split: Split,
    config: TrainConfig,
    device: torch.device,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_improve: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` and return its best evaluated weights.

    ``config.seed`` fixes the batch order, the augmentation and dropout; seed torch before
    building the model if its initial weights must be reproducible too.

    ``on_improve`` receives the full training state (see ``training_state``) whenever validation
    accuracy improves; passing such a state back as ``resume`` continues after its epoch.
    """
    config.validate()
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)
    ema = AveragedModel(model, multi_avg_fn=ema_with_warmup(config.ema_decay), use_buffers=True) if config.ema_decay else None
    evaluated = ema.module if ema else model
    optimizer = _make_optimizer(model, config, device)
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=3)
        if config.optimizer == "sgd-plateau"
        else torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_gamma)
    )
    augment = Augment(config.rotation, config.translation) if (config.rotation or config.translation) else None
    loader = DeviceLoader(train_split, config.batch_size, device, shuffle=True, seed=config.seed, augment=augment)
    step = torch.compile(model) if config.compile and device.type == "cuda" else model

    history: list[EpochReport] = []
    best_accuracy, best_epoch, first_epoch = -1.0, 0, 1
    best_predictions: torch.Tensor | None = None
    best_weights = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
    if resume:
        first_epoch, best_accuracy, best_epoch = _restore(resume, model, ema, optimizer, scheduler)
        best_weights = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}

    for epoch in range(first_epoch, config.epochs + 1):
        loader.set_epoch(epoch)
        model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for batch_index, (x, y) in enumerate(loader):
            with _autocast(device):
                loss = F.cross_entropy(step(_memory_format(x, device)), y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema:
                ema.update_parameters(model)
            loss_sum += loss.detach() * len(y)  # stays on the device: no host sync per batch
            if on_step:
                on_step(batch_index + 1, len(loader))
        train_loss = loss_sum.item() / len(train_split)
        seconds = time.perf_counter() - started
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch}; lower the learning rate")

        accuracy, predictions = evaluate_with_predictions(evaluated, val_split, device, config.eval_batch_size)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step(accuracy) if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) else scheduler.step()
        report = EpochReport(epoch, train_loss, accuracy, seconds, len(train_split) / seconds, lr)
        history.append(report)
        if accuracy > best_accuracy:
            best_accuracy, best_epoch, best_predictions = accuracy, epoch, predictions
            best_weights = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
            if on_improve:
                on_improve(training_state(model, ema, optimizer, scheduler, epoch, best_accuracy, config))
        if on_epoch:
            on_epoch(report)

    evaluated.load_state_dict(best_weights)
    return TrainResult(evaluated.eval(), best_accuracy, best_epoch, history, best_predictions)


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


def training_state(model, ema, optimizer, scheduler, epoch: int, best_accuracy: float, config: TrainConfig) -> dict[str, Any]:
    """Everything needed to continue after ``epoch``: weights, EMA, optimizer, schedule, RNG.

    A deep copy: the live tensors keep changing as training goes on.
    """
    return copy.deepcopy({
        "epoch": epoch,
        "best_val_accuracy": best_accuracy,
        "train_config": config.to_dict(),
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    })


def _restore(state: dict[str, Any], model, ema, optimizer, scheduler) -> tuple[int, float, int]:
    model.load_state_dict(state["model"])
    if ema and state.get("ema"):
        ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_cpu"])
    if state.get("rng_cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return state["epoch"] + 1, state["best_val_accuracy"], state["epoch"]


def _make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = {"fused": True} if device.type == "cuda" else {}
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, **fused)


def _autocast(device: torch.device):
    """bf16 on CUDA; fp32 on the CPU, where bf16 is slower on most machines."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _memory_format(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x
