"""The one place the peers benchmark reaches into mnist-hpo: everything else sees an ``Ours``.

``our_objective`` builds the objective every system drives: the task's settings (profile, space
file, parameter budget, objectives), its data and splits, and ``mnist_hpo.tuning.Objective``, the
trial function `mnist-hpo search` runs. When the public ``mnist_hpo.Objective(profile=...,
space=...)`` lands, this function is what changes (it has no ``data=`` and no per-epoch hook yet:
the fixture data and the Ray / Syne Tune reports need both). ``run_engine`` is system (1) itself,
mnist-hpo's own trial engine as `mnist-hpo search` runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.peers._tasks import ROOT, Task

Judge = Callable[[Any, Any, int, bool], "str | None"]  # (optuna trial, epoch report, parameters, last epoch) -> why stop


def prepare_process() -> None:
    """As `mnist-hpo`'s command line does before torch loads: OpenMP threads wait asleep (README, "CPU threads")."""
    from mnist_hpo.trainer import wait_passively

    wait_passively()


def usable_cores() -> int:
    """The cores this process may use (CPU affinity, cgroup quota): every system trains one trial at a time on them."""
    from mnist_hpo.trainer import usable_cores as cores

    return cores()


def sample_space(space: dict[str, Any], trial: Any) -> None:
    """The space's own define-by-run sampling (conditionals included) on any optuna.Trial; picklable with its plain-data space."""
    from mnist_hpo.tuning import Space

    Space.from_dict(space).sample(trial)


@dataclass
class Ours:
    """What a system needs from mnist-hpo: the objective, the space to sample, and scoring of kept weights."""

    objective: Any  # called with an optuna.Trial: trains, judges every epoch, returns accuracy (and parameters)
    settings: Any
    splits: Any
    device: Any

    @property
    def epochs(self) -> int:
        return self.settings.epochs

    @property
    def directions(self) -> list[str]:
        return self.settings.directions

    @property
    def val_images(self) -> int:
        return len(self.splits.val)

    @property
    def test_images(self) -> int:
        return len(self.splits.test)

    def sample(self, trial: Any) -> None:
        sample_space(self.settings.space, trial)

    def save_weights(self, trial: Any, end: Any, path: Path) -> None:
        """A finished trial's kept weights (its best validation epoch), for its test accuracy later."""
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"spec": trial.user_attrs["model_spec"], "state": end.result.model.state_dict()}, path)

    def test_accuracy(self, path: Path) -> float:
        """Kept weights scored on the test split: reported only, never chosen on."""
        import torch

        from mnist_hpo.models import build_model
        from mnist_hpo.trainer import evaluate

        kept = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(kept["spec"])
        model.load_state_dict(kept["state"])
        return evaluate(model.to(self.device).eval(), self.splits.test, self.device)

    def largest_parameters(self) -> int:
        """The hypervolume's reference: the most parameters any network of the space can have."""
        from benchmarks.pareto_efficiency import largest_parameter_count
        from mnist_hpo.tuning import Space

        return largest_parameter_count(Space.from_dict(self.settings.space))


def our_objective(
    task: Task,
    *,
    data: str,
    seed: int,
    folder: Path,
    threads: int,
    judge: Judge | None = None,
    epochs: int | None = None,
    epoch_images: int | None = None,
    device: str = "cpu",
) -> Ours:
    """The task's objective on ``data`` ("mnist" or the bundled "fixture"), trial seeds from ``seed``, artifacts in ``folder``.

    ``judge`` stops a trial after an epoch (default: the study's Optuna pruner for one objective, none for two).
    """
    from mnist_hpo.data import load_splits
    from mnist_hpo.storage import open_artifacts
    from mnist_hpo.trainer import resolve_device, use_threads
    from mnist_hpo.tuning import Objective, SearchRequest, get_profile, new_settings

    use_threads(threads)
    space = ROOT / task.space_file if task.space_file else None
    request = SearchRequest(
        profile=task.profile, space_file=space, max_params=task.max_params, objectives=task.objectives, epochs=epochs, seed=seed
    )
    settings = new_settings(request, get_profile(task.profile, False))
    settings = replace(settings, data=data, epoch_images=epoch_images or settings.epoch_images)
    splits = load_splits(data, subset=settings.train_subset, log=lambda message: None)
    settings.data_digest = splits.digest
    if judge is None and settings.multi_objective:
        judge = _never
    target = resolve_device(device)
    objective = Objective(settings, splits, target, open_artifacts(folder / "artifacts"), seed=seed, judge=judge)
    return Ours(objective, settings, splits, target)


def _never(trial: Any, report: Any, parameters: int, last: bool) -> None:
    return None


def run_engine(ours: Ours, folder: Path, *, seed: int, budget: float, threads: int, on_finish: Callable) -> tuple[Any, float]:
    """System (1): a new study run by mnist-hpo's trial engine as `mnist-hpo search --timeout BUDGET --seed SEED` runs it.

    The study's settings (sampler tpe, pruner hyperband or mo-asha, the published baseline as trial 0) are
    new_settings' defaults. Its trial budget (queued before the clock starts) is one trial per 3 s of the time
    budget, at least the profile's 40: the time budget binds, as for every system.
    The dashboard publisher runs after every trial, as in `search`. Returns the study and the clock's start
    (time.monotonic).
    """
    import optuna

    from mnist_hpo.commands.search import publisher
    from mnist_hpo.deadline import Deadline
    from mnist_hpo.tuning import Faults, WorkerSpec, ensure_budget_study, open_for_workers, work

    url, name = f"sqlite:///{folder}/mnist-hpo.db", "peers"
    faults = Faults().validated()
    storage = open_for_workers(url, faults, must_exist=False)
    n_trials = max(40, int(budget // 3))
    ensure_budget_study(storage, name, ours.settings, budget=lambda stored, view: n_trials, data_source=ours.splits.describe())
    publish = publisher()

    def finished(trial: optuna.Trial, end: Any) -> None:
        publish(trial, end)
        on_finish(trial, end)

    started = time.monotonic()
    spec = WorkerSpec(
        faults,
        device=str(ours.device),
        artifacts=folder / "artifacts",
        seed=seed,
        deadline=Deadline.after(budget, start=started),
        threads=threads,
    )
    work(url, name, spec, splits=ours.splits, on_finish=finished)
    return optuna.load_study(study_name=name, storage=url), started
