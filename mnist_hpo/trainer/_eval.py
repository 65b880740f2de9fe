"""Scoring a network on a split: logits in large batches, accuracy over every example."""

from __future__ import annotations

import torch
from torch import nn

from mnist_hpo.data import DeviceLoader, Split
from mnist_hpo.errors import UserError
from mnist_hpo.trainer._device import autocast, memory_format


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """Logits for uint8 images (N×28×28), in large batches; returned on the CPU in float32.

    Moves ``model`` to ``device`` first: a checkpoint loads on the CPU, its images go to the GPU.
    """
    model.to(device).eval()
    loader = DeviceLoader(Split(images, torch.zeros(len(images), dtype=torch.long)), batch_size, device)
    outputs = []
    with autocast(device):
        for x, _ in loader:
            outputs.append(model(memory_format(x, device)).float())
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
