"""Recipes and schedules: each seed network's own recipe, fresh images per epoch, cosine and plateau schedules."""

from __future__ import annotations

import pytest
import torch

from mnist_hpo.data import DeviceLoader, Split
from mnist_hpo.errors import UserError
from mnist_hpo.models import build_model
from mnist_hpo.trainer import PAPER, SEED_RECIPES, TrainConfig, recipe_for, train, with_overrides

CPU = torch.device("cpu")


def numbered(n: int) -> Split:
    """Images that carry their index in their first two pixels (low byte, high byte)."""
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 0, 0] = torch.arange(n) % 256
    images[:, 0, 1] = torch.arange(n) // 256
    return Split(images, torch.arange(n) % 10)


def indices(x: torch.Tensor) -> list[int]:
    pixels = ((x[:, 0, 0, :2] + 1) * 127.5).round().long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


def test_each_seed_network_gets_its_write_up_s_recipe_and_the_paper_s_networks_the_paper_s():
    tiny = recipe_for("tiny-cnn")
    assert tiny is SEED_RECIPES["tiny-cnn"] and tiny.reported == "98.04 % test"
    config = tiny.config
    assert (config.optimizer, config.lr, config.momentum, config.batch_size, config.schedule, config.epochs) == (
        "sgd",
        1e-2,
        0.0,
        64,
        "plateau",
        150,
    )
    assert (config.rotation, config.translation, config.ema_decay) == (0.0, 0.0, 0.0)
    assert recipe_for("m3") is PAPER and recipe_for("tiny-cnn", "paper") is PAPER
    assert PAPER.config.optimizer == "adam" and PAPER.config.rotation == 20.0 and PAPER.config.ema_decay == 0.999
    with pytest.raises(UserError, match="m3 has no seed recipe"):
        recipe_for("m3", "seed")
    with pytest.raises(UserError, match="unknown recipe 'keras'"):
        recipe_for("tiny-cnn", "keras")
    given = with_overrides(tiny, epochs=1, lr=None, batch_size=32)
    assert (given.epochs, given.lr, given.batch_size) == (1, 1e-2, 32), "options given override the recipe; None does not"


def test_an_epoch_of_k_images_is_a_fresh_draw_from_the_whole_split_each_epoch():
    split = numbered(1000)
    loader = DeviceLoader(split, 64, shuffle=True, seed=3, epoch_size=300)
    assert len(loader) == 5 and loader.epoch_images == 300
    seen = []
    for epoch in range(1, 4):
        loader.set_epoch(epoch)
        drawn = [i for x, _ in loader for i in indices(x)]
        assert len(drawn) == 300 and len(set(drawn)) == 300, "no image twice within an epoch"
        seen.append(set(drawn))
    assert seen[0] != seen[1] != seen[2], "each epoch draws other images"
    assert len(seen[0] | seen[1] | seen[2]) > 300, "together the epochs cover more than one epoch's worth"
    with pytest.raises(ValueError, match="needs shuffle=True"):
        DeviceLoader(split, 64, epoch_size=300)


def test_the_cosine_schedule_ends_near_zero_and_epoch_images_sets_the_work_per_epoch(fixture_splits):
    reports = []
    config = TrainConfig(epochs=2, batch_size=100, lr=5e-3, schedule="cosine", epoch_images=500, rotation=0, translation=0)
    torch.manual_seed(0)
    result = train(build_model("tiny-cnn"), fixture_splits.train, config, CPU, val=fixture_splits.val, on_epoch=reports.append)
    assert [r.epoch for r in reports] == [1, 2]
    assert reports[0].lr == pytest.approx(5e-3 * (1 + torch.cos(torch.tensor(torch.pi * 5 / 10)).item()) / 2, rel=1e-3)
    assert result.epochs_run == 2


def test_the_plateau_schedule_lowers_the_lr_when_validation_stops_improving(fixture_splits):
    reports = []
    config = TrainConfig(
        epochs=4,
        batch_size=100,
        lr=1e-2,
        optimizer="sgd",
        momentum=0.0,
        schedule="plateau",
        plateau_patience=0,
        epoch_images=200,
        rotation=0,
        translation=0,
        ema_decay=0,
    )
    torch.manual_seed(0)
    train(build_model("tiny-cnn"), fixture_splits.train, config, CPU, val=fixture_splits.val.take(slice(0, 50)), on_epoch=reports.append)
    lrs = [r.lr for r in reports]
    assert lrs[0] == 1e-2 and min(lrs) < 1e-2, lrs


def test_a_stored_configuration_of_mnist_hpo_0_1_still_loads_and_a_newer_one_is_a_clear_error():
    old = {**TrainConfig().to_dict(), "optimizer": "sgd-plateau"}
    for key in ("schedule", "plateau_patience", "epoch_images"):
        old.pop(key)
    loaded = TrainConfig.from_dict(old)
    assert (loaded.optimizer, loaded.schedule, loaded.plateau_patience) == ("sgd", "plateau", 3)
    with pytest.raises(UserError, match="settings this mnist-hpo does not know .lion_beta.*pip install -U mnist-hpo"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "lion_beta": 0.9})
    with pytest.raises(UserError, match="unknown learning-rate schedule 'step'"):
        TrainConfig(schedule="step").validate()
