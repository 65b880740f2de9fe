"""One trial of a peer that does not speak Optuna (Ray Tune, Syne Tune): its config onto the same objective.

The space is read off the objective's own define-by-run sampling (``space_distributions``: the
Optuna distributions every parameter is drawn from, conditionals included) and written in the
peer's search-space API (``ray_space``, ``syne_space``). A sampled config goes back to the
objective as an Optuna trial with those parameters enqueued (``run_trial``), so the network,
training and judging code is the very code the Optuna-driven systems run; parameters a config
holds but the space does not ask for (a depth of another kernel size) are ignored, exactly as
Optuna's own samplers never draw them. Every epoch and every end is appended to an event log,
the peers' common record (a trial their scheduler stops is killed between epochs).

Ray Tune's PopulationBasedTraining trains a member as segments (``run_member``): from the checkpoint
Ray hands it (its own after a pause, another member's after an exploit, with that member's config
perturbed) to the next perturbation point, where it reports a checkpoint of the whole training
state. Each segment is one record of the event log, as each of `search --pbt`'s segments is a trial.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from benchmarks.peers._adapter import NotTrained, Ours, our_objective
from benchmarks.peers._tasks import TASKS

Report = Callable[[dict[str, Any]], None]
CheckpointReport = Callable[[dict[str, Any], "dict[str, Any] | None"], None]  # (metrics, checkpoint to save with them or None)
_OURS: dict[str, Ours] = {}  # one objective per worker process (data loaded once)


def space_distributions(ours: Ours, draws: int = 256) -> dict[str, BaseDistribution]:
    """Every parameter the objective can ask for, with its distribution: random draws until every branch has shown."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    found: dict[str, BaseDistribution] = {}
    for _ in range(draws):
        trial = study.ask()
        ours.sample(trial)
        found.update(trial.distributions)
    return found


def ray_space(distributions: dict[str, BaseDistribution]) -> dict[str, Any]:
    from ray import tune

    def domain(d: BaseDistribution) -> Any:
        if isinstance(d, CategoricalDistribution):
            return tune.choice(list(d.choices))
        if isinstance(d, IntDistribution) and d.step != 1:
            return tune.choice(list(range(d.low, d.high + 1, d.step)))  # Optuna's grid from low; qrandint's is from 0
        if isinstance(d, IntDistribution):
            return (tune.lograndint if d.log else tune.randint)(d.low, d.high + 1)  # Ray's upper bound is exclusive
        assert isinstance(d, FloatDistribution) and d.step is None, d
        return (tune.loguniform if d.log else tune.uniform)(d.low, d.high)

    return {name: domain(d) for name, d in distributions.items()}


def syne_space(distributions: dict[str, BaseDistribution]) -> dict[str, Any]:
    from syne_tune import config_space as cs

    def domain(d: BaseDistribution) -> Any:
        if isinstance(d, CategoricalDistribution):
            return cs.choice(list(d.choices))
        if isinstance(d, IntDistribution) and d.step != 1:
            return cs.choice(list(range(d.low, d.high + 1, d.step)))
        if isinstance(d, IntDistribution):
            return (cs.lograndint if d.log else cs.randint)(d.low, d.high)  # Syne Tune's bounds are inclusive
        assert isinstance(d, FloatDistribution) and d.step is None, d
        return (cs.loguniform if d.log else cs.uniform)(d.low, d.high)

    return {name: domain(d) for name, d in distributions.items()}


def typed(config: dict[str, Any], distributions: dict[str, BaseDistribution]) -> dict[str, Any]:
    """The config's values of the space's parameters as Python values Optuna accepts (no numpy scalars, no strings)."""
    out: dict[str, Any] = {}
    for name, d in distributions.items():
        if name not in config:
            continue
        value = config[name]
        if isinstance(d, CategoricalDistribution):
            out[name] = next(c for c in d.choices if c == value or str(c) == str(value))
        elif isinstance(d, IntDistribution):
            out[name] = int(value)
        else:
            out[name] = float(value)
    return out


