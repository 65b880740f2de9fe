"""Training images/s: our trainer against a plain optuna-examples-style loop, same model and batch.

The plain loop is what most Optuna MNIST examples do: a torchvision ``MNIST`` dataset with
``ToTensor`` and ``Normalize`` (plus ``RandomAffine`` per image when augmenting), a
``DataLoader``, and a copy of every batch to the device. Both run in this one process,
interleaved, and the median of the repeats is reported with the ratio.

    python -m benchmarks.train_throughput [--scale 1.0 | --images N] [--repeats 3] [--models tiny-cnn,m3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from benchmarks.machine import describe
from mnist_hpo import data
from mnist_hpo.models import build_model
from mnist_hpo.trainer import TrainConfig, resolve_device, train

BATCH = 120
IMAGES = {"tiny-cnn": 6000, "m3": 2400}  # 50 and 20 steps: with fewer, the first step's set-up and noise dominate


def plain_loop(model_name: str, images: int, device: torch.device, augment: bool) -> float:
    """images/s of the usual Dataset + DataLoader + per-batch copy loop (Adam, cross-entropy)."""
    steps = [transforms.RandomAffine(20, translate=(0.2, 0.2))] if augment else []
    transform = transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    dataset = Subset(datasets.MNIST(str(data.default_root()), train=True, transform=transform), range(images))
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True)
    torch.manual_seed(0)
    model = build_model(model_name).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - started)


def our_trainer(model_name: str, train_split: data.Split, val_split: data.Split, device: torch.device, augment: bool) -> float:
    """images/s of the training phase of ``mnist_hpo.trainer.train`` (EMA on, as in the search)."""
    config = TrainConfig(epochs=1, batch_size=BATCH, rotation=20.0 if augment else 0.0, translation=0.2 if augment else 0.0)
    torch.manual_seed(0)
    result = train(build_model(model_name), train_split, val_split, config, device)
    return result.history[0].images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the images per measurement (use 20 on a GPU)")
    parser.add_argument("--images", type=int, default=None, help="images per measurement for every model (overrides --scale)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="tiny-cnn,m3")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    data.fetch(log=lambda message: None)
    full, _ = data.load_mnist(log=lambda message: None)

    print(f"machine: {describe()}")
    print(f"{'model':<10} {'augment':<8} {'plain img/s':>12} {'ours img/s':>11} {'ratio':>6} {'ours s/60k':>11}")
    for name in args.models.split(","):
        images = args.images or int(IMAGES.get(name, 3000) * args.scale)
        train_split = full.take(slice(0, images))
        val_split = full.take(slice(0, 120))  # the measured figure is the training phase only
        for augment in (False, True):
            plain, ours = [], []
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                plain.append(plain_loop(name, images, device, augment))
                ours.append(our_trainer(name, train_split, val_split, device, augment))
            p, o = statistics.median(plain), statistics.median(ours)
            print(f"{name:<10} {augment!s:<8} {p:>12,.0f} {o:>11,.0f} {o / p:>5.2f}x {60000 / o:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
