"""The pictures of a trial, as PNG bytes: learning curves, confusion matrix, misclassified digits
(and the size of a PBT study's population picture, drawn in ``population.py`` with the helpers here).

Matplotlib's object API on the Agg canvas (no pyplot, no global state, safe in worker threads).
Every figure has a fixed size in pixels (``SIZES``), is drawn in tens of milliseconds and
reads only the validation split: the test set never shapes anything a search shows.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

CURVES, CONFUSION, MISCLASSIFIED = "learning-curves.png", "confusion-matrix.png", "misclassified.png"
POPULATION = "population.png"  # a PBT study's; uploaded once per generation as population-generation-G.png
DPI = 100
#: Width and height in pixels of each figure.
SIZES: dict[str, tuple[int, int]] = {CURVES: (800, 360), CONFUSION: (520, 480), MISCLASSIFIED: (640, 700), POPULATION: (1000, 460)}
MAX_MISCLASSIFIED = 36
CLASSES = 10


def blank_figure(name: str):
    from matplotlib.figure import Figure

    width, height = SIZES[name]
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI)


def png_bytes(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)  # no bbox "tight": the size stays SIZES[name]
    return buffer.getvalue()


def learning_curves_png(curve: Sequence[dict[str, Any]], title: str = "", stopped: str | None = None) -> bytes:
    """Train loss and validation accuracy per epoch, side by side.

    ``curve`` holds ``{"epoch", "train_loss", "val_accuracy"}`` per epoch (the trial's
    ``learning_curve`` user attribute); ``stopped`` (e.g. "pruned after epoch 2") is marked on
    the last epoch.
    """
    epochs = [int(point["epoch"]) for point in curve]
    losses = [float(point["train_loss"]) for point in curve]
    accuracies = [100 * float(point["val_accuracy"]) for point in curve]
    figure = blank_figure(CURVES)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, losses, marker="o", color="tab:blue")
    loss_axes.set(title="train loss", xlabel="epoch", ylabel="cross-entropy")
    accuracy_axes.plot(epochs, accuracies, marker="o", color="tab:green")
    accuracy_axes.set(title="validation accuracy", xlabel="epoch", ylabel="%")
    if accuracies:
        best = int(np.argmax(accuracies))
        accuracy_axes.annotate(
            f"{accuracies[best]:.2f}%", (epochs[best], accuracies[best]), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8
        )
    if stopped and epochs:
        for axes in (loss_axes, accuracy_axes):
            axes.axvline(epochs[-1], color="tab:red", linestyle="--", linewidth=1)
        accuracy_axes.text(0.02, 0.02, stopped, transform=accuracy_axes.transAxes, color="tab:red", fontsize=8)
    if not curve:
        for axes in (loss_axes, accuracy_axes):
            axes.text(0.5, 0.5, "no epoch finished", transform=axes.transAxes, ha="center", va="center")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.margins(x=0.08, y=0.15)
        if epochs:
            axes.set_xticks(_epoch_ticks(epochs))
    if title:
        figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.82 if title else 0.88, wspace=0.28)
    return png_bytes(figure)


def _epoch_ticks(epochs: list[int]) -> list[int]:
    step = max(1, math.ceil(len(epochs) / 10))
    return epochs[::step]


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    """counts[true, predicted]."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(classes, classes)


def confusion_matrix_png(labels: np.ndarray, predictions: np.ndarray, title: str = "") -> bytes:
    """Counts of true (rows) against predicted (columns) digits on the validation split."""
    counts = confusion_matrix(labels, predictions)
    total = int(counts.sum())
    correct = int(np.trace(counts))
    figure = blank_figure(CONFUSION)
    axes = figure.subplots()
    # Colour the errors: the diagonal dwarfs everything else, so it is drawn in grey.
    errors = counts.astype(float)
    np.fill_diagonal(errors, np.nan)
    axes.imshow(np.where(np.eye(CLASSES, dtype=bool), 1.0, np.nan), cmap="Greys", vmin=0, vmax=4)
    worst = max(1.0, float(np.nanmax(errors)) if total else 1.0)
    axes.imshow(errors, cmap="Reds", vmin=0, vmax=worst)
    for true in range(CLASSES):
        for predicted in range(CLASSES):
            value = counts[true, predicted]
            if value or true == predicted:
                dark = true != predicted and value > 0.6 * worst
                axes.text(
                    predicted,
                    true,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                    fontweight="bold" if true == predicted else "normal",
                )
    axes.set_xticks(range(CLASSES))
    axes.set_yticks(range(CLASSES))
    axes.set(xlabel="predicted", ylabel="true")
    accuracy = f"validation: {correct:,}/{total:,} correct ({100 * correct / total:.2f}%)" if total else "no images"
    axes.set_title(f"{title}\n{accuracy}" if title else accuracy, fontsize=9)
    figure.subplots_adjust(left=0.1, right=0.98, bottom=0.1, top=0.9)
    return png_bytes(figure)


def misclassified_png(
    images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, title: str = "", limit: int = MAX_MISCLASSIFIED
) -> bytes:
    """A grid of up to ``limit`` validation digits the model got wrong, each with "predicted / true".

    ``images`` are uint8 N×28×28 (0 = background) aligned with ``labels`` and ``predictions``;
    the first ``limit`` mistakes in split order are shown, drawn as one mosaic image.
    """
    wrong = np.flatnonzero(np.asarray(predictions) != np.asarray(labels))
    shown = wrong[:limit]
    columns = 6
    rows = max(1, math.ceil(len(shown) / columns))
    side, gap = 28, 4
    cell = side + gap
    mosaic = np.full((rows * cell - gap, columns * cell - gap), np.nan)
    for slot, index in enumerate(shown):
        row, column = divmod(slot, columns)
        mosaic[row * cell : row * cell + side, column * cell : column * cell + side] = np.asarray(images[index], dtype=float) / 255.0
    figure = blank_figure(MISCLASSIFIED)
    axes = figure.add_axes((0.02, 0.02, 0.96, 0.86))
    axes.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    for slot, index in enumerate(shown):
        row, column = divmod(slot, columns)
        axes.text(
            column * cell + side / 2,
            row * cell - 0.5,
            f"pred {int(predictions[index])} / true {int(labels[index])}",
            ha="center",
            va="bottom",
            fontsize=7,
            color="tab:red",
        )
    axes.set_xlim(-0.5, columns * cell - gap - 0.5)
    axes.set_ylim(rows * cell - gap - 0.5, -4.5)
    axes.axis("off")
    if not len(wrong):
        axes.text(0.5, 0.5, "no misclassified validation digits", transform=axes.transAxes, ha="center", va="center")
    count = f"{len(wrong):,} of {len(labels):,} validation digits misclassified" + (
        f"; first {len(shown)} shown" if len(wrong) > len(shown) else ""
    )
    figure.suptitle(f"{title}\n{count}" if title else count, fontsize=9)
    return png_bytes(figure)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; ValueError if ``data`` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
