"""On-device batches: a split kept on the training device as one uint8 tensor, augmented there."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mnist_hpo.data._splits import Split


def to_network_input(pixels: Tensor) -> Tensor:
    """Raw pixels (0-255, uint8 or float) as every network here sees them: float32 in [-1, 1].

    (x / 255 - 0.5) / 0.5, the normalisation of An et al.; the one place it is defined, so that
    exports can put the same step in front of the network.
    """
    return pixels.to(torch.float32).div(127.5).sub(1.0)


@dataclass(frozen=True)
class Augment:
    """Random rotation (±degrees) and translation (± a fraction of the side), per image."""

    degrees: float = 20.0
    translate: float = 0.2

    def __post_init__(self) -> None:
        if self.degrees < 0 or not 0 <= self.translate <= 1:
            raise ValueError(f"Augment needs degrees >= 0 and 0 <= translate <= 1, got {self.degrees}, {self.translate}")

    @property
    def is_identity(self) -> bool:
        return self.degrees == 0 and self.translate == 0


def augment_batch(x: Tensor, aug: Augment | None, generator: torch.Generator) -> Tensor:
    """Rotate and shift every image of a normalised B×1×H×W batch at once, on its device.

    Random numbers come from ``generator`` (which must live on ``x``'s device), so a seeded
    generator gives the same augmentation. Pixels shifted in from outside are background (-1).
    """
    if aug is None or aug.is_identity or x.shape[0] == 0:
        return x
    u = torch.rand(x.shape[0], 3, generator=generator, device=x.device, dtype=torch.float32) * 2 - 1
    angle = u[:, 0] * math.radians(aug.degrees)
    shift = u[:, 1:] * (2 * aug.translate)  # affine_grid coordinates span 2 units per side
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    # Sample x + 1 (background 0) with zero padding, so the outside and the background both stay -1.
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


class DeviceLoader:
    """Batches from a split that lives on the device as one uint8 tensor: no workers, no host copies.

    Each pass (``iter``) is one epoch, shuffled by a generator seeded with ``seed + epoch``, so a run is
    reproducible, epochs differ, and ``set_epoch`` resumes mid-run with the same order. With
    ``epoch_size`` an epoch is the first ``epoch_size`` examples of that shuffle: a fresh random draw
    from the whole split each epoch, so short runs see more different images than a fixed subset.
    Yields float32 images in [-1, 1] shaped B×1×28×28, and int64 labels.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        drop_last: bool = False,
        epoch_size: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if epoch_size is not None and not shuffle:
            raise ValueError("epoch_size draws a random part of the split each epoch; it needs shuffle=True")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.augment = None if augment is None or augment.is_identity else augment
        self.drop_last = drop_last
        self.epoch_images = min(epoch_size, self.images.shape[0]) if epoch_size is not None else self.images.shape[0]
        self.epoch = 0

    def __len__(self) -> int:
        n = self.epoch_images
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next ``iter`` draws its order and augmentation for."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator(device=self.device).manual_seed(self.seed + epoch)
        order = torch.randperm(self.images.shape[0], generator=generator, device=self.device) if self.shuffle else None
        stop = len(self) * self.batch_size if self.drop_last else self.epoch_images
        for start in range(0, stop, self.batch_size):
            end = min(start + self.batch_size, stop)
            index = order[start:end] if order is not None else slice(start, end)
            x = to_network_input(self.images[index].unsqueeze(1))
            if self.augment is not None:
                x = augment_batch(x, self.augment, generator)
            yield x, self.labels[index]
