"""The network with its preprocessing inside, traced once by torch.export for the pt2 and ONNX files.

Users hold raw pixels (uint8 from MNIST's IDX files, 0-255 numbers from a Kaggle CSV), not the
trainer's internal scaling, so the program takes those and scales them itself. The common mistake
of feeding 0-1 floats (torchvision's ``ToTensor``) is recognised per image and undone; values
that no pixel convention allows (negative, above 255) make that image's outputs NaN rather than a
confident wrong digit.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.export import Dim, ExportedProgram

from mnist_hpo.exports.info import INPUT_NAME
from mnist_hpo.models.config import IMAGE_SIDE

PIXEL_MAX = 255.0
HALF = PIXEL_MAX / 2  # the trainer feeds pixels / 127.5 - 1 (DeviceLoader)


def network_input(pixels: torch.Tensor) -> torch.Tensor:
    """Raw pixels (any dtype, N×1×28×28) to what mnist-hpo's networks were trained on."""
    x = pixels.to(torch.float32)
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    x = torch.where(peak <= 1.0, x * PIXEL_MAX, x)
    x = torch.where((low < 0) | (peak > PIXEL_MAX), torch.full_like(x, float("nan")), x)
    return x / HALF - 1.0


class RawPixels(nn.Module):
    """Raw pixels in; logits and probabilities out."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(network_input(pixels)).float()
        return logits, torch.softmax(logits, dim=1)


def export_program(network: nn.Module, input_dtype: str) -> ExportedProgram:
    """torch.export of the network with preprocessing, batch size dynamic (traced at 2, valid from 1)."""
    module = RawPixels(network.cpu().eval()).eval()
    example = torch.zeros(2, 1, IMAGE_SIDE, IMAGE_SIDE, dtype=getattr(torch, input_dtype))
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes={INPUT_NAME: {0: Dim("batch", min=1)}})
