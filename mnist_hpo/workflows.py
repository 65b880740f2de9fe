"""What the non-search commands do, one function each, between the CLI and the library."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.table import Table

from mnist_hpo import data
from mnist_hpo.checkpoints import save_checkpoint
from mnist_hpo.console import accuracy, console, progress
from mnist_hpo.models import build_model, count_parameters, model_names, mult_adds, summary_table
from mnist_hpo.trainer import EpochReport, TrainConfig, evaluate, resolve_device, train


def fetch_data(root: Path | None) -> Path:
    root = data.fetch(root, log=console.print)
    console.print(f"MNIST is ready in {root} (torchvision.datasets.MNIST(root={str(root)!r}) reads it)")
    return root


def list_models() -> None:
    table = Table("model", "parameters", "mult-adds / image")
    for name in model_names():
        model = build_model(name)
        table.add_row(name, f"{count_parameters(model):,}", f"{mult_adds(model):,}")
    console.print(table)


def show_summary(name: str) -> None:
    console.print(summary_table(build_model(name)))


def train_model(model_name: str, config: TrainConfig, source: str, device: str, subset: int | None, save: Path | None) -> float:
    """Train one named model, print validation accuracy per epoch and test accuracy at the end."""
    config.validate()
    device = resolve_device(device)
    build_model(model_name)  # an unknown name fails before any data is fetched
    splits = data.load_splits(source, subset=subset, seed=config.seed, log=console.print)
    torch.manual_seed(config.seed)
    model = build_model(model_name)
    console.print(
        f"training {model_name} ({count_parameters(model):,} parameters) on {device} for {config.epochs} epochs: "
        f"{len(splits.train):,} train / {len(splits.val):,} validation images from {splits.source}"
    )

    with progress() as bar:
        epochs = bar.add_task("epochs", total=config.epochs)
        batches = bar.add_task("batches", total=None)

        def on_step(done: int, total: int) -> None:
            bar.update(batches, completed=done, total=total)

        def on_epoch(report: EpochReport) -> None:
            bar.update(epochs, completed=report.epoch)
            console.print(
                f"epoch {report.epoch}/{config.epochs}  train loss {report.train_loss:.4f}  "
                f"{accuracy('validation', report.val_accuracy)}  {report.seconds:.1f} s  {report.images_per_s:,.0f} images/s"
            )

        result = train(model, splits.train, splits.val, config, device, on_epoch=on_epoch, on_step=on_step)

    metrics = {"val_accuracy": result.best_val_accuracy}
    console.print(f"best {accuracy('validation', result.best_val_accuracy)} at epoch {result.best_epoch}")
    if len(splits.test):
        metrics["test_accuracy"] = evaluate(result.model, splits.test, device)
        console.print(f"final {accuracy('test', metrics['test_accuracy'], len(splits.test))} (reported only, never used to select)")
    if save:
        digest = save_checkpoint(save, result.model, {"name": model_name}, metrics, {"train_config": config.to_dict()})
        console.print(f"saved checkpoint {save} (sha256 {digest})")
    return result.best_val_accuracy


def predict_command(checkpoint: Path, images: list[Path], kaggle_csv: Path | None, out: Path | None, device: str) -> None:
    """Label images, or turn a Kaggle test.csv into a submission."""
    from mnist_hpo import predict
    from mnist_hpo.errors import UserError

    target = resolve_device(device)
    if kaggle_csv:
        if out is None:
            raise UserError("--kaggle-csv needs --out submission.csv")
        rows = predict.predict_kaggle_csv(checkpoint, kaggle_csv, out, target)
        console.print(f"wrote {out}: {rows:,} predictions (ImageId,Label)")
        return
    if not images:
        raise UserError("give image files to label, or --kaggle-csv test.csv --out submission.csv")
    for prediction in predict.predict_images(checkpoint, images, target):
        console.print(f"{prediction.path}: {prediction.label} (probability {prediction.probability:.3f})")
