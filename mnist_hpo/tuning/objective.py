"""The objective: build the trial's network, train it, judge it every epoch, keep its checkpoint.

It knows the trainer and the models, and Optuna's trial; the dashboard's pictures and notes come
from the ``on_finish`` hook the command wires in, so this layer never imports ``dashboards``.
A retried trial continues from the last training state of the trial it replaces; if that state is
missing or unreadable it starts over and says so. In a population-based training study a trial is one
segment of a member (``_population.take_segment``): it starts from the training state its place names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
import torch

from mnist_hpo import storage as stores
from mnist_hpo.checkpoints import checkpoint_bytes
from mnist_hpo.data import Split, Splits
from mnist_hpo.errors import TrainingDiverged
from mnist_hpo.models import build_model, count_parameters, mult_adds
from mnist_hpo.trainer import EpochReport, TrainConfig, TrainResult, train
from mnist_hpo.tuning._population import load_end_state, segment_done, take_segment
from mnist_hpo.tuning._retries import forget_resume_states, load_resume_state, save_resume_state
from mnist_hpo.tuning.attrs import (
    BEST_EPOCH_ATTR,
    DEVICE_ATTR,
    EPOCHS_RUN_ATTR,
    IMAGES_PER_S_ATTR,
    LEARNING_CURVE_ATTR,
    MODEL_SPEC_ATTR,
    MULT_ADDS_ATTR,
    PARAMETERS_ATTR,
    SECONDS_ATTR,
    SEED_ATTR,
    TRAIN_CONFIG_ATTR,
    TRIAL_STOPPED_ATTR,
    VERSIONS_ATTR,
)
from mnist_hpo.tuning.pbt import Segment
from mnist_hpo.tuning.settings import StudySettings
from mnist_hpo.tuning.space import Space
from mnist_hpo.versions import library_versions

MODEL_ARTIFACT = "model.pt"  # the trial's kept weights (best validation epoch): what export, best and ensemble read


@dataclass
class TrialEnd:
    """What a finished trial leaves for whoever shows it (the dashboard publisher)."""

    curve: list[dict[str, float]]
    result: TrainResult | None  # None when the trial was pruned or diverged
    val: Split
    stopped: str | None  # why it ended early, if it did
    epochs: int  # the study's maximum
    artifacts: Any  # the artifact store the trial writes to


EpochJudge = Callable[[optuna.Trial, EpochReport, int, bool], str | None]  # (trial, epoch, parameters, last) -> why stop


@dataclass
class Objective:
    settings: StudySettings
    splits: Splits
    device: torch.device
    artifacts: Any  # an Optuna artifact store
    seed: int = 0
    on_epoch: Callable[[optuna.Trial, EpochReport], None] | None = None  # progress display
    on_step: Callable[[optuna.Trial, int, int], None] | None = None  # progress inside an epoch: (trial, batches done, of)
    on_finish: Callable[[optuna.Trial, TrialEnd], None] | None = None  # pictures and notes
    judge: EpochJudge | None = None  # stops a trial after an epoch; default: the study's pruner
    on_wait: Callable[[], None] | None = None  # while a PBT segment waits for a member: re-queue dead workers' trials, keep the deadline
    _space: Space = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._space = Space.from_dict(self.settings.space)
        if self.judge is None:
            from mnist_hpo.tuning.pruners import judge_for

            self.judge = judge_for(self.settings)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        segment = None
        if self.settings.pbt:  # population-based training: this trial trains one segment of a member
            trial, segment = take_segment(trial, self.settings, self.artifacts, self.on_wait)
        family, sampled = self._space.sample(trial)
        spec = {"name": "family", "config": family.to_dict()}
        # a member keeps its batch order whichever worker trains it
        seed = self.seed + trial.number if segment is None else (self.settings.seed or 0) + segment.member
        config = replace(TrainConfig(epochs=self.settings.epochs, epoch_images=self.settings.epoch_images, seed=seed), **sampled)
        torch.manual_seed(config.seed)
        model = build_model(spec)
        parameters = count_parameters(model)
        stores.ride_out(self._describe, trial, spec, model, parameters, config)
        if self.settings.max_params and parameters > self.settings.max_params:
            trial.set_user_attr(
                TRIAL_STOPPED_ATTR, f"over the parameter budget ({parameters:,} > {self.settings.max_params:,}); not trained"
            )
            trial.set_user_attr(EPOCHS_RUN_ATTR, 0)
            raise optuna.TrialPruned(f"{parameters:,} parameters exceed --max-params {self.settings.max_params:,}")

        resume = self._resume(trial, segment)
        started = time.perf_counter()
        curve: list[dict[str, float]] = []
        on_epoch = self._epoch_hook(trial, curve, parameters, config.epochs)

        def on_checkpoint(state: dict[str, Any]) -> None:
            save_resume_state(self.artifacts, trial, state)

        try:
            result = train(
                model,
                self.splits.train,
                config,
                self.device,
                val=self.splits.val,
                on_epoch=on_epoch,
                on_step=(lambda done, total: self.on_step(trial, done, total)) if self.on_step else None,
                on_checkpoint=on_checkpoint,
                resume=resume,
                until=segment.last_epoch if segment else None,
            )
        except (TrainingDiverged, optuna.TrialPruned) as exc:
            stopped = str(exc) or "pruned"
            self._finish(trial, TrialEnd(curve, None, self.splits.val, stopped, self.settings.epochs, self.artifacts))
            if isinstance(exc, TrainingDiverged):
                trial.set_user_attr(TRIAL_STOPPED_ATTR, stopped)
                raise optuna.TrialPruned(stopped) from None
            raise
        finally:
            trial.set_user_attr(SECONDS_ATTR, round(time.perf_counter() - started, 2))

        metrics = {"val_accuracy": result.val_accuracy}
        data = checkpoint_bytes(result.model, spec, metrics, {"train_config": config.to_dict()})
        stores.ride_out(self._keep, trial, result.kept_epoch, data)
        if segment is not None:
            stores.ride_out(segment_done, trial, self.settings, segment, result.last_state, self.artifacts)
        self._finish(trial, TrialEnd(curve, result, self.splits.val, None, self.settings.epochs, self.artifacts))
        if self.settings.multi_objective:
            return result.val_accuracy, float(parameters)
        return result.val_accuracy

    def _resume(self, trial: optuna.Trial, segment: Segment | None) -> dict[str, Any] | None:
        """What to go on from: a retry's own checkpoint, else the state its PBT place starts from; None: a new network."""
        resume = load_resume_state(self.artifacts, trial, self.device)
        if resume is None and segment is not None and segment.source is not None:
            return load_end_state(self.artifacts, trial.study.study_name, segment.source, self.device)
        return resume

    def _epoch_hook(
        self, trial: optuna.Trial, curve: list[dict[str, float]], parameters: int, epochs: int
    ) -> Callable[[EpochReport], None]:
        """What happens after every epoch: the curve grows, progress shows, the epoch is recorded and judged."""

        def record(report: EpochReport) -> str | None:
            """One epoch into the storage (repeatable: a lost connection runs it again) and the judge's verdict."""
            trial.set_user_attr(EPOCHS_RUN_ATTR, report.epoch)
            trial.set_user_attr(LEARNING_CURVE_ATTR, curve)
            trial.set_user_attr(IMAGES_PER_S_ATTR, round(report.images_per_s, 1))
            # The judge never stops a trial after its last epoch: there is nothing left to save, and
            # pruning then would only throw the finished result away (successive halving puts rungs at epochs 1, 3, 9, 27).
            stopped = self.judge(trial, report, parameters, report.epoch >= epochs)
            if stopped:
                trial.set_user_attr(TRIAL_STOPPED_ATTR, stopped)
            return stopped

        def on_epoch(report: EpochReport) -> None:
            curve.append({"epoch": report.epoch, "train_loss": report.train_loss, "val_accuracy": report.val_accuracy})
            if self.on_epoch:
                self.on_epoch(trial, report)
            stopped = stores.ride_out(record, report)
            if stopped:
                raise optuna.TrialPruned(stopped)

        return on_epoch

    def _describe(self, trial: optuna.Trial, spec: dict, model: torch.nn.Module, parameters: int, config: TrainConfig) -> None:
        device = str(self.device) + (f" ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda" else "")
        for key, value in {
            MODEL_SPEC_ATTR: spec,
            PARAMETERS_ATTR: parameters,
            MULT_ADDS_ATTR: mult_adds(model),
            DEVICE_ATTR: device,
            SEED_ATTR: config.seed,
            TRAIN_CONFIG_ATTR: config.to_dict(),
            VERSIONS_ATTR: library_versions(),
        }.items():
            trial.set_user_attr(key, value)

    def _keep(self, trial: optuna.Trial, kept_epoch: int, checkpoint: bytes) -> None:
        trial.set_user_attr(BEST_EPOCH_ATTR, kept_epoch)
        stores.upload_bytes(trial, self.artifacts, MODEL_ARTIFACT, checkpoint)

    def _finish(self, trial: optuna.Trial, end: TrialEnd) -> None:
        """The trial is over for good: show it, and drop its resume states (and its retried trials')."""
        if self.on_finish:
            self.on_finish(trial, end)
        forget_resume_states(self.artifacts, trial)
