"""The seed write-ups' networks, kept as named baselines to compare the search against.

Every seed ended its network with Softmax and then trained with a cross-entropy loss. That is a
mistake: ``nn.CrossEntropyLoss`` applies log-softmax itself, so a softmax before it squashes the
gradients and slows or stalls learning. These versions return logits; apply softmax only when
probabilities are wanted.
"""

from __future__ import annotations

from torch import nn


def kaggle_cnn() -> nn.Module:
    """Seed 000 (Kaggle Digit Recognizer): three conv/LeakyReLU/BN/avg-pool blocks, 174,506 params."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.LeakyReLU(0.1),
            nn.BatchNorm2d(cout),
            nn.AvgPool2d(2),
        ]

    return nn.Sequential(
        *block(1, 32),
        *block(32, 64),
        *block(64, 128),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(1152, 64),
        nn.LeakyReLU(0.1),
        nn.BatchNorm1d(64),
        nn.Linear(64, 64),
        nn.LeakyReLU(0.1),
        nn.Dropout(0.2),
        nn.Linear(64, 32),
        nn.LeakyReLU(0.1),
        nn.BatchNorm1d(32),
        nn.Linear(32, 32),
        nn.LeakyReLU(0.1),
        nn.Dropout(0.2),
        nn.Linear(32, 10),
    )


def wide_cnn() -> nn.Module:
    """Seed 001: six padded convs and a 4608-2048-1024 head, 11,705,450 params."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 96, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(96, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, stride=1),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(4608, 2048),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(2048, 1024),
        nn.ReLU(),
        nn.Linear(1024, 10),
    )


def tiny_cnn() -> nn.Module:
    """Seed 002: two conv/BN/ReLU/max-pool blocks and a 48-164-10 head, 9,956 params (98.04% test)."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 3, 5),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(48, 164),
        nn.Dropout(0.5),
        nn.ReLU(),
        nn.Linear(164, 10),
    )


def simple_cnn() -> nn.Module:
    """Seed 003 (Keras tutorial): conv32-pool-conv64-pool-conv64, dense 64, dense 10; 93,322 params."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(576, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
