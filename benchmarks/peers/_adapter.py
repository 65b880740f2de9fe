"""The one place the peers benchmark reaches into mnist-hpo: everything else sees an ``Ours``.

``our_objective`` builds the objective every system drives: the task's settings (profile, space
file, parameter budget, objectives), its data and splits, and ``mnist_hpo.tuning.Objective``, the
trial function `mnist-hpo search` runs. When the public ``mnist_hpo.Objective(profile=...,
space=...)`` lands, this function is what changes (it has no ``data=`` and no per-epoch hook yet:
the fixture data and the Ray / Syne Tune reports need both). ``run_engine`` is system (1) itself,
mnist-hpo's own trial engine as `mnist-hpo search` runs it (`search --pbt` for a population-based study).

``Ours.train_segment`` is what Ray Tune's PopulationBasedTraining trains: the objective's own network
and training (``Space.sample``, ``TrainConfig``, ``build_model``, ``trainer.train``) from a training state
to an epoch, returning the state to go on from. The objective has no such entry (its segments come
from `search --pbt`'s own placement in the storage), so this mirrors its first lines; what it leaves
out are the objective's records (user attributes, checkpoint artifacts), which the peers keep in their
event log instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.peers._tasks import ROOT, Task

Judge = Callable[[Any, Any, int, bool], "str | None"]  # (optuna trial, epoch report, parameters, last epoch) -> why stop


class NotTrained(Exception):
    """A segment that did not train to its end: over the parameter budget (never trained) or diverged."""

    def __init__(self, why: str, parameters: int) -> None:
        super().__init__(why)
        self.parameters = parameters


@dataclass
class Trained:
    """A trained segment: its network, kept weights (best validation epoch of the segment) and the state to go on from."""

    spec: dict[str, Any]
    parameters: int
    model: Any
    val_accuracy: float
    last_state: dict[str, Any]


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

    @property
    def pbt(self) -> dict[str, int] | None:
        """A population-based study's population, interval (epochs) and trial budget (segments); None for others."""
        if not self.settings.pbt:
            return None
        from mnist_hpo.tuning.pbt import Pbt

        pbt = Pbt.from_dict(self.settings.pbt)
        return {"population": pbt.population, "interval": pbt.interval, "budget": pbt.budget(self.epochs)}

    @staticmethod
    def mutable() -> tuple[str, ...]:
        """The parameters PBT may change while a member trains (mnist-hpo's ``tuning.pbt.MUTABLE``)."""
        from mnist_hpo.tuning.pbt import MUTABLE

        return MUTABLE

    def shape(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A network spec less what PBT may change (the dropouts): equal shapes load each other's weights."""
        return {k: v for k, v in spec["config"].items() if k not in self.mutable()}

    def sampler(self, seed: int, startup_trials: int | None = None) -> Any:
        """The study's own sampler (the profile's default, as `mnist-hpo search` makes it), for a study driven by plain Optuna;
        ``startup_trials``: TPE's random start-up trials instead of mnist-hpo's own, for the variant that measures them."""
        from mnist_hpo.tuning.samplers import TPE_STARTUP_TRIALS, make_sampler

        startup = startup_trials or TPE_STARTUP_TRIALS
        return make_sampler(self.settings.sampler, seed, self.settings.multi_objective, startup_trials=startup)

    def pruner(self) -> Any:
        """The study's own pruner for one objective (the profile's default, scaled to its epochs)."""
        from mnist_hpo.tuning.pruners import make_pruner

        return make_pruner(self.settings.pruner, self.settings.epochs)

    def sample(self, trial: Any) -> None:
        sample_space(self.settings.space, trial)

    def save_weights(self, trial: Any, end: Any, path: Path) -> None:
        """A finished trial's kept weights (its best validation epoch), for its test accuracy later."""
        self.keep_weights(trial.user_attrs["model_spec"], end.result.model, path)

    def keep_weights(self, spec: dict[str, Any], model: Any, path: Path) -> None:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"spec": spec, "state": model.state_dict()}, path)

    def train_segment(
        self,
        params: dict[str, Any],
        *,
        seed: int,
        resume: dict[str, Any] | None,
        until: int,
        on_epoch: Callable[[Any], None],
    ) -> Trained:
        """Train ``params``' network from ``resume`` (a training state; None: a new network) to epoch ``until``.

        As the objective trains a trial: the space's own sampling of ``params`` (conditionals included),
        the network seeded by ``seed`` before it is built, ``--max-params`` checked before training, the
        validation split choosing the kept epoch. A state whose ``lr`` or ``weight_decay`` differs from
        ``params``' goes on with ``params``' (the rest of its schedule rescaled); the dropouts and the
        augmentation are the new network's and loader's. Raises NotTrained (over the parameter budget, or diverged).
        """
        import optuna
        import torch

        from mnist_hpo.errors import TrainingDiverged
        from mnist_hpo.models import build_model, count_parameters
        from mnist_hpo.trainer import TrainConfig, train
        from mnist_hpo.tuning import Space

        family, sampled = Space.from_dict(self.settings.space).sample(optuna.trial.FixedTrial(params))
        spec = {"name": "family", "config": family.to_dict()}
        config = replace(TrainConfig(epochs=self.epochs, epoch_images=self.settings.epoch_images, seed=seed), **sampled)
        torch.manual_seed(config.seed)
        model = build_model(spec)
        parameters = count_parameters(model)
        if self.settings.max_params and parameters > self.settings.max_params:
            raise NotTrained(f"over the parameter budget ({parameters:,} > {self.settings.max_params:,}); not trained", parameters)
        try:
            result = train(
                model, self.splits.train, config, self.device, val=self.splits.val, on_epoch=on_epoch, resume=resume, until=until
            )
        except TrainingDiverged as exc:
            raise NotTrained(str(exc), parameters) from None
        assert result.last_state is not None and result.val_accuracy is not None
        return Trained(spec, parameters, result.model, result.val_accuracy, result.last_state)

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
    pbt: bool = False,
    population: int | None = None,
    exploit_every: int | None = None,
    baseline: bool | None = None,
    pruner: str | None = None,
) -> Ours:
    """The task's objective on ``data`` ("mnist" or the bundled "fixture"), trial seeds from ``seed``, artifacts in ``folder``.

    ``judge`` stops a trial after an epoch (default: the study's Optuna pruner for one objective, none for two).
    ``pbt``: the settings of `search --pbt` (``population`` members, an exploit step every ``exploit_every``
    epochs; default the profile's), pruner none. ``baseline`` and ``pruner``: `search --baseline` and
    `--pruner` (default: the profile's).
    """
    from mnist_hpo.data import load_splits
    from mnist_hpo.storage import open_artifacts
    from mnist_hpo.trainer import resolve_device, use_threads
    from mnist_hpo.tuning import Objective, SearchRequest, get_profile, new_settings

    use_threads(threads)
    space = ROOT / task.space_file if task.space_file else None
    request = SearchRequest(
        profile=task.profile,
        space_file=space,
        max_params=task.max_params,
        objectives=task.objectives,
        epochs=epochs,
        seed=seed,
        pbt=pbt,
        population=population if pbt else None,
        exploit_every=exploit_every if pbt else None,
        baseline=baseline,
        pruner=pruner,
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

    The study's settings (sampler tpe, pruner sha or mo-asha, the published baseline as trial 0 or not) are
    new_settings' defaults. Its trial budget (queued before the clock starts) is one trial per 3 s of the time
    budget, at least the profile's 40: the time budget binds, as for every system. A population-based
    study (``ours`` made with ``pbt=True``: `search --pbt`) has its own, population x generations segments,
    as `search --pbt` sets it; the time budget still binds.
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
    n_trials = ours.pbt["budget"] if ours.pbt else max(40, int(budget // 3))
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
