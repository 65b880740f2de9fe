"""`mnist-hpo train`: one network by name, or a study's best configuration retrained honestly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from mnist_hpo import data
from mnist_hpo.checkpoints import save_checkpoint
from mnist_hpo.console import accuracy, console, progress
from mnist_hpo.errors import UserError
from mnist_hpo.models import build_model, count_parameters
from mnist_hpo.trainer import EpochReport, TrainConfig, evaluate, recipe_for, resolve_device, train, with_overrides


def train_model(
    model_name: str, recipe_name: str | None, overrides: dict, source: str, device: str, subset: int | None, save: Path | None
) -> float:
    """Train one named model with its recipe: the best validation epoch is kept; test accuracy is reported at the end."""
    build_model(model_name)  # an unknown name fails before any data is fetched
    recipe = recipe_for(model_name, recipe_name)
    config = with_overrides(recipe, **overrides)
    config.validate()
    target = resolve_device(device)
    console.print(
        f"recipe {recipe.name}: {recipe.source}"
        + (f"; not stated there, so framework defaults: {', '.join(recipe.unstated)}" if recipe.unstated else "")
    )
    splits = data.load_splits(source, subset=subset, seed=config.seed, log=console.print)
    torch.manual_seed(config.seed)
    model = build_model(model_name)
    console.print(
        f"training {model_name} ({count_parameters(model):,} parameters) on {target} for {config.epochs} epochs: "
        f"{len(splits.train):,} train / {len(splits.val):,} validation images from {splits.source}"
    )
    result = _train_with_progress(model, splits.train, config, target, splits.val)
    metrics = {"val_accuracy": result.val_accuracy}
    console.print(f"kept epoch {result.kept_epoch}: {accuracy('validation', result.val_accuracy)} (the best validation epoch)")
    if len(splits.test):
        metrics["test_accuracy"] = evaluate(result.model, splits.test, target)
        console.print(
            f"{accuracy('test', metrics['test_accuracy'], len(splits.test))} of the kept weights (reported only, never used to select)"
        )
    if save:
        digest = save_checkpoint(
            save, result.model, {"name": model_name}, metrics, {"train_config": config.to_dict(), "recipe": recipe.name}
        )
        console.print(f"saved checkpoint {save} (sha256 {digest})")
    return result.val_accuracy


def train_from_study(url: str | None, name: str, epochs: int | None, device: str, save: Path | None) -> float:
    """Retrain the best configuration (chosen on validation) on train + validation and keep its last epoch.

    Nothing is chosen here: no split is held out, so the last epoch is the model, and its test
    accuracy, printed and stored in the checkpoint, is that of exactly the saved weights.
    """
    from mnist_hpo.commands._trials import study_splits
    from mnist_hpo.commands.status import completed_by_validation, open_study

    target = resolve_device(device)
    study, _ = open_study(url, name)
    best = completed_by_validation(study)[0]
    if "train_config" not in best.user_attrs or "model_spec" not in best.user_attrs:
        raise UserError(f"trial {best.number} has no recorded training configuration; it was made by an older mnist-hpo")
    from mnist_hpo.search.settings import StudySettings

    epochs = epochs if epochs is not None else StudySettings.load(study).epochs
    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}")
    config = replace(TrainConfig.from_dict(best.user_attrs["train_config"]), epochs=epochs)
    splits = study_splits(study)
    joined = splits.train + splits.val
    torch.manual_seed(config.seed)
    model = build_model(best.user_attrs["model_spec"])
    console.print(
        f"retraining trial {best.number}'s configuration (chosen on validation) on train + validation "
        f"({len(joined):,} images) for {epochs} epochs on {target}; the last epoch is kept"
    )
    result = _train_with_progress(model, joined, config, target, None)
    final = evaluate(result.model, splits.test, target)
    console.print(f"{accuracy('test', final, len(splits.test))} of the last epoch's weights (trained on train + validation, chose nothing)")
    if save:
        metrics = {"test_accuracy": final}
        extra = {
            "study": name,
            "trial": best.number,
            "train_config": config.to_dict(),
            "retrained_on": "train + validation, last epoch kept",
        }
        digest = save_checkpoint(save, result.model, best.user_attrs["model_spec"], metrics, extra)
        console.print(f"saved checkpoint {save} (sha256 {digest}): exactly the weights scored above")
    return final


def _train_with_progress(
    model: torch.nn.Module, train_split: data.Split, config: TrainConfig, device: torch.device, val: data.Split | None
):
    with progress() as bar:
        epochs = bar.add_task("epochs", total=config.epochs)
        batches = bar.add_task("batches", total=None)

        def on_step(done: int, total: int) -> None:
            bar.update(batches, completed=done, total=total)

        def on_epoch(report: EpochReport) -> None:
            bar.update(epochs, completed=report.epoch)
            score = accuracy("validation", report.val_accuracy) if report.val_accuracy is not None else "no validation split"
            console.print(
                f"epoch {report.epoch}/{config.epochs}  train loss {report.train_loss:.4f}  {score}  "
                f"{report.seconds:.1f} s  {report.images_per_s:,.0f} images/s"
            )

        return train(model, train_split, config, device, val=val, on_epoch=on_epoch, on_step=on_step)