class EventLog:
    """JSON lines appended by every trial process (one short write each: whole lines on Linux).

    Times are the monotonic clock's, which every process on the machine shares and the wall clock's jumps leave alone.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, key: str, event: str, **fields: Any) -> None:
        line = json.dumps({"key": key, "event": event, "t": time.monotonic(), "pid": os.getpid(), **fields}) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ours_in_worker(context: dict[str, Any]) -> Ours:
    key = json.dumps(context, sort_keys=True)
    if key not in _OURS:
        _OURS[key] = our_objective(
            TASKS[context["task"]],
            data=context["data"],
            seed=context["seed"],
            folder=Path(context["folder"]),
            threads=context["threads"],
            epochs=context["epochs"],
            epoch_images=context["epoch_images"],
        )
    return _OURS[key]


def run_trial(context: dict[str, Any], config: dict[str, Any], key: str, report: Report) -> None:
    """Train ``config`` with the objective; ``report`` every epoch's metrics to the peer (the last after its weights are kept)."""
    log = EventLog(context["events"])
    index = len({e["key"] for e in log.read()})  # trials run one at a time: this one's number
    params = typed(config, {n: optuna.distributions.json_to_distribution(d) for n, d in context["distributions"].items()})
    log.write(key, "start", config=params)
    ours = ours_in_worker(context)
    last: dict[str, Any] = {}

    def judge(trial: optuna.Trial, epoch: Any, parameters: int, final: bool) -> None:
        metrics = {"epoch": epoch.epoch, "val_accuracy": epoch.val_accuracy, "val_error": 1 - epoch.val_accuracy, "parameters": parameters}
        log.write(key, "epoch", **metrics)
        last.update(metrics)
        if not final:
            report(metrics)

    def finished(trial: optuna.Trial, end: Any) -> None:
        if end.result is not None:
            ours.save_weights(trial, end, Path(context["folder"]) / "weights" / f"{key}.pt")

    ours.objective.judge, ours.objective.on_finish = judge, finished
    ours.objective.seed = context["seed"] + index  # as Optuna's trial numbers give each trial its own seed
    study = optuna.create_study(directions=ours.directions)  # in memory: carries the config into the objective
    study.enqueue_trial(params)
    trial = study.ask()
    try:
        value = ours.objective(trial)
    except optuna.TrialPruned:  # over the parameter budget (never trained) or diverged: the worst value
        parameters = trial.user_attrs.get("parameters")
        log.write(key, "end", state="pruned" if last else "skipped", parameters=parameters)
        report({"epoch": last.get("epoch", 0) + 1, "val_accuracy": 0.0, "val_error": 1.0, "parameters": parameters})
        return
    accuracy = value[0] if isinstance(value, tuple) else value
    log.write(key, "end", state="complete", value=accuracy, parameters=last.get("parameters"), epochs=last.get("epoch"))
    report(last)


def ray_trainable(config: dict[str, Any], context: dict[str, Any]) -> None:
    """Ray Tune's function trainable (imported by reference in its worker processes)."""
    from ray import tune

    run_trial(context, config, tune.get_context().get_trial_id(), lambda metrics: tune.report(metrics))


