"""The BatchNorm CNN family of An et al. 2020 (arXiv 2008.10400) and its configurable builder.

The paper's networks stack unpadded, bias-free convolutions, each followed by BatchNorm2d and
ReLU, so every convolution shrinks the feature map by ``kernel_size - 1`` instead of pooling.
The flattened features go through a bias-free Linear layer and BatchNorm1d(10).
"""

from __future__ import annotations

from torch import nn

from mnist_hpo.errors import ModelError
from mnist_hpo.models.config import FamilyConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


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


def build_family(config: FamilyConfig | dict) -> FamilyCNN:
    """Factory used by the registry and the search: accepts the dataclass or its dict form."""
    if isinstance(config, dict):
        unknown = set(config) - set(FamilyConfig.__dataclass_fields__)
        if unknown:
            raise ModelError(f"unknown family setting(s): {', '.join(sorted(unknown))}")
        config = FamilyConfig(**config)
    return FamilyCNN(config)
