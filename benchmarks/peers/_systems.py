"""Each system driving the same objective through its own public API, one run per process.

    python -m benchmarks.peers._systems SPEC_JSON   (what `python -m benchmarks.peers` starts for each run)

A run builds the task's objective, starts the clock, hands the objective to the system for the
budget, and then reads back what every trial did: when it started and ended (seconds from the
clock's start), how many epochs it trained, how it ended, its validation accuracy (a completed
trial: that of its kept, best-validation epoch) and its parameter count. The chosen trial (the best
completed trial by validation, ended within the budget; for two objectives every member of the
final front) is then scored on the test split, reported only. One JSON file per run.

The population-based systems (mnist-hpo-pbt, ray-pbt) record one member's *segment* (the epochs between
two exploit steps) as a trial: its epochs are those it trained, and ``pbt`` says which member it
belongs to, its generation and epochs, the segment whose training state it went on from (``source``)
and the member it copied (``donor``, after an exploit step).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
import tempfile
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from benchmarks.peers._adapter import Ours, our_objective, prepare_process, run_engine
from benchmarks.peers._foreign import run_ray, run_ray_pbt, run_syne
from benchmarks.peers._tasks import SYSTEMS, TASKS, Task

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
        segment = t.user_attrs.get("pbt_segment")  # a population-based study's trial: one member's segment
        if segment:  # epochs_run is the member's epoch; the segment trained from its first
            epochs = max(0, epochs - segment["first_epoch"] + 1)
        curve = [p["val_accuracy"] for p in t.user_attrs.get("learning_curve", [])]
        state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned" if epochs else "skipped"}.get(t.state, t.state.name.lower())
        pbt = {k: segment[k] for k in ("member", "generation", "first_epoch", "last_epoch", "donor")} if segment else None
        if segment:
            pbt["source"] = None if segment["source"] is None else str(segment["source"])
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
                **({"pbt": pbt} if pbt else {}),
            }
        )
    return records


def run(spec: dict, folder: Path, clock: Clock) -> tuple[Ours, list[dict], float]:
    """The run of one system: the objective, then the system for the budget; its trials and the clock's start."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task, name, seed = TASKS[spec["task"]], spec["system"], spec["seed"]
    fidelity = {k: spec[k] for k in ("data", "seed", "threads", "epochs", "epoch_images")}
    population = {"pbt": name.endswith("-pbt"), "population": spec.get("population"), "exploit_every": spec.get("exploit_every")}
    earlier = name in ("mnist-hpo-hyperband", "mnist-hpo-baseline") and not task.multi_objective  # the defaults until 2026-12-05
    variant = {"baseline": True if name == "mnist-hpo-baseline" else None, "pruner": "hyperband" if earlier else None}
    ours = our_objective(task, folder=folder, judge=never if name == "random" else None, **variant, **fidelity, **population)
    if name == "ray-pbt":
        return ours, *run_ray_pbt(ours, folder, spec)
    if name.startswith("ray-"):
        return ours, *run_ray(ours, folder, spec, optuna_search=name == "ray-optuna")
    if name.startswith("syne-"):
        return ours, *run_syne(ours, folder, spec, multi=task.multi_objective)
    if name == "mnist-hpo-rung2":
        rung2 = optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)
        study, started = run_optuna(ours, folder, spec, ours.sampler(seed), rung2)
    elif name == "mnist-hpo-startup10":
        study, started = run_optuna(ours, folder, spec, ours.sampler(seed, startup_trials=10), ours.pruner())
    elif name.startswith("mnist-hpo"):
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
            "pbt": ours.pbt,
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
