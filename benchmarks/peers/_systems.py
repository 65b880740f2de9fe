"""Each system driving the same objective through its own public API, one run per process.

    python -m benchmarks.peers._systems SPEC_JSON   (what `python -m benchmarks.peers` starts for each run)

A run builds the task's objective, starts the clock, hands the objective to the system for the
budget, and then reads back what every trial did: when it started and ended (seconds from the
clock's start), how many epochs it trained, how it ended, its validation accuracy (a completed
trial: that of its kept, best-validation epoch) and its parameter count. The chosen trial (the best
completed trial by validation, ended within the budget; for two objectives every member of the
final front) is then scored on the test split, reported only. One JSON file per run.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import sys
import tempfile
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from benchmarks.peers._adapter import Ours, our_objective, prepare_process, run_engine, sample_space
from benchmarks.peers._tasks import ROOT, SYSTEMS, TASKS, Task

SCHEMA = 1


def keeper(ours: Ours, folder: Path):
    """The objective's "trial finished" hook: a completed trial's kept weights, for its test accuracy."""

    def on_finish(trial: Any, end: Any) -> None:
        if end.result is not None:
            ours.save_weights(trial, end, folder / "weights" / f"{trial.number}.pt")

    return on_finish


def never(trial: Any, report: Any, parameters: int, last: bool) -> None:
    return None


class Clock:
    """Wall-clock stamps (Optuna's datetimes) on the monotonic clock, through offsets sampled while the run goes.

    A VM's wall clock can jump (NTP, a host catching up): one smoke run's trials came out 40 s longer than
    the run itself. Every time here is time.monotonic()'s; ``jumps`` says how far the wall clock moved.
    """

    def __init__(self, every: float = 0.2) -> None:
        self.samples = [(time.time(), time.monotonic())]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every,), daemon=True)
        self._thread.start()

    def _sample(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append((time.time(), time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), time.monotonic()))

    def monotonic(self, wall: float) -> float:
        before = [s for s in self.samples if s[0] <= wall] or self.samples[:1]
        w, m = max(before)
        return m + (wall - w)

    def jumps(self) -> float:
        pairs = zip(self.samples, self.samples[1:])
        return max((abs((w2 - w1) - (m2 - m1)) for (w1, m1), (w2, m2) in pairs), default=0.0)


def run_optuna(ours: Ours, folder: Path, spec: dict, sampler: Any, pruner: Any) -> tuple[Any, float]:
    import optuna

    study = optuna.create_study(directions=ours.directions, sampler=sampler, pruner=pruner)
    ours.objective.on_finish = keeper(ours, folder)
    started = time.monotonic()
    study.optimize(ours.objective, timeout=spec["budget"])
    return study, started


def optuna_records(study: Any, started: float, clock: Clock) -> list[dict]:
    from optuna.trial import TrialState

    records = []
    for t in study.trials:
        if t.datetime_start is None:  # still queued (mnist-hpo's budget is queued as waiting trials)
            continue
        epochs = t.user_attrs.get("epochs_run", 0)
        curve = [p["val_accuracy"] for p in t.user_attrs.get("learning_curve", [])]
        state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned" if epochs else "skipped"}.get(t.state, t.state.name.lower())
        records.append(
            {
                "key": str(t.number),
                "start": clock.monotonic(t.datetime_start.timestamp()) - started,
                "end": clock.monotonic(t.datetime_complete.timestamp()) - started if t.datetime_complete else None,
                "epochs": epochs,
                "state": state,
                "value": t.values[0] if state == "complete" else (max(curve) if curve else None),
                "parameters": t.user_attrs.get("parameters"),
                "config": t.params,
            }
        )
    return records


def event_records(events: list[dict], started: float) -> list[dict]:
    """Trials from the peers' event log; one with no end was stopped by the scheduler or cut by the budget."""
    records: dict[str, dict] = {}
    for e in events:
        r = records.setdefault(e["key"], {"key": e["key"], "start": None, "end": None, "epochs": 0, "state": "stopped", "value": None})
        r.setdefault("curve", [])
        at = e["t"] - started
        if e["event"] == "start":
            r.update(start=at, config=e.get("config", {}))
        elif e["event"] == "epoch":
            r["curve"].append(e["val_accuracy"])
            r.update(end=at, epochs=max(r["epochs"], e["epoch"]), parameters=e["parameters"])
        else:
            r.update(end=at, state=e["state"], parameters=e.get("parameters"))
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


def run(spec: dict, folder: Path, clock: Clock) -> tuple[Ours, list[dict], float]:
    """The run of one system: the objective, then the system for the budget; its trials and the clock's start."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task, name, seed = TASKS[spec["task"]], spec["system"], spec["seed"]
    fidelity = {k: spec[k] for k in ("data", "seed", "threads", "epochs", "epoch_images")}
    ours = our_objective(task, folder=folder, judge=never if name == "random" else None, **fidelity)
    if name.startswith("ray-"):
        return ours, *run_ray(ours, folder, spec, optuna_search=name == "ray-optuna")
    if name.startswith("syne-"):
        return ours, *run_syne(ours, folder, spec, multi=task.multi_objective)
    if name == "mnist-hpo":
        study, started = run_engine(ours, folder, seed=seed, budget=spec["budget"], threads=spec["threads"], on_finish=keeper(ours, folder))
    elif name == "optuna-default":
        pruner = None if task.multi_objective else optuna.pruners.MedianPruner()
        study, started = run_optuna(ours, folder, spec, optuna.samplers.TPESampler(seed=seed), pruner)
    else:
        study, started = run_optuna(ours, folder, spec, optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner())
    return ours, optuna_records(study, started, clock), started


def score(ours: Ours, task: Task, records: list[dict], budget: float, folder: Path) -> dict | None:
    """The chosen trial (and, for two objectives, every front member) on the test split: reported only."""
    from benchmarks.pareto_efficiency import front_of_points

    done = [r for r in records if r["state"] == "complete" and r["end"] is not None and r["end"] <= budget]
    if not done:
        return None
    if task.multi_objective:
        front = front_of_points([(r["value"], r["parameters"]) for r in done])
        members = [r for r in done if (r["value"], r["parameters"]) in front]
    else:
        members = [max(done, key=lambda r: (r["value"], -r["end"]))]
    for r in members:
        weights = folder / "weights" / f"{r['key']}.pt"
        r["test"] = ours.test_accuracy(weights) if weights.exists() else None
    best = max(members, key=lambda r: (r["value"], -r["end"]))
    return {k: best.get(k) for k in ("key", "value", "test", "parameters", "end", "config")}


def versions(name: str) -> dict[str, str]:
    out = {}
    for package in ("mnist-hpo", "optuna", "torch", "ray", "syne-tune"):
        if package in ("ray", "syne-tune") and not name.startswith(package.split("-")[0]):
            continue
        with contextlib.suppress(PackageNotFoundError):
            out[package] = version(package)
    return out


def main(spec: dict) -> None:
    from benchmarks.machine import describe

    entered, clock = time.monotonic(), Clock()
    task = TASKS[spec["task"]]
    with tempfile.TemporaryDirectory(prefix="peers-") as scratch:
        folder = Path(scratch)
        ours, records, started = run(spec, folder, clock)
        ended = time.monotonic()
        clock.stop()
        chosen = score(ours, task, records, spec["budget"], folder)
        result = {
            "schema": SCHEMA,
            **{k: spec[k] for k in ("system", "task", "seed", "data", "condition", "budget", "threads")},
            "system_detail": SYSTEMS[spec["system"]].description,
            "task_detail": task.description,
            "epochs": ours.epochs,
            "epoch_images": ours.settings.epoch_images,
            "max_params": task.max_params,
            "objectives": task.objectives,
            "val_images": ours.val_images,
            "test_images": ours.test_images,
            "reference_parameters": ours.largest_parameters() if task.multi_objective else None,
            "machine": describe(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "versions": versions(spec["system"]),
            "setup_s": round(started - entered, 2),
            "wall_s": round(ended - started, 2),
            "wall_clock_jumps_s": round(clock.jumps(), 2),
            "trials": records,
            "chosen": chosen,
        }
    out = Path(spec["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".part")
    partial.write_text(json.dumps(result, indent=1), encoding="utf-8")
    partial.replace(out)


if __name__ == "__main__":
    prepare_process()
    main(json.loads(sys.argv[1]))
