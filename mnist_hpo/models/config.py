"""What shapes a network of the family of An et al. 2020, as plain data (no torch needed to read it).

The search space, study settings and checkpoints describe networks with these; ``family`` builds them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mnist_hpo.errors import ModelError

IMAGE_SIDE = 28
ACTIVATION_NAMES = ("relu", "leaky_relu", "gelu", "silu")


@dataclass(frozen=True)
class FamilyConfig:
    """Everything that shapes a network of the family; plain data so it can be stored anywhere.

    Channels of conv ``i`` are ``first_channels + i * growth``. ``head_width == 0`` means the
    paper's head (Linear to 10 logits); otherwise dropout -> Linear(head_width) -> activation
    -> dropout -> Linear(10).
    """

    conv_layers: int = 10
    kernel_size: int = 3
    first_channels: int = 32
    growth: int = 16
    bn_momentum: float = 0.1
    activation: str = "relu"
    head_width: int = 0
    dropout_in: float = 0.0
    dropout_hidden: float = 0.0

    def channels(self) -> list[int]:
        return [self.first_channels + i * self.growth for i in range(self.conv_layers)]

    def feature_side(self) -> int:
        return IMAGE_SIDE - self.conv_layers * (self.kernel_size - 1)

    def validate(self) -> None:
        if self.kernel_size not in (3, 5, 7):
            raise ModelError(f"kernel_size must be 3, 5 or 7, got {self.kernel_size}")
        if self.conv_layers < 1:
            raise ModelError(f"conv_layers must be at least 1, got {self.conv_layers}")
        if self.feature_side() < 1:
            deepest = max_conv_layers(self.kernel_size)
            raise ModelError(
                f"{self.conv_layers} unpadded {self.kernel_size}x{self.kernel_size} convolutions "
                f"shrink a 28x28 image below 1 pixel; use at most {deepest} layers"
            )
        if self.first_channels < 1 or min(self.channels()) < 1:
            raise ModelError("every convolution needs at least one channel; raise first_channels or growth")
        if self.activation not in ACTIVATION_NAMES:
            raise ModelError(f"unknown activation {self.activation!r}; choose from {', '.join(ACTIVATION_NAMES)}")
        if self.head_width < 0:
            raise ModelError(f"head_width must be 0 (no hidden layer) or positive, got {self.head_width}")
        for name in ("dropout_in", "dropout_hidden"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ModelError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


def max_conv_layers(kernel_size: int) -> int:
    """The depth rule: the deepest stack that still leaves at least a 1x1 feature map."""
    return (IMAGE_SIDE - 1) // (kernel_size - 1)


# The published configurations (the authors' code, github.com/ansh941/MnistSimpleCNN).
PAPER_CONFIGS: dict[str, FamilyConfig] = {
    "m3": FamilyConfig(conv_layers=10, kernel_size=3, first_channels=32, growth=16),
    "m5": FamilyConfig(conv_layers=5, kernel_size=5, first_channels=32, growth=32),
    "m7": FamilyConfig(conv_layers=4, kernel_size=7, first_channels=48, growth=48),
}
