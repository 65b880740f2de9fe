"""The peers that do not speak Optuna, Ray Tune and Syne Tune, each driving the objective through its own API.

Their trials run in processes of their own and report through the event log (``_trial.EventLog``);
``event_records`` turns it into the run's records, as ``_systems.optuna_records`` does for Optuna's trials.
"""

from __future__ import annotations

import functools
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.peers._adapter import Ours, sample_space
from benchmarks.peers._tasks import ROOT


def event_records(events: list[dict], started: float) -> list[dict]:
    """Trials from the peers' event log; one with no end was stopped by the scheduler or cut by the budget.

    A PBT segment's start carries its place (``pbt``); its epochs are those it trained, from its first.
    """
    records: dict[str, dict] = {}
    for e in events:
        r = records.setdefault(e["key"], {"key": e["key"], "start": None, "end": None, "epochs": 0, "state": "stopped", "value": None})
        r.setdefault("curve", [])
        at = e["t"] - started
        if e["event"] == "start":
            r.update(start=at, config=e.get("config", {}), **({"pbt": e["pbt"]} if "pbt" in e else {}))
        elif e["event"] == "epoch":
            r["curve"].append(e["val_accuracy"])
            trained = e["epoch"] - r.get("pbt", {}).get("first_epoch", 1) + 1
            r.update(end=at, epochs=max(r["epochs"], trained), parameters=e.get("parameters", r.get("parameters")))
        elif e["event"] == "end":
            r.update(end=at, state=e["state"], parameters=e.get("parameters", r.get("parameters")))
            if e["state"] == "complete":
                r["value"] = e["value"]
    out = sorted(records.values(), key=lambda r: r["start"] if r["start"] is not None else float("inf"))
    for r in out:
        curve = r.pop("curve")
        if r["state"] != "complete":
            r["value"] = max(curve) if curve else None
    if out and out[-1]["state"] == "stopped":
        out[-1]["state"] = "cut"  # the last trial started, still running when the run ended
    return out


def peer_context(ours: Ours, spec: dict, folder: Path) -> dict:
    from optuna.distributions import distribution_to_json

    from benchmarks.peers._trial import space_distributions

    distributions = space_distributions(ours)
    return {
        **{k: spec[k] for k in ("task", "data", "seed", "threads", "epochs", "epoch_images")},
        "folder": str(folder),
        "events": str(folder / "events.jsonl"),
        "distributions": {name: distribution_to_json(d) for name, d in distributions.items()},
    }


def run_ray(ours: Ours, folder: Path, spec: dict, optuna_search: bool) -> tuple[list[dict], float]:
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # workers import benchmarks
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from benchmarks.peers._trial import EventLog, ray_space, ray_trainable

    context = peer_context(ours, spec, folder)
    ray.init(num_cpus=spec["threads"], include_dashboard=False, log_to_driver=False, _temp_dir=str(folder / "ray-tmp"))
    if optuna_search:
        from ray.tune.search.optuna import OptunaSearch

        define_by_run = functools.partial(sample_space, ours.settings.space)
        search, space = OptunaSearch(space=define_by_run, metric="val_accuracy", mode="max", seed=spec["seed"]), {}
    else:
        from ray.tune.search import BasicVariantGenerator

        search = BasicVariantGenerator(random_state=spec["seed"])
        space = ray_space({n: _json_distribution(d) for n, d in context["distributions"].items()})
    trainable = tune.with_resources(tune.with_parameters(ray_trainable, context=context), {"cpu": spec["threads"]})
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_accuracy",
            mode="max",
            search_alg=search,
            scheduler=ASHAScheduler(max_t=ours.epochs),
            num_samples=-1,
            time_budget_s=spec["budget"],
        ),
        run_config=tune.RunConfig(name="peers", storage_path=str(folder / "ray"), verbose=0),
    )
    started = time.monotonic()
    try:
        tuner.fit()
    finally:
        ray.shutdown()
    return event_records(EventLog(context["events"]).read(), started), started


