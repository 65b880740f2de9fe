"""`mnist-hpo train`: one network by name, or a study's best configuration retrained honestly."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from mnist_hpo import data
from mnist_hpo.checkpoints import save_checkpoint
from mnist_hpo.console import accuracy, console, plural, progress
from mnist_hpo.errors import UserError
from mnist_hpo.models import build_model, count_parameters
from mnist_hpo.trainer import EpochReport, TrainConfig, evaluate, recipe_for, resolve_device, train, use_threads, with_overrides


@dataclass
class Trained:
    """A trained network and how it got there: every epoch's report, the weights kept and their accuracies.

    ``model`` is in eval mode. ``val_accuracy`` is None when the training held no validation split
    out (a retrained study's best: train + validation, last epoch kept); ``test_accuracy`` is None
    when the data has no test split. The test accuracy is reported only: nothing is chosen on it.
    """

    model: torch.nn.Module
    history: list[EpochReport]
    kept_epoch: int
    val_accuracy: float | None
    test_accuracy: float | None
    config: TrainConfig
    checkpoint: Path | None = None
    record: dict = field(default_factory=dict)  # what the checkpoint's metadata says about the data and the changes


def train_command(
    model: str | None,
    recipe: str | None,
    overrides: dict,
    source: str | None,
    device: str,
    subset: int | None,
    save: Path | None,
    *,
    from_study: str | None = None,
    storage: str | None = None,
    threads: int | None = None,
) -> Trained:
    """`mnist-hpo train`: every option either applies (and is recorded in the checkpoint) or is refused in one line."""
    use_threads(threads)  # --threads, else $OMP_NUM_THREADS, else the cores this process may use (affinity, CPU quota)
    if from_study:
        for option, value in (("model", model), ("recipe", recipe)):
            if value is not None:
                raise UserError(f"--{option} cannot be used with --from-study: the study's best trial defines it; drop --{option}")
        return train_from_study(storage, from_study, overrides, source, subset, device, save)
    if storage is not None:
        raise UserError("--storage only applies with --from-study (the study to retrain); drop it, or add --from-study NAME")
    return train_model(model or "m3", recipe, overrides, source or "mnist", device, subset, save)


def train_model(
    model_name: str, recipe_name: str | None, overrides: dict, source: str, device: str, subset: int | None, save: Path | None
) -> Trained:
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
        f"training {model_name} ({count_parameters(model):,} parameters) on {_where(target)} for {plural(config.epochs, 'epoch')}: "
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
    record = {"train_config": config.to_dict(), "recipe": recipe.name, "data": _data_record(splits)}
    if save:
        digest = save_checkpoint(save, result.model, {"name": model_name}, metrics, record)
        console.print(f"saved checkpoint {save} (sha256 {digest})")
    return Trained(result.model, result.history, result.kept_epoch, result.val_accuracy, metrics.get("test_accuracy"), config, save, record)


def train_from_study(
    url: str | None, name: str, overrides: dict, source: str | None, subset: int | None, device: str, save: Path | None
) -> Trained:
    """Retrain the best configuration (chosen on validation) on train + validation and keep its last epoch.

    Nothing is chosen here: no split is held out, so the last epoch is the model, and its test
    accuracy, printed and stored in the checkpoint, is that of exactly the saved weights. Every
    option given (``overrides``: training settings; ``source``/``subset``: the data) is applied,
    printed and recorded in the checkpoint, so a smoke study's best can be retrained on full MNIST.
    """
    from mnist_hpo.commands.status import completed_by_validation, open_study
    from mnist_hpo.tuning.attrs import MODEL_SPEC_ATTR, TRAIN_CONFIG_ATTR
    from mnist_hpo.tuning.settings import StudySettings

    target = resolve_device(device)
    study, _ = open_study(url, name)
    best = completed_by_validation(study)[0]
    if TRAIN_CONFIG_ATTR not in best.user_attrs or MODEL_SPEC_ATTR not in best.user_attrs:
        raise UserError(f"trial {best.number} has no recorded training configuration; it was made by an older mnist-hpo")
    settings = StudySettings.load(study)
    changed = {key: value for key, value in overrides.items() if value is not None}
    if settings.pbt:
        return replay_member(study, settings, best, changed, source, subset, target, save)
    config = replace(TrainConfig.from_dict(best.user_attrs[TRAIN_CONFIG_ATTR]), **{"epochs": settings.epochs, **changed})
    config.validate()
    if source is None:  # the study's own data, unless the user names other data (then all of it unless --subset)
        source, subset = settings.data, subset if subset is not None else settings.train_subset
    splits = data.load_splits(source, subset=subset, log=console.print)
    joined = splits.train + splits.val
    torch.manual_seed(config.seed)
    model = build_model(best.user_attrs[MODEL_SPEC_ATTR])
    console.print(
        f"retraining trial {best.number}'s configuration (chosen on validation) on train + validation "
        f"({len(joined):,} images from {splits.source}) for {plural(config.epochs, 'epoch')} on {_where(target)}; the last epoch is kept"
        + (f"; changed from the trial: {', '.join(f'{key} {value}' for key, value in changed.items())}" if changed else "")
    )
    result = _train_with_progress(model, joined, config, target, None)
    record = {
        "study": name,
        "trial": best.number,
        "train_config": config.to_dict(),
        "changed_from_trial": changed,
        "data": _data_record(splits, joined=True),
        "retrained_on": "train + validation, last epoch kept",
    }
    metrics = _score_and_save(result.model, splits, target, best.user_attrs[MODEL_SPEC_ATTR], record, save)
    return Trained(result.model, result.history, result.kept_epoch, None, metrics.get("test_accuracy"), config, save, record)


def _score_and_save(model: torch.nn.Module, splits: data.Splits, target: torch.device, spec: dict, record: dict, save: Path | None) -> dict:
    """Retrained weights (they chose nothing) scored on the test split, reported only, and saved as they are; the metrics."""
    metrics = {}
    if len(splits.test):
        metrics["test_accuracy"] = evaluate(model, splits.test, target)
        console.print(
            f"{accuracy('test', metrics['test_accuracy'], len(splits.test))} of the last epoch's weights "
            "(trained on train + validation, chose nothing)"
        )
    else:
        console.print(f"{splits.source} has no test split: the retrained weights are not scored")
    if save:
        digest = save_checkpoint(save, model, spec, metrics, record)
        console.print(f"saved checkpoint {save} (sha256 {digest}): exactly the weights trained above")
    return metrics


def _where(target: torch.device) -> str:
    """``cpu (2 threads)``: on the CPU the thread count sets the speed as much as the device does."""
    return f"{target} ({plural(torch.get_num_threads(), 'thread')})" if target.type == "cpu" else str(target)


def _data_record(splits: data.Splits, joined: bool = False) -> dict:
    """What the checkpoint was trained on: where the images came from and how many of each split."""
    held_out = 0 if joined else len(splits.val)
    return {
        "source": splits.source,
        "train_images": len(splits.train) + len(splits.val) - held_out,
        "validation_images": held_out,
        "test_images": len(splits.test),
    }


def _train_with_progress(
    model: torch.nn.Module,
    train_split: data.Split,
    config: TrainConfig,
    device: torch.device,
    val: data.Split | None,
    resume: dict | None = None,
    until: int | None = None,
):
    with progress() as bar:
        epochs = bar.add_task("training", total=config.epochs, unit="epochs")
        batches = bar.add_task(f"epoch 1/{config.epochs}", total=None, unit="batches")

        def on_step(done: int, total: int) -> None:
            bar.update(batches, completed=done, total=total)

        def on_epoch(report: EpochReport) -> None:
            bar.update(epochs, completed=report.epoch)
            bar.update(batches, completed=0, description=f"epoch {report.epoch + 1}/{config.epochs}")
            score = accuracy("validation", report.val_accuracy) if report.val_accuracy is not None else "no validation split"
            console.print(
                f"epoch {report.epoch}/{config.epochs}  train loss {report.train_loss:.4f}  {score}  "
                f"{report.seconds:.1f} s  {report.images_per_s:,.0f} images/s"
            )

        return train(model, train_split, config, device, val=val, on_epoch=on_epoch, on_step=on_step, resume=resume, until=until)


def replay_member(
    study, settings, best, changed: dict, source: str | None, subset: int | None, target: torch.device, save: Path | None
) -> Trained:
    """A PBT study's best member retrained on train + validation with its schedule, epoch by epoch.

    The segments that made the best trial's weights (``pbt.lineage``: across every copy) are trained
    in order, each with its own parameters, from the state the one before left; the network keeps its
    shape throughout. The last epoch is kept, and nothing is chosen.
    """
    from optuna.trial import FixedTrial

    from mnist_hpo.tuning.attrs import MODEL_SPEC_ATTR, TRAIN_CONFIG_ATTR
    from mnist_hpo.tuning.copies import own_trials
    from mnist_hpo.tuning.pbt import MUTABLE, Segment, lineage
    from mnist_hpo.tuning.space import Space

    defined = sorted(key for key in changed if key in (*MUTABLE, "epochs"))
    if defined:
        raise UserError(f"--{defined[0].replace('_', '-')} cannot be used with a population-based study: its schedule sets it; drop it")
    segments = [(t, Segment.of(t)) for t in lineage(own_trials(study), best.number)]
    if source is None:
        source, subset = settings.data, subset if subset is not None else settings.train_subset
    splits = data.load_splits(source, subset=subset, log=console.print)
    joined = splits.train + splits.val
    space = Space.from_dict(settings.space)
    console.print(
        f"replaying trial {best.number}'s schedule (chosen on validation) on train + validation ({len(joined):,} images from "
        f"{splits.source}), {plural(len(segments), 'segment')} to epoch {segments[-1][1].last_epoch} on {_where(target)}; "
        "the last epoch is kept"
    )
    state, history, schedule = None, [], []
    for trial, segment in segments:
        family, sampled = space.sample(FixedTrial(trial.params))
        config = replace(TrainConfig.from_dict(best.user_attrs[TRAIN_CONFIG_ATTR]), **sampled, epochs=settings.epochs, **changed)
        torch.manual_seed(config.seed)
        model = build_model({"name": "family", "config": family.to_dict()})
        copied = f", copied member {segment.donor}" if segment.donor is not None else ""
        shown = ", ".join(f"{k} {v:.3g}" for k, v in trial.params.items() if k in MUTABLE)
        console.print(f"epochs {segment.first_epoch}-{segment.last_epoch} (trial {trial.number}{copied}): {shown}")
        result = _train_with_progress(model, joined, config, target, None, resume=state, until=segment.last_epoch)
        state, history = result.last_state, history + result.history
        schedule += [{"epoch": r.epoch, "trial": trial.number, "lr_used": r.lr, **trial.params} for r in result.history]
    record = {
        "study": study.study_name,
        "trial": best.number,
        "train_config": config.to_dict(),
        "changed_from_trial": changed,
        "schedule": schedule,
        "data": _data_record(splits, joined=True),
        "retrained_on": "train + validation, the member's schedule replayed, last epoch kept",
    }
    metrics = _score_and_save(result.model, splits, target, best.user_attrs[MODEL_SPEC_ATTR], record, save)
    return Trained(result.model, history, result.kept_epoch, None, metrics.get("test_accuracy"), config, save, record)
