"""The objective: build the trial's network, train it, report every epoch, keep its checkpoint."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import optuna
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback

from mnist_hpo import storage
from mnist_hpo.checkpoints import checkpoint_bytes, library_versions
from mnist_hpo.dashboards import publish_trial
from mnist_hpo.data import Splits
from mnist_hpo.errors import TrainingDiverged
from mnist_hpo.models import build_model, count_parameters, mult_adds
from mnist_hpo.search.settings import StudySettings
from mnist_hpo.search.space import Space
from mnist_hpo.trainer import EpochReport, TrainConfig, train

MODEL_ARTIFACT = "model.pt"  # the trial's best evaluated weights: what export, best and ensemble read


def resume_key(study_name: str, trial_number: int) -> str:
    """Where a trial's full training state lives in the artifact store while it may be retried."""
    return f"resume-{study_name}-{trial_number}.pt"


@dataclass
class Objective:
    settings: StudySettings
    splits: Splits
    device: torch.device
    artifacts: Any  # an Optuna artifact store
    seed: int = 0
    on_epoch: Callable[[optuna.Trial, EpochReport], None] | None = None

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        space = Space.from_dict(self.settings.space)
        family, sampled = space.sample(trial)
        spec = {"name": "family", "config": family.to_dict()}
        config = replace(TrainConfig(epochs=self.settings.epochs, seed=self.seed + trial.number), **sampled)
        torch.manual_seed(config.seed)
        model = build_model(spec)
        parameters = count_parameters(model)
        trial.set_user_attr("model_spec", spec)
        trial.set_user_attr("parameters", parameters)
        trial.set_user_attr("mult_adds", mult_adds(model))
        trial.set_user_attr("device", str(self.device) + (f" ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda" else ""))
        trial.set_user_attr("seed", config.seed)
        trial.set_user_attr("train_config", config.to_dict())
        trial.set_user_attr("versions", library_versions())
        if self.settings.max_params and parameters > self.settings.max_params:
            trial.set_user_attr("stopped", f"over the parameter budget ({parameters:,} > {self.settings.max_params:,}); not trained")
            trial.set_user_attr("epochs_run", 0)
            raise optuna.TrialPruned(f"{parameters:,} parameters exceed --max-params {self.settings.max_params:,}")

        resume = self._resume_state(trial)
        started = time.perf_counter()
        curve: list[dict[str, float]] = []

        def on_epoch(report: EpochReport) -> None:
            curve.append({"epoch": report.epoch, "train_loss": report.train_loss, "val_accuracy": report.val_accuracy})
            trial.set_user_attr("epochs_run", report.epoch)
            trial.set_user_attr("learning_curve", curve)
            trial.set_user_attr("images_per_s", round(report.images_per_s, 1))
            if self.on_epoch:
                self.on_epoch(trial, report)
            if self.settings.multi_objective:
                # Optuna cannot prune multi-objective studies (optuna#3450): a threshold stops hopeless trials.
                if report.val_accuracy < self.settings.min_accuracy:
                    trial.set_user_attr("stopped", f"validation accuracy {report.val_accuracy:.4f} < {self.settings.min_accuracy} after epoch {report.epoch}")
                    raise optuna.TrialPruned()
                return
            trial.report(report.val_accuracy, report.epoch)
            # After the last epoch there is nothing left to save: pruning then would only throw the
            # finished result away (Hyperband and successive halving place a rung there when the
            # epoch count is a power of the reduction factor, e.g. 3, 9 or 27).
            if report.epoch < config.epochs and trial.should_prune():
                trial.set_user_attr("stopped", f"pruned after epoch {report.epoch}")
                raise optuna.TrialPruned()

        def on_improve(state: dict[str, Any]) -> None:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            self.artifacts.write(resume_key(trial.study.study_name, trial.number), io.BytesIO(buffer.getvalue()))

        try:
            result = train(model, self.splits.train, self.splits.val, config, self.device, on_epoch=on_epoch, on_improve=on_improve, resume=resume)
        except (TrainingDiverged, optuna.TrialPruned) as exc:
            publish_trial(trial, self.artifacts, curve, stopped=str(exc) or None)  # learning curves + note
            # Finished for good (pruned or diverged): its resume state is no longer needed. A trial
            # that dies or is interrupted keeps it, so that a retry can continue from it.
            self._forget_resume_state(trial)
            if isinstance(exc, TrainingDiverged):
                trial.set_user_attr("stopped", str(exc))
                raise optuna.TrialPruned(str(exc)) from None
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))

        metrics = {"val_accuracy": result.best_val_accuracy}
        trial.set_user_attr("best_epoch", result.best_epoch)
        storage.upload_bytes(trial, self.artifacts, MODEL_ARTIFACT, checkpoint_bytes(result.model, spec, metrics, {"train_config": config.to_dict()}))
        publish_trial(trial, self.artifacts, curve, result, self.splits.val, self.device)  # pictures + note for the dashboard
        self._forget_resume_state(trial)
        if self.settings.multi_objective:
            return result.best_val_accuracy, float(parameters)
        return result.best_val_accuracy

    def _forget_resume_state(self, trial: optuna.Trial) -> None:
        try:
            self.artifacts.remove(resume_key(trial.study.study_name, trial.number))
        except Exception:  # never written: the trial did not improve even once
            pass

    def _resume_state(self, trial: optuna.Trial) -> dict[str, Any] | None:
        """A retried trial continues from the last checkpoint of the trial it replaces."""
        frozen = trial.study._storage.get_trial(trial._trial_id)  # Trial has no public system_attrs in Optuna 5
        history = RetryHeartbeatStaleTrialCallback.retry_history(frozen)
        if not history:
            return None
        try:
            with self.artifacts.open_reader(resume_key(trial.study.study_name, history[-1])) as reader:
                state = torch.load(io.BytesIO(reader.read()), map_location=self.device, weights_only=True)
        except Exception:  # no checkpoint yet (it died in epoch 1): start over
            return None
        trial.set_user_attr("resumed_from", {"trial": history[-1], "epoch": state["epoch"]})
        return state