def run_ray_pbt(ours: Ours, folder: Path, spec: dict) -> tuple[list[dict], float]:
    """Ray Tune's PopulationBasedTraining on the same population, interval and mutable parameters as `search --pbt`."""
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # workers import benchmarks

    import ray
    from optuna.distributions import FloatDistribution
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search import BasicVariantGenerator

    from benchmarks.peers._trial import EventLog, ray_pbt_trainable, ray_space

    assert ours.pbt is not None
    context = {**peer_context(ours, spec, folder), "interval": ours.pbt["interval"]}
    distributions = {n: _json_distribution(d) for n, d in context["distributions"].items()}
    mutable = {
        n: d for n, d in distributions.items() if n in ours.mutable() and isinstance(d, FloatDistribution) and d.low < d.high
    }  # what mnist-hpo's PBT perturbs: the space's searched floats among tuning.pbt.MUTABLE
    random.seed(spec["seed"])  # Ray's exploit and explore draw from Python's global generator
    scheduler = PopulationBasedTraining(**ray_pbt_arguments(ours, mutable))
    ray.init(num_cpus=spec["threads"], include_dashboard=False, log_to_driver=False, _temp_dir=str(folder / "ray-tmp"))
    trainable = tune.with_resources(tune.with_parameters(ray_pbt_trainable, context=context), {"cpu": spec["threads"]})
    tuner = tune.Tuner(
        trainable,
        param_space=ray_space(distributions),  # generation 0 drawn from the whole space, the network included
        tune_config=tune.TuneConfig(
            metric="val_accuracy",
            mode="max",
            search_alg=BasicVariantGenerator(random_state=spec["seed"]),
            scheduler=scheduler,
            num_samples=ours.pbt["population"],
            time_budget_s=spec["budget"],
            reuse_actors=True,  # Ray's advice for PBT time-multiplexing: a paused member resumes in a running worker
        ),
        run_config=tune.RunConfig(
            name="peers", storage_path=str(folder / "ray"), verbose=0, stop={"training_iteration": ours.epochs}
        ),  # a member that trained every epoch stops before PBT would pause it again
    )
    started = time.monotonic()
    try:
        tuner.fit()
    finally:
        ray.shutdown()
    return event_records(EventLog(context["events"]).read(), started), started


def ray_pbt_arguments(ours: Ours, mutable: dict[str, Any]) -> dict[str, Any]:
    """PopulationBasedTraining's arguments: Ray's defaults but for the interval, the mutations, synch and the range clip."""
    from benchmarks.peers._trial import clipped, ray_space

    assert ours.pbt is not None
    return {
        "time_attr": "training_iteration",  # one report per epoch
        "perturbation_interval": ours.pbt["interval"],
        "hyperparam_mutations": ray_space(mutable),
        "custom_explore_fn": functools.partial(clipped, bounds={n: (d.low, d.high) for n, d in mutable.items()}),
        "synch": True,  # a generation is ranked once every member has reached it, as `search --pbt` ranks it
        # quantile_fraction 0.25, resample_probability 0.25, perturbation_factors (1.2, 0.8): Ray's defaults, as ours
    }


def run_syne(ours: Ours, folder: Path, spec: dict, multi: bool) -> tuple[list[dict], float]:
    os.environ["SYNETUNE_FOLDER"] = str(folder / "syne")
    os.environ.setdefault("OMP_NUM_THREADS", str(spec["threads"]))  # else Syne Tune's backend sets 1 for every trial
    import numpy as np
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend import LocalBackend
    from syne_tune.optimizer.baselines import ASHA
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    from benchmarks.peers._trial import EventLog, syne_space

    context = peer_context(ours, spec, folder)
    space = {**syne_space({n: _json_distribution(d) for n, d in context["distributions"].items()}), "peer_context": json.dumps(context)}
    np.random.seed(spec["seed"])  # MOASHA draws its configs from numpy's global generator
    if multi:
        scheduler = MOASHA(
            space, metrics=["val_error", "parameters"], do_minimize=True, time_attr="epoch", max_t=ours.epochs, random_seed=spec["seed"]
        )
    else:
        scheduler = ASHA(space, metric="val_accuracy", do_minimize=False, time_attr="epoch", max_t=ours.epochs, random_seed=spec["seed"])
    backend = LocalBackend(entry_point=str(Path(__file__).with_name("_syne_entry.py")), binary=sys.executable, pass_args_as_json=True)
    tuner = Tuner(
        trial_backend=backend,
        scheduler=scheduler,
        stop_criterion=StoppingCriterion(max_wallclock_time=spec["budget"]),
        n_workers=1,
        tuner_name=f"peers-{spec['seed']}",
        save_tuner=False,
    )
    started = time.monotonic()
    tuner.run()
    return event_records(EventLog(context["events"]).read(), started), started


def _json_distribution(text: str) -> Any:
    from optuna.distributions import json_to_distribution

    return json_to_distribution(text)
