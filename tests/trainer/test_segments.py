"""Training in segments (population-based training): stopping after an epoch and going on, with new rates or not."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mnist_hpo.models import build_model
from mnist_hpo.trainer import TrainConfig, train

CPU = torch.device("cpu")


def run(fixture_splits, config: TrainConfig, **kwargs):
    torch.manual_seed(0)
    split = fixture_splits.train.take(slice(0, 640))
    return train(build_model("tiny-cnn"), split, config, CPU, val=fixture_splits.val.take(slice(0, 200)), **kwargs)


@pytest.mark.parametrize("schedule", ["cosine", "exponential"])
def test_two_segments_train_exactly_what_one_run_trains(fixture_splits, schedule):
    config = TrainConfig(epochs=3, batch_size=64, seed=5, schedule=schedule, lr_gamma=0.8, ema_decay=0.99)
    whole = run(fixture_splits, config, until=3)
    first = run(fixture_splits, config, until=2)
    assert [r.epoch for r in first.history] == [1, 2] and first.last_state["epoch"] == 2
    assert first.last_state["best_val_accuracy"] is None  # the next segment keeps the best of its own epochs
    second = run(fixture_splits, config, resume=first.last_state, until=3)
    assert [r.epoch for r in second.history] == [3]
    assert second.history[0].lr == pytest.approx(whole.history[2].lr, rel=1e-9)
    for key, value in whole.last_state["model"].items():
        assert torch.equal(value, second.last_state["model"][key]), key
    assert second.kept_epoch == 3 and second.val_accuracy == second.history[0].val_accuracy


@pytest.mark.parametrize("schedule", ["cosine", "exponential"])
def test_a_new_learning_rate_scales_the_rest_of_the_schedule_and_a_new_decay_applies(fixture_splits, schedule):
    config = TrainConfig(epochs=4, batch_size=64, seed=5, schedule=schedule, lr_gamma=0.8, weight_decay=1e-5)
    whole = run(fixture_splits, config, until=4)
    first = run(fixture_splits, config, until=2)
    retuned = dataclasses.replace(config, lr=config.lr * 2.5, weight_decay=3e-4)
    second = run(fixture_splits, retuned, resume=first.last_state, until=4)
    for mine, theirs in zip(second.history, whole.history[2:]):
        assert mine.lr == pytest.approx(2.5 * theirs.lr, rel=1e-9)
    assert second.last_state["optimizer"]["param_groups"][0]["weight_decay"] == 3e-4
    assert second.last_state["train_config"]["lr"] == retuned.lr  # the next segment's ratio is taken from here
