"""``mnist_hpo.train``: the `mnist-hpo train` command as a function that returns the network and its history."""

from __future__ import annotations

from pathlib import Path

from mnist_hpo.api._output import shown
from mnist_hpo.commands.train import Trained, train_command


def train(
    model: str | None = None,
    recipe: str | None = None,
    *,
    data: str | None = None,
    subset: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    schedule: str | None = None,
    weight_decay: float | None = None,
    label_smoothing: float | None = None,
    ema_decay: float | None = None,
    seed: int | None = None,
    compile: bool = False,
    device: str = "auto",
    threads: int | None = None,
    save: str | Path | None = None,
    from_study: str | None = None,
    storage: str | None = None,
    progress: bool = False,
) -> Trained:
    """Train one network with its recipe, or retrain a study's best configuration; the options are `mnist-hpo train`'s.

    ``model`` is a name from `mnist-hpo models` (default ``m3``) and ``recipe`` ``paper`` or ``seed``;
    ``data`` is ``mnist`` (default), ``fixture`` or a Kaggle ``train.csv``. Options left None keep the
    recipe's (or, with ``from_study``, the best trial's) values. The best validation epoch is kept; with
    ``from_study`` the network is retrained on train + validation and its last epoch kept. Returns the
    network (eval mode) with every epoch's report and its validation and test accuracy (test reported
    only). ``save`` also writes the checkpoint. ``threads`` sets torch's CPU threads for this process.
    """
    overrides = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "schedule": schedule,
        "weight_decay": weight_decay,
        "label_smoothing": label_smoothing,
        "ema_decay": ema_decay,
        "seed": seed,
        "compile": compile or None,
    }
    saved = Path(save) if save is not None else None
    with shown(progress):
        return train_command(model, recipe, overrides, data, device, subset, saved, from_study=from_study, storage=storage, threads=threads)
