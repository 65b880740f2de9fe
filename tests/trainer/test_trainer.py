import pytest
import torch
from torch import nn

from mnist_hpo.data import Split
from mnist_hpo.errors import TrainingDiverged, UserError
from mnist_hpo.models import build_model
from mnist_hpo.trainer import TrainConfig, evaluate, train

CPU = torch.device("cpu")
SMALL = {"name": "family", "config": {"conv_layers": 3, "kernel_size": 5, "first_channels": 8, "growth": 8}}


class ConstantClass(nn.Module):
    """Predicts the same class for every image: its accuracy is that class's share."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label

    def forward(self, x):
        logits = torch.zeros(len(x), 10)
        logits[:, self.label] = 1.0
        return logits


def test_accuracy_counts_the_partial_last_batch():
    # 7 images, 3 of them labelled 3, batches of 4: the right answer is 3/7, not 3/8 or 3/4.
    labels = torch.tensor([3, 1, 3, 0, 5, 3, 9])
    split = Split(torch.zeros(7, 28, 28, dtype=torch.uint8), labels)
    assert evaluate(ConstantClass(3), split, CPU, batch_size=4) == pytest.approx(3 / 7)


def test_small_model_reaches_95_percent_validation_on_the_fixture(fixture_splits):
    torch.manual_seed(0)
    model = build_model(SMALL)
    reports = []
    config = TrainConfig(epochs=4, batch_size=64, lr=3e-3, rotation=0, translation=0, ema_decay=0.99)
    result = train(model, fixture_splits.train, config, CPU, val=fixture_splits.val, on_epoch=reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3, 4]
    assert result.val_accuracy >= 0.95, result.history
    assert result.val_accuracy == max(r.val_accuracy for r in reports)
    assert result.kept_epoch == max(reports, key=lambda r: r.val_accuracy).epoch
    assert evaluate(result.model, fixture_splits.val, CPU) == pytest.approx(result.val_accuracy)
    assert (result.val_predictions == fixture_splits.val.labels).float().mean().item() == pytest.approx(result.val_accuracy)


def test_without_a_validation_split_nothing_is_chosen_and_the_last_epoch_is_kept(fixture_splits):
    train_split = fixture_splits.train.take(slice(0, 512))
    config = TrainConfig(epochs=3, batch_size=64, seed=3)
    states: list = []
    torch.manual_seed(0)
    result = train(build_model("tiny-cnn"), train_split, config, CPU, on_checkpoint=states.append)
    assert result.kept_epoch == 3 and result.val_accuracy is None and result.val_predictions is None
    assert [r.val_accuracy for r in result.history] == [None, None, None]
    assert [s["epoch"] for s in states] == [1, 2, 3], "every epoch is a checkpoint: each is the one kept so far"
    last = states[-1]["ema"]  # the evaluated (EMA) weights after the last epoch are exactly the model returned
    kept = result.model.state_dict()
    assert all(torch.equal(kept[k], last[f"module.{k}"]) for k in kept)


def test_nan_loss_stops_training_with_a_reason(fixture_splits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    nn.init.constant_(model[1].weight, float("nan"))
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        train(model, fixture_splits.train.take(slice(0, 256)), TrainConfig(epochs=2), CPU, val=fixture_splits.val)


def test_callback_exception_stops_training(fixture_splits):
    class Stop(Exception):
        pass

    def stop_after_first(report):
        raise Stop

    with pytest.raises(Stop):
        train(
            build_model("tiny-cnn"),
            fixture_splits.train.take(slice(0, 256)),
            TrainConfig(epochs=3),
            CPU,
            val=fixture_splits.val,
            on_epoch=stop_after_first,
        )


def test_same_seed_same_result_and_resume_continues_after_the_checkpoint(fixture_splits):
    train_split = fixture_splits.train.take(slice(0, 512))
    config = TrainConfig(epochs=3, seed=7, batch_size=64)

    def run(resume=None, states=None):
        torch.manual_seed(0)
        return train(
            build_model("tiny-cnn"),
            train_split,
            config,
            CPU,
            val=fixture_splits.val,
            on_checkpoint=(states.append if states is not None else None),
            resume=resume,
        )

    states: list = []
    first, second = run(states=states), run()
    assert [r.val_accuracy for r in first.history] == [r.val_accuracy for r in second.history]
    assert states and states[0]["epoch"] == 1
    resumed = run(resume=states[0])
    assert [r.epoch for r in resumed.history] == [2, 3]
    assert [r.val_accuracy for r in resumed.history] == [r.val_accuracy for r in first.history[1:]]
    assert resumed.val_accuracy == first.val_accuracy and torch.equal(resumed.val_predictions, first.val_predictions)


def test_bad_training_settings_are_user_errors(fixture_splits):
    with pytest.raises(UserError, match="epochs must be at least 1"):
        train(build_model("tiny-cnn"), fixture_splits.train, TrainConfig(epochs=0), CPU, val=fixture_splits.val)
    with pytest.raises(UserError, match="unknown optimizer"):
        TrainConfig(optimizer="lion").validate()
