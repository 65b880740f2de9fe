"""The BatchNorm CNN family of An et al. 2020 (arXiv 2008.10400) and its configurable builder.

The paper's networks stack unpadded, bias-free convolutions, each followed by BatchNorm2d and
ReLU, so every convolution shrinks the feature map by ``kernel_size - 1`` instead of pooling.
The flattened features go through a bias-free Linear layer and BatchNorm1d(10).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from mnist_hpo.errors import ModelError

IMAGE_SIDE = 28
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


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
        if self.activation not in ACTIVATIONS:
            raise ModelError(f"unknown activation {self.activation!r}; choose from {', '.join(ACTIVATIONS)}")
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


class FamilyCNN(nn.Module):
    """A member of the family; expects images scaled to [-1, 1] and returns logits."""

    def __init__(self, config: FamilyConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        activation = ACTIVATIONS[config.activation]
        layers: list[nn.Module] = []
        in_channels = 1
        for out_channels in config.channels():
            layers += [
                nn.Conv2d(in_channels, out_channels, config.kernel_size, bias=False),
                nn.BatchNorm2d(out_channels, momentum=config.bn_momentum),
                activation(),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        flat = in_channels * config.feature_side() ** 2
        head: list[nn.Module] = [nn.Flatten()]
        if config.dropout_in:
            head.append(nn.Dropout(config.dropout_in))
        if config.head_width:
            head += [nn.Linear(flat, config.head_width), activation()]
            if config.dropout_hidden:
                head.append(nn.Dropout(config.dropout_hidden))
            flat = config.head_width
        head += [nn.Linear(flat, 10, bias=False), nn.BatchNorm1d(10, momentum=config.bn_momentum)]
        self.classifier = nn.Sequential(*head)

    def forward(self, x):
        return self.classifier(self.features(x))


# The published configurations (the authors' code, github.com/ansh941/MnistSimpleCNN).
PAPER_CONFIGS: dict[str, FamilyConfig] = {
    "m3": FamilyConfig(conv_layers=10, kernel_size=3, first_channels=32, growth=16),
    "m5": FamilyConfig(conv_layers=5, kernel_size=5, first_channels=32, growth=32),
    "m7": FamilyConfig(conv_layers=4, kernel_size=7, first_channels=48, growth=48),
}


def build_family(config: FamilyConfig | dict) -> FamilyCNN:
    """Factory used by the registry and the search: accepts the dataclass or its dict form."""
    if isinstance(config, dict):
        unknown = set(config) - set(FamilyConfig.__dataclass_fields__)
        if unknown:
            raise ModelError(f"unknown family setting(s): {', '.join(sorted(unknown))}")
        config = FamilyConfig(**config)
    return FamilyCNN(config)
