"""The networks a space allows, built once before a study is stored: its smallest and its largest.

``space.LIMITS`` and ``space.CHOICES`` check each value by name; this builds what the values make
together. For every kernel size the space offers, every depth it allows is built at the narrowest
widths (first_channels, growth, head_width at their lows) and at the widest (at their highs), with
and without a head where the space has both. Depth is tried in full because size is not monotone
in it: a shallow stack of unpadded convolutions hands a larger feature map to the classifier, so
the quick profile's largest network is its shallowest. Each network is built on torch's meta
device (shapes only, nothing allocated: a billion-parameter network costs nothing to try) and
counted; the smallest is then built for real and runs one 28x28 image in eval mode on the CPU (a
forward pass on the meta device would cost seconds of torch's warm-up per command). torch is
imported only when a check runs, so reading a space stays torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mnist_hpo.models import IMAGE_SIDE, FamilyConfig
from mnist_hpo.tuning.space import Param, Space, SpaceError

#: The most parameters a network of a space may have. Training one holds 16 bytes per parameter (float32
#: weights, gradients and Adam's two moments): 200 million is 3.2 GB per trial before activations, what one
#: GPU trial can still hold beside them; a space past it is a slip (first_channels 100000), not an MNIST CNN.
#: The default spaces stay far below (tests/tuning/test_networks.py): the paper profile's largest network
#: has 41,559,284 parameters, the quick profile's 1,177,928, the smoke profile's 518,380.
MAX_PARAMETERS = 200_000_000


@dataclass(frozen=True)
class Network:
    """One network a space allows, and its size as built."""

    config: FamilyConfig
    parameters: int

    def describe(self) -> str:
        c = self.config
        head = f"head {c.head_width}" if c.head_width else "no head"
        return f"kernel {c.kernel_size}, {c.conv_layers} layers, first_channels {c.first_channels}, growth {c.growth}, {head}"


def check_networks(space: Space, max_params: int | None = None, origin: str = "space") -> tuple[Network, Network]:
    """Build the space's smallest and largest network; refuse, in one line, a space no trial could use.

    The largest must have at most ``MAX_PARAMETERS``; with ``max_params`` (--max-params) the smallest
    must fit it, or every trial would be pruned untrained. Returns (smallest, largest).
    """
    smallest, largest = extremes(space, origin)
    if largest.parameters > MAX_PARAMETERS:
        raise SpaceError(
            f"{origin}: the largest network it allows ({largest.describe()}) has {largest.parameters:,} parameters, more than the "
            f"{MAX_PARAMETERS:,} a trial can train (16 bytes each for weights, gradients and Adam's moments); {_shrink(space, largest)}"
        )
    if max_params is not None and smallest.parameters > max_params:
        raise SpaceError(
            f"--max-params {max_params} is less than the smallest network {origin} allows ({smallest.describe()}: "
            f"{smallest.parameters:,} parameters), so every trial would be pruned untrained; give --max-params "
            f"{smallest.parameters} or more, or a space of smaller networks"
        )
    return smallest, largest


def extremes(space: Space, origin: str = "space") -> tuple[Network, Network]:
    """The smallest and the largest network of ``space`` (ties: the first candidate); the smallest runs one image.

    Every candidate is built on the meta device to be counted (a few ms each).
    """
    built = [_build(config, origin) for config in candidates(space)]
    smallest, largest = min(built, key=lambda n: n.parameters), max(built, key=lambda n: n.parameters)
    return _build(smallest.config, origin, forward=True), largest


def candidates(space: Space) -> list[FamilyConfig]:
    """Every depth of every kernel size, at the narrowest and at the widest widths, with and without a head."""
    p = space.params
    found: dict[FamilyConfig, None] = {}  # in order, without repeats
    for kernel in _offered(p["kernel_size"]):
        depths = p[f"conv_layers_k{kernel}"]
        low, high = _ends(depths)
        for depth in range(low, high + 1, depths.step or 1):
            for end in (0, 1):  # the narrowest widths, then the widest
                for head in _offered(p["head"]):
                    config = FamilyConfig(
                        conv_layers=depth,
                        kernel_size=kernel,
                        first_channels=_ends(p["first_channels"])[end],
                        growth=_ends(p["growth"])[end],
                        head_width=_ends(p["head_width"])[end] if head else 0,
                        dropout_in=_ends(p["dropout_in"])[end],
                        dropout_hidden=_ends(p["dropout_hidden"])[end] if head else 0.0,
                    )
                    found[config] = None
    return list(found)


def _offered(param: Param) -> list[Any]:
    """The values of a categorical parameter a trial can draw."""
    if param.dropped:
        return [param.default]
    if param.fixed is not None:
        return [param.fixed]
    return list(param.choices)


def _ends(param: Param) -> tuple[Any, Any]:
    """The lowest and highest value of a range a trial can draw (an int range's high on its step grid, as Optuna's)."""
    if param.dropped:
        return param.default, param.default
    if param.fixed is not None:
        return param.fixed, param.fixed
    if param.kind == "int":
        step = param.step or 1
        low = int(param.low)
        return low, low + (int(param.high) - low) // step * step
    return param.low, param.high


def _build(config: FamilyConfig, origin: str, forward: bool = False) -> Network:
    """Build ``config`` on the meta device and count it (``forward``: for real, on the CPU, and run one image through it).

    Any failure is one line.
    """
    import torch

    from mnist_hpo.models import build_family, count_parameters

    try:
        with torch.device("cpu" if forward else "meta"), torch.no_grad():
            model = build_family(config).eval()
            logits = model(torch.zeros(1, 1, IMAGE_SIDE, IMAGE_SIDE)) if forward else torch.zeros(1, 10)
        if tuple(logits.shape) != (1, 10):
            raise ValueError(f"it gives outputs of shape {tuple(logits.shape)}, not (1, 10)")
        parameters = count_parameters(model)
    except Exception as exc:  # whatever the builder or torch says: one line that names the network
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SpaceError(
            f"{origin}: the network ({Network(config, 0).describe()}) cannot be built ({reason}); "
            "narrow first_channels, growth, head_width or the depths"
        ) from None
    return Network(config, parameters)


def _shrink(space: Space, largest: Network) -> str:
    """What to change so the largest network fits: its widths, or a deeper stack where a shallow one feeds a wide head."""
    c = largest.config
    widths = "lower first_channels, growth or head_width" if c.head_width else "lower first_channels or growth"
    if c.conv_layers < _ends(space.params[f"conv_layers_k{c.kernel_size}"])[1]:
        return f"{widths}, or raise conv_layers_k{c.kernel_size}'s low (a shallow stack hands a larger feature map to the classifier)"
    return widths
