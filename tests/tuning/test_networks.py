"""The smallest and largest network of a space, built on the meta device before a study is stored.

In-process and fast: every network is built on torch's meta device (shapes only), never trained.
The same refusals through the real CLI are in tests/commands/test_space_networks.py.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from mnist_hpo.tuning._networks import MAX_PARAMETERS, _build, candidates, check_networks, extremes
from mnist_hpo.tuning.profiles import PROFILES
from mnist_hpo.tuning.space import Space, SpaceError, load_space_file

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACES = ["default", *PROFILES]
#: (smallest, largest) parameters of each default space, as _networks.MAX_PARAMETERS's comment states them.
SIZES = {
    "default": (81_140, 41_559_284),
    "paper": (81_140, 41_559_284),
    "quick": (3_992, 1_177_928),
    "smoke": (5_808, 518_380),
}


def profile_space(name: str) -> Space:
    return Space() if name == "default" else Space().with_overrides(PROFILES[name].space, origin=f"profile {name}")


def with_file(tmp_path: Path, text: str, base: str = "smoke") -> Space:
    path = tmp_path / "space.toml"
    path.write_text(text, encoding="utf-8")
    return load_space_file(path, profile_space(base))


@pytest.mark.parametrize("name", SPACES)
def test_every_default_space_is_far_below_the_ceiling(name):
    smallest, largest = check_networks(profile_space(name))
    assert 0 < smallest.parameters <= largest.parameters <= MAX_PARAMETERS // 4
    assert (smallest.parameters, largest.parameters) == SIZES[name]


@pytest.mark.parametrize("name", SPACES)
def test_no_network_a_trial_draws_is_outside_the_extremes(name):
    space = profile_space(name)
    smallest, largest = extremes(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        family, _ = space.sample(trial)
        assert smallest.parameters <= _build(family, "test").parameters <= largest.parameters, family
        study.tell(trial, 0.0)


def test_every_depth_is_tried_because_size_is_not_monotone_in_it():
    """Quick's largest network is its shallowest: 5 unpadded layers hand the head an 18x18 map, 10 layers an 8x8 one."""
    space = profile_space("quick")
    _, largest = extremes(space)
    assert largest.config.conv_layers == space.params["conv_layers_k3"].low
    assert largest.config.head_width == space.params["head_width"].high


def test_fixed_and_dropped_values_are_what_is_built(tmp_path):
    space = with_file(tmp_path, "[kernel_size]\nvalue = 5\n\n[head]\nvalue = false\n\n[first_channels]\ndrop = true\n", base="default")
    configs = candidates(space)
    assert {c.kernel_size for c in configs} == {5}
    assert {c.head_width for c in configs} == {0}
    assert {c.first_channels for c in configs} == {32}  # the dropped parameter's default
    assert {c.conv_layers for c in configs} == set(range(3, 7))  # every depth conv_layers_k5 allows


def test_an_int_range_ends_on_its_step_grid(tmp_path):
    space = with_file(tmp_path, "[first_channels]\nlow = 4\nhigh = 11\nstep = 4\n")  # Optuna draws 4 or 8, never 11
    assert {c.first_channels for c in candidates(space)} == {4, 8}


def test_a_space_too_big_to_train_is_one_line_that_names_its_largest_network(tmp_path):
    space = with_file(tmp_path, "[first_channels]\nhigh = 100000\n\n[growth]\nhigh = 48\n")
    with pytest.raises(SpaceError) as caught:
        check_networks(space, origin="space file big.toml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("space file big.toml: the largest network it allows (kernel 7, 3 layers, first_channels 100000, growth 48")
    assert "more than the 200,000,000 a trial can train" in message and "lower first_channels, growth or head_width" in message


def test_a_wide_head_on_a_shallow_stack_also_suggests_a_deeper_one(tmp_path):
    space = with_file(tmp_path, "[kernel_size]\nvalue = 3\n\n[head]\nvalue = true\n\n[head_width]\nlow = 16\nhigh = 100000\n")
    with pytest.raises(SpaceError, match=r"kernel 3, 4 layers, .* head 100000\) has .* raise conv_layers_k3's low"):
        check_networks(space)


def test_max_params_below_the_smallest_network_is_refused():
    space = profile_space("smoke")
    smallest, _ = extremes(space)
    with pytest.raises(SpaceError) as caught:
        check_networks(space, max_params=10, origin="profile smoke")
    message = str(caught.value)
    assert message.startswith("--max-params 10 is less than the smallest network profile smoke allows (kernel 7, 3 layers")
    assert f"{smallest.parameters:,} parameters" in message and "every trial would be pruned untrained" in message
    assert f"give --max-params {smallest.parameters} or more" in message  # as it is typed: no thousands separators
    check_networks(space, max_params=smallest.parameters)  # exactly the smallest: that one trains


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[head]\nvalue = true\n\n[head_width]\nvalue = 1000000000000000000\n", "head 1000000000000000000) cannot be built ("),
        ("[first_channels]\nvalue = 1099511627776\n", "first_channels 1099511627776, growth 0, no head) cannot be built ("),
    ],
)
def test_a_network_torch_cannot_even_describe_is_one_line_naming_it(tmp_path, text, fragment):
    with pytest.raises(SpaceError) as caught:
        check_networks(with_file(tmp_path, text))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