def clipped(config: dict[str, Any], bounds: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Ray PBT's explored config with each perturbed parameter put back into the space's range (as mnist-hpo's PBT does).

    Ray multiplies by 1.2 or 0.8 without a bound: a dropout could pass 1, which no network accepts.
    """
    return {**config, **{name: min(max(config[name], low), high) for name, (low, high) in bounds.items() if name in config}}


def member_index(trial_id: str) -> int:
    """A Ray trial's place in the population: its id ends in its index (``1a2b3_00005``)."""
    return int(trial_id.rsplit("_", 1)[-1])


def run_member(
    context: dict[str, Any], config: dict[str, Any], member: str, restored: dict[str, Any] | None, report: CheckpointReport
) -> None:
    """One Ray PBT member from ``restored`` (None: a new network) until Ray pauses it or it has trained every epoch.

    ``restored``: the checkpoint Ray started it with, {"state", "epoch", "member", "segment", "spec"}: its own
    (after a pause) or a donor's (an exploit: Ray copied the donor's checkpoint and its config, perturbed). A
    segment runs to the next multiple of the interval; its last epoch is reported with the training state.
    A member whose network never trained or diverged ("state" None) reports 0 % until it exploits another.
    """
    log = EventLog(context["events"])
    distributions = {n: optuna.distributions.json_to_distribution(d) for n, d in context["distributions"].items()}
    params = typed(config, distributions)
    ours = ours_in_worker(context)
    epochs, interval = ours.epochs, context["interval"]
    epoch = restored["epoch"] if restored else 0
    state = restored["state"] if restored else None
    source = restored["segment"] if restored else None
    donor = restored["member"] if restored and restored["member"] != member else None
    dead = restored is not None and state is None
    spec = restored.get("spec") if restored else None
    while epoch < epochs:
        until = min((epoch // interval + 1) * interval, epochs)
        key = f"{member}-e{epoch + 1}"
        place = {"member": member, "generation": epoch // interval, "first_epoch": epoch + 1, "last_epoch": until}
        if donor is not None:
            log.write(key, "exploit", donor=donor, source=source, epoch=epoch)
        log.write(key, "start", config=params, pbt={**place, "source": source, "donor": donor})
        last: dict[str, Any] = {}

        def on_epoch(epoch_report: Any, key: str = key, until: int = until, last: dict[str, Any] = last) -> None:
            metrics = {"epoch": epoch_report.epoch, "val_accuracy": epoch_report.val_accuracy, "val_error": 1 - epoch_report.val_accuracy}
            log.write(key, "epoch", **metrics)
            last.update(metrics)
            if epoch_report.epoch < until:
                report(metrics, None)

        trained = None
        if not dead:
            try:
                trained = ours.train_segment(
                    params, seed=context["seed"] + member_index(member), resume=state, until=until, on_epoch=on_epoch
                )
            except NotTrained as exc:
                log.write(key, "end", state="pruned" if last else "skipped", parameters=exc.parameters, why=str(exc))
                dead = True
        else:
            log.write(key, "end", state="skipped", parameters=None, why="its network never trained or diverged")
        if trained is not None:
            if donor is not None and ours.shape(trained.spec) != ours.shape(spec or {"config": {}}):
                raise RuntimeError(f"member {member} exploited {donor}'s weights into another network: {trained.spec} vs {spec}")
            spec, state = trained.spec, trained.last_state
            ours.keep_weights(spec, trained.model, Path(context["folder"]) / "weights" / f"{key}.pt")
            log.write(key, "end", state="complete", value=trained.val_accuracy, parameters=trained.parameters, epochs=until)
        else:  # 0 % for the rest of the segment, so Ray ranks it last at the perturbation point
            state = None
            for missing in range(last.get("epoch", epoch) + 1, until):
                report({"epoch": missing, "val_accuracy": 0.0, "val_error": 1.0}, None)
            last = {"epoch": until, "val_accuracy": 0.0, "val_error": 1.0}
        report(last, {"state": state, "epoch": until, "member": member, "segment": key, "spec": spec})
        epoch, source, donor = until, key, None


def ray_pbt_trainable(config: dict[str, Any], context: dict[str, Any]) -> None:
    """Ray Tune's function trainable for PopulationBasedTraining: a checkpoint of the training state at every perturbation point."""
    import tempfile

    import torch
    from ray import tune

    def load(checkpoint: Any) -> dict[str, Any] | None:
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            meta = json.loads((Path(folder) / "member.json").read_text(encoding="utf-8"))
            kept = Path(folder) / "state.pt"
            meta["state"] = torch.load(kept, map_location="cpu", weights_only=True) if kept.exists() else None
        return meta

    def report(metrics: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        if checkpoint is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="peers-pbt-") as folder:
            meta = {k: v for k, v in checkpoint.items() if k != "state"}
            (Path(folder) / "member.json").write_text(json.dumps(meta), encoding="utf-8")
            if checkpoint["state"] is not None:
                torch.save(checkpoint["state"], Path(folder) / "state.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    run_member(context, config, tune.get_context().get_trial_id(), load(tune.get_checkpoint()), report)
