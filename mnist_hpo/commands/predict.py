"""`mnist-hpo predict`: label digit images, or turn a Kaggle test.csv into a submission."""

from __future__ import annotations

from pathlib import Path

from mnist_hpo.console import console
from mnist_hpo.errors import UserError


def predict_command(checkpoint: Path, images: list[Path], kaggle_csv: Path | None, out: Path | None, device: str) -> None:
    if kaggle_csv is None and out is not None:
        raise UserError("--out is where a Kaggle submission goes; give --kaggle-csv test.csv with it")
    if kaggle_csv is not None and out is None:
        raise UserError("--kaggle-csv needs --out submission.csv")
    if kaggle_csv is None and not images:
        raise UserError("give image files to label, or --kaggle-csv test.csv --out submission.csv")
    from mnist_hpo import predict  # torch: only once the options are known to be right
    from mnist_hpo.trainer import resolve_device

    target = resolve_device(device)
    if kaggle_csv is not None:
        rows = predict.predict_kaggle_csv(checkpoint, kaggle_csv, out, target)
        console.print(f"wrote {out}: {rows:,} predictions (ImageId,Label)")
        return
    for prediction in predict.predict_images(checkpoint, images, target):
        console.print(f"{prediction.path}: {prediction.label} (probability {prediction.probability:.3f})")
