"""Figures are real PNGs of the documented sizes that depend on their inputs; notes say what a trial was."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_hpo.dashboards import figures, notes
from mnist_hpo.models import build_model, count_parameters, mult_adds

CURVE = [
    {"epoch": 1, "train_loss": 1.9, "val_accuracy": 0.71},
    {"epoch": 2, "train_loss": 1.1, "val_accuracy": 0.88},
    {"epoch": 3, "train_loss": 0.7, "val_accuracy": 0.93},
]


def check_png(data: bytes, name: str) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures.png_size(data) == figures.SIZES[name]
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes every chunk: a truncated file fails here
    assert image.size == figures.SIZES[name]
    extrema = image.convert("L").getextrema()
    assert extrema[1] - extrema[0] > 100, "a blank picture"
    return image


@pytest.fixture(scope="module")
def val(fixture_splits):
    return fixture_splits.val


def predictions_with_errors(labels: np.ndarray, n_wrong: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    predictions = labels.copy()
    wrong = rng.choice(len(labels), n_wrong, replace=False)
    predictions[wrong] = (labels[wrong] + rng.integers(1, 10, n_wrong)) % 10
    return predictions


def test_learning_curves_are_pngs_that_follow_the_curve():
    first = figures.learning_curves_png(CURVE, "trial 1")
    check_png(first, figures.CURVES)
    changed = [dict(p) for p in CURVE]
    changed[1]["val_accuracy"] = 0.5
    assert figures.learning_curves_png(changed, "trial 1") != first
    pruned = figures.learning_curves_png(CURVE[:1], "trial 2", "pruned after epoch 1")
    check_png(pruned, figures.CURVES)
    assert pruned != figures.learning_curves_png(CURVE[:1], "trial 2")
    check_png(figures.learning_curves_png([], "trial 3", "stopped"), figures.CURVES)


def test_confusion_matrix_counts_and_picture(val):
    labels = val.labels.numpy()
    predictions = predictions_with_errors(labels, 80)
    counts = figures.confusion_matrix(labels, predictions)
    assert counts.sum() == len(labels)
    assert np.trace(counts) == len(labels) - 80
    assert counts[3].sum() == (labels == 3).sum()  # rows are the true digits
    assert counts[:, 3].sum() == (predictions == 3).sum()  # columns the predicted ones
    image = figures.confusion_matrix_png(labels, predictions, "trial 0")
    check_png(image, figures.CONFUSION)
    assert figures.confusion_matrix_png(labels, predictions_with_errors(labels, 200, seed=1), "trial 0") != image


def test_misclassified_grid_shows_validation_mistakes(val):
    images, labels = val.images.numpy(), val.labels.numpy()
    many = figures.misclassified_png(images, labels, predictions_with_errors(labels, 300), "trial 0")
    check_png(many, figures.MISCLASSIFIED)
    few = figures.misclassified_png(images, labels, predictions_with_errors(labels, 5), "trial 0")
    check_png(few, figures.MISCLASSIFIED)
    assert few != many
    check_png(figures.misclassified_png(images, labels, labels.copy(), "perfect"), figures.MISCLASSIFIED)


def with_mistakes(labels: np.ndarray, at: list[int]) -> np.ndarray:
    predictions = labels.copy()
    predictions[at] = (labels[at] + 1) % 10
    return predictions


def test_misclassified_grid_shows_at_most_36_digits(val):
    """README: "up to 36 misclassified digits". 40 mistakes each time; only what is past the 36th differs."""
    images, labels = val.images.numpy(), val.labels.numpy()
    first_36 = list(range(0, 360, 10))
    picture = figures.misclassified_png(images, labels, with_mistakes(labels, first_36 + [500, 510, 520, 530]), "t")
    check_png(picture, figures.MISCLASSIFIED)
    other_tail = figures.misclassified_png(images, labels, with_mistakes(labels, first_36 + [700, 800, 900, 990]), "t")
    assert other_tail == picture, "a 37th or later mistake was drawn"
    other_36th = figures.misclassified_png(images, labels, with_mistakes(labels, first_36[:-1] + [495, 500, 510, 520, 530]), "t")
    assert other_36th != picture, "the 36th mistake is not drawn (or the figure ignores its input)"


def test_figures_are_deterministic(val):
    """The same inputs give the same bytes: what the dashboard shows depends only on the trial."""
    images, labels = val.images.numpy(), val.labels.numpy()
    predictions = predictions_with_errors(labels, 60)
    assert figures.learning_curves_png(CURVE, "trial 1") == figures.learning_curves_png(CURVE, "trial 1")
    assert figures.confusion_matrix_png(labels, predictions, "trial 1") == figures.confusion_matrix_png(labels, predictions, "trial 1")
    assert figures.misclassified_png(images, labels, predictions, "trial 1") == figures.misclassified_png(
        images, labels, predictions, "trial 1"
    )


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "m3"},
        {
            "name": "family",
            "config": {"conv_layers": 3, "kernel_size": 5, "first_channels": 8, "growth": 4, "head_width": 32, "dropout_in": 0.2},
        },
    ],
)
def test_architecture_table_adds_up_to_the_model(spec):
    model = build_model(spec)
    rows = notes.architecture_rows(build_model(spec))
    assert sum(r[2] for r in rows) == count_parameters(model)
    assert sum(r[3] for r in rows) == mult_adds(model)  # torchinfo's count
    table = notes.architecture_table(spec)
    assert f"| {count_parameters(model):,} |" in table and table.count("\n") == len(rows) + 2


def test_trial_notes_say_outcome_size_device_and_epochs():
    attrs = {
        "parameters": 87_804,
        "mult_adds": 4_012_308,
        "device": "cpu",
        "images_per_s": 1344.1,
        "seed": 0,
        "epochs_run": 3,
        "best_epoch": 3,
        "seconds": 3.8,
        "published_baseline": True,
        "model_spec": {"name": "family", "config": {"conv_layers": 5, "kernel_size": 3, "first_channels": 8, "growth": 4}},
    }
    done = notes.trial_note(0, attrs, CURVE, completed=True, val_accuracy=0.93, epochs=3)
    for fragment in (
        "## Trial 0: completed",
        "93.00% (epoch 3)",
        "| epochs run | 3 of 3 |",
        "| parameters | 87,804 |",
        "4.01 M",
        "| device | cpu |",
        "| training images/s (last epoch) | 1,344 |",
        "### Architecture",
        "Conv2d 3×3, 1→8 + BN",
        "confusion matrix",
    ):
        assert fragment in done, fragment
    pruned = notes.trial_note(
        4, {**attrs, "epochs_run": 1, "best_epoch": None}, CURVE[:1], completed=False, stopped="pruned after epoch 1", epochs=3
    )
    assert "## Trial 4: stopped: pruned after epoch 1" in pruned
    assert "| epochs run | 1 of 3, stopped after epoch 1 |" in pruned
    assert "71.00% (epoch 1)" in pruned and "confusion matrix" not in pruned


def test_study_note_keeps_command_line_and_search_space():
    from mnist_hpo.tuning.attrs import SETTINGS_ATTR
    from mnist_hpo.tuning.profiles import get_profile
    from mnist_hpo.tuning.space import Space

    space = Space().with_overrides(get_profile("smoke", False).space).to_dict()
    note = notes.study_note(
        "s",
        {
            SETTINGS_ATTR: {
                "command": "mnist-hpo search --profile smoke",
                "profile": "smoke",
                "objectives": ["accuracy"],
                "epochs": 2,
                "space": space,
            }
        },
    )
    assert "mnist-hpo search --profile smoke" in note
    assert "| first_channels | int in [4, 8], step 4 |" in note
    assert "| optimizer | one of 'adam', 'adamw', 'sgd' |" in note


def test_predictions_come_from_training_at_no_extra_cost(fixture_splits):
    """The trainer hands back the best epoch's validation predictions, equal to a fresh pass of its model."""
    from mnist_hpo.data import Split
    from mnist_hpo.trainer import TrainConfig, predict_logits, train

    small = Split(fixture_splits.train.images[:500], fixture_splits.train.labels[:500])
    result = train(build_model("tiny-cnn"), small, TrainConfig(epochs=1, batch_size=100), torch.device("cpu"), val=fixture_splits.val)
    assert result.val_predictions is not None and len(result.val_predictions) == len(fixture_splits.val)
    assert torch.equal(result.val_predictions, predict_logits(result.model, fixture_splits.val.images, torch.device("cpu")).argmax(1))
    assert (result.val_predictions == fixture_splits.val.labels).float().mean().item() == pytest.approx(result.val_accuracy)
