"""An ensemble that averages its members' softmax; it exports and predicts like one model."""

from __future__ import annotations

import torch
from torch import nn


class SoftmaxAverage(nn.Module):
    """Returns the log of the mean member probability, so argmax and softmax work as with logits."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([member(x).float().softmax(dim=1) for member in self.members]).mean(0)
        return probabilities.clamp_min(1e-12).log()
