"""What the peers benchmark runs: its tasks, its systems, and where each run's result file goes."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "peers"


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    profile: str  # the mnist-hpo profile: space, fidelity (epochs, images per epoch) and data
    space_file: str | None  # a TOML file of changes on top of the profile's space, relative to the repository
    max_params: int | None  # networks over this are pruned before training (every system: the objective does it)
    objectives: str  # "accuracy", or "accuracy,params" for a Pareto front
    budget_s: float
    seeds: int  # how many seeds a full run gives it
    target: float | None = None  # time to this validation accuracy is reported
    epochs: int | None = None  # most epochs per trial, when not the profile's
    epoch_images: int | None = None  # training images per epoch, when not the profile's
    exploit_every: int | None = None  # the PBT systems' interval in epochs, when not the profile's

    @property
    def multi_objective(self) -> bool:
        return "," in self.objectives


TASKS: dict[str, Task] = {
    "quick": Task(
        "quick",
        "the quick profile's space and fidelity (12k images per epoch, up to 8 epochs), best validation accuracy",
        profile="quick",
        space_file=None,
        max_params=None,
        objectives="accuracy",
        budget_s=600,
        seeds=5,
        target=0.99,
    ),
    "small": Task(
        "small",
        "networks of at most 9,956 parameters (seed 002's tiny-cnn): the quick profile with benchmarks/tiny-budget.toml, "
        "best validation accuracy",
        profile="quick",
        space_file="benchmarks/tiny-budget.toml",
        max_params=9956,
        objectives="accuracy",
        budget_s=600,
        seeds=3,
    ),
    "pareto": Task(
        "pareto",
        "validation accuracy x parameters on the quick profile's space: hypervolume of the Pareto front",
        profile="quick",
        space_file=None,
        max_params=None,
        objectives="accuracy,params",
        budget_s=600,
        seeds=3,
    ),
    "paper-space": Task(
        "paper-space",
        "the paper profile's space of recipes (optimizer, weight decay, batch, kernel size, EMA, schedule, augmentation, "
        "label smoothing) at the quick profile's widths (benchmarks/paper-space-cpu.toml) and fidelity (12k images per "
        "epoch, up to 8 epochs; PBT every 2 epochs), best validation accuracy",
        profile="paper",
        space_file="benchmarks/paper-space-cpu.toml",
        max_params=None,
        objectives="accuracy",
        budget_s=600,
        seeds=3,
        target=0.99,
        epochs=8,
        epoch_images=12_000,
        exploit_every=2,
    ),
}


@dataclass(frozen=True)
class System:
    name: str
    description: str
    module: str | None  # the package it needs beyond mnist-hpo's own (None: always there)
    single: bool = True  # runs the single-objective tasks
    multi: bool = True  # runs the multi-objective task
    why_not_multi: str = ""

    def runs(self, task: Task) -> bool:
        return self.multi if task.multi_objective else self.single

    def why_not(self, task: Task) -> str:
        return self.why_not_multi if task.multi_objective else "it searches two objectives; it runs the pareto task only"

    def installed(self) -> bool:
        return self.module is None or importlib.util.find_spec(self.module) is not None


RAY_SINGLE = "Ray Tune's ASHAScheduler ranks trials by one metric; a Pareto search has no Ray scheduler to compare"
PBT_SINGLE = "population-based training ranks its members by one number (`search --pbt` refuses two objectives)"
SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System(
            "mnist-hpo",
            "mnist-hpo's defaults: TPE (multivariate, 5 start-up trials) + successive halving (rungs at epochs 1 and 3, "
            "the top third goes on); MO-ASHA for two objectives; trial 0 the published baseline except on the quick profile",
            None,
        ),
        System(
            "mnist-hpo-hyperband",
            "mnist-hpo's defaults with `search --pruner hyperband` (the default until 2026-12-05): 2 in 5 trials fall in a "
            "second bracket, judged first after epoch 3 and only against that bracket; TPE reads every trial either way",
            None,
            multi=False,
            why_not_multi="two objectives are pruned by MO-ASHA (mnist-hpo's own default there)",
        ),
        System(
            "mnist-hpo-rung2",
            "mnist-hpo's sampler (TPE, multivariate, 5 start-up trials) with successive halving's first rung at epoch 2, "
            "not 1 (rungs at epochs 2 and 6, the top third goes on), in a plain optuna.create_study(): a trial of the "
            "small task's networks after one epoch says little about its end",
            None,
            multi=False,
            why_not_multi="two objectives are pruned by MO-ASHA (mnist-hpo's own default there)",
        ),
        System(
            "mnist-hpo-startup10",
            "mnist-hpo's sampler (TPE, multivariate) with 10 random start-up trials, Optuna's default, instead of 5, and its "
            "successive halving, in a plain optuna.create_study(): the start-up that the peers driving Optuna's TPE have",
            None,
            multi=False,
            why_not_multi="two objectives are pruned by MO-ASHA (mnist-hpo's own default there)",
        ),
        System(
            "mnist-hpo-baseline",
            "mnist-hpo's defaults until 2026-12-05, `search --baseline --pruner hyperband` (MO-ASHA for two objectives): "
            "trial 0 the published baseline",
            None,
        ),
        System(
            "optuna-default",
            "optuna.create_study() defaults (TPESampler) + MedianPruner(), trial.report per epoch "
            "(no pruner for two objectives: Optuna cannot prune them)",
            None,
        ),
        System("random", "Optuna's RandomSampler, no pruning: the floor", None),
        System(
            "ray-asha",
            "Ray Tune Tuner, its default search (BasicVariantGenerator: random) + ASHAScheduler(max_t=epochs)",
            "ray.tune",
            multi=False,
            why_not_multi=RAY_SINGLE,
        ),
        System(
            "ray-optuna",
            "Ray Tune Tuner, OptunaSearch (TPE, define-by-run on the same space) + ASHAScheduler(max_t=epochs)",
            "ray.tune",
            multi=False,
            why_not_multi=RAY_SINGLE,
        ),
        System(
            "syne-asha",
            "Syne Tune ASHA (random search, reduction factor 3) on the local backend",
            "syne_tune",
            multi=False,
            why_not_multi="the Pareto task runs Syne Tune's MOASHA (syne-moasha)",
        ),
        System("syne-moasha", "Syne Tune MOASHA (non-dominated sorting, random search) on the local backend", "syne_tune", single=False),
        System(
            "mnist-hpo-pbt",
            "mnist-hpo's engine on a `search --pbt` study: the profile's population and interval (quick: 8 members, every "
            "2 epochs), synchronous generations, the bottom quarter copies a top-quarter member and perturbs lr, dropouts, "
            "weight decay, augmentation (x1.2 / x0.8, resample 0.25, clipped to the space); generation 0 by TPE, trial 0 "
            "the published baseline; budget population x generations segments (a trial here is one segment)",
            None,
            multi=False,
            why_not_multi=PBT_SINGLE,
        ),
        System(
            "ray-pbt",
            "Ray Tune Tuner, PopulationBasedTraining(synch=True, time_attr=training_iteration, perturbation_interval = "
            "mnist-hpo's interval, Ray's default quantile 0.25 / resample 0.25 / factors 1.2, 0.8, the same mutable "
            "parameters and ranges, explored values clipped to the range), num_samples = the population drawn at random "
            "from the whole space, a checkpoint of the training state at every perturbation point (a trial here is one segment)",
            "ray.tune",
            multi=False,
            why_not_multi=PBT_SINGLE,
        ),
    )
}


def condition(
    task: str,
    data: str,
    budget: float,
    machine: str,
    epochs: int | None = None,
    epoch_images: int | None = None,
    population: int | None = None,
    exploit_every: int | None = None,
) -> str:
    """What makes runs comparable: the task, the data, the budget, the machine (benchmarks.machine.tag: a budget in seconds
    buys more on a faster one) and any change to the profile's fidelity or population."""
    fidelity = (f"_{epochs}ep" if epochs else "") + (f"_{epoch_images}img" if epoch_images else "")
    pbt = (f"_pop{population}" if population else "") + (f"_every{exploit_every}" if exploit_every else "")
    return f"{task}_{data}_{budget:g}s{fidelity}{pbt}_{machine}"


def result_path(folder: Path, condition: str, system: str, seed: int) -> Path:
    """One JSON file per (condition, system, seed): runs of other data, budgets, machines or fidelities never mix."""
    return folder / f"{condition}_{system}_seed{seed}.json"
