"""`mnist-hpo predict`: label digit images, or turn a Kaggle test.csv into a submission."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mnist_hpo.console import console
from mnist_hpo.errors import UserError
from mnist_hpo.trainer import check_threads, use_threads

if TYPE_CHECKING:
    from mnist_hpo.inference import Prediction


def predict_command(
    checkpoint: Path, images: list[Path], kaggle_csv: Path | None, out: Path | None, device: str, threads: int | None = None
) -> None:
    if kaggle_csv is None and out is not None:
        raise UserError("--out is where a Kaggle submission goes; give --kaggle-csv test.csv with it")
    if kaggle_csv is not None and out is None:
        raise UserError("--kaggle-csv needs --out submission.csv")
    if kaggle_csv is None and not images:
        raise UserError("give image files to label, or --kaggle-csv test.csv --out submission.csv")
    check_threads(threads)
    from mnist_hpo import inference  # torch: only once the options are known to be right
    from mnist_hpo.trainer import resolve_device

    use_threads(threads)
    target = resolve_device(device)
    if kaggle_csv is not None:
        rows = inference.predict_kaggle_csv(checkpoint, kaggle_csv, out, target)
        console.print(f"wrote {out}: {rows:,} predictions (ImageId,Label)")
        return
    for prediction in inference.predict_images(checkpoint, images, target):
        console.print(prediction_line(prediction))


def prediction_line(prediction: Prediction) -> str:
    """One image's line: its digit and probability, and "uncertain" with the reason when it should not be trusted."""
    if prediction.label is None:
        return f"{prediction.path}: ? uncertain: {prediction.doubt}"
    line = f"{prediction.path}: {prediction.label} (probability {prediction.probability:.3f})"
    return f"{line} uncertain: {prediction.doubt}" if prediction.uncertain else line
