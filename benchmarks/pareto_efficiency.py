"""The multi-objective mode of the search-efficiency benchmark: pruner none vs threshold vs MO-ASHA.

`python -m benchmarks.search_efficiency --objectives accuracy,params [--trials 24] [--epochs 9] [--seeds 3]`
runs the same accuracy × parameters study (smoke profile by default: the bundled real subset, 2,000
training and 1,000 validation images) with each pruner and seed, interleaved, and reports the epochs
trained and the hypervolume of the final Pareto front of the study's completed trials (validation
accuracy up, parameters down). Hypervolume is measured in the normalised square (validation
accuracy, 1 - parameters / P) against the reference point (validation accuracy 0, P parameters),
P = the largest parameter count any network of the space can have, so 1.0 would be a 100 %-accurate
network with no weights. The hypervolume after each finished trial, against the epochs trained so
far, shows what each pruner buys per epoch; both go to a picture (--picture, default
docs/pareto-efficiency.png).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmarks.machine import describe
from mnist_hpo.commands.search import search as run_search
from mnist_hpo.models import FamilyConfig, build_model, count_parameters
from mnist_hpo.tuning import SearchRequest, StudySettings, mo_asha, own_pareto_front, own_trials
from mnist_hpo.tuning.space import Space

PRUNERS = ("none", "threshold", "mo-asha")
COLOURS = {"none": "#555555", "threshold": "#1f77b4", "mo-asha": "#d62728"}


class ParetoResult(NamedTuple):
    epochs: int
    wall: float
    hypervolume: float
    front: list[tuple[float, int]]  # (validation accuracy, parameters) of the final front
    curve: list[tuple[int, float]]  # (epochs trained so far, hypervolume) after each finished trial
    trials: list[FrozenTrial]


def largest_parameter_count(space: Space) -> int:
    """The most parameters any network of ``space`` can have: every kernel and depth at the widest widths, with and without a head."""
    p = space.params

    def values(name: str) -> list:
        param = p[name]
        if param.dropped:
            return [param.default]
        if param.fixed is not None:
            return [param.fixed]
        if param.kind == "categorical":
            return list(param.choices)
        return list(range(int(param.low), int(param.high) + 1, param.step or 1))

    largest = 0
    for kernel, head in itertools.product(values("kernel_size"), values("head")):
        for layers in values(f"conv_layers_k{kernel}"):
            config = FamilyConfig(
                conv_layers=layers,
                kernel_size=kernel,
                first_channels=max(values("first_channels")),
                growth=max(values("growth")),
                head_width=max(values("head_width")) if head else 0,
            )
            largest = max(largest, count_parameters(build_model({"name": "family", "config": config.to_dict()})))
    return largest


def hypervolume(points: list[tuple[float, int]], largest: int) -> float:
    """Area dominated by ``points`` (accuracy, parameters) in (accuracy, 1 - parameters / largest) over the reference (0, largest)."""
    normalised = sorted(((a, 1 - n / largest) for a, n in points), reverse=True)
    if not normalised:
        return 0.0
    area, tallest = 0.0, 0.0
    for (accuracy, small), below in zip(normalised, [a for a, _ in normalised[1:]] + [0.0], strict=True):
        tallest = max(tallest, small)
        area += (accuracy - below) * tallest
    return area


def front_of(trials: list[FrozenTrial]) -> list[tuple[float, int]]:
    return front_of_points([(t.values[0], int(t.values[1])) for t in trials])


def result_of(study: optuna.Study, wall: float, largest: int) -> ParetoResult:
    trials = sorted((t for t in own_trials(study) if t.state.is_finished()), key=lambda t: (t.datetime_complete, t.number))
    curve, trained, complete = [], 0, []
    for trial in trials:
        trained += trial.user_attrs.get("epochs_run", 0)
        if trial.state == TrialState.COMPLETE:
            complete.append(trial)
        curve.append((trained, hypervolume(front_of(complete), largest)))
    front = sorted((t.values[0], int(t.values[1])) for t in own_pareto_front(study))
    return ParetoResult(trained, wall, hypervolume(front, largest), front, curve, trials)


def one_study(pruner: str, seed: int, args: argparse.Namespace, folder: Path, largest: int) -> ParetoResult:
    from benchmarks.search_efficiency import finished_study

    url, name = f"sqlite:///{folder}/pareto.db", f"mo-{pruner}-{seed}"
    started = time.perf_counter()
    study = finished_study(url, name, args.trials)
    if study is None:
        study = run_search(
            SearchRequest(
                study=name,
                storage=url,
                artifacts=folder / "artifacts",
                profile=args.profile,
                n_trials=args.trials,
                epochs=args.epochs,
                pruner=pruner,
                seed=seed,
                device=args.device,
                objectives="accuracy,params",
            )
        )
        wall = time.perf_counter() - started
    else:
        wall = (study.trials[-1].datetime_complete - study.trials[0].datetime_start).total_seconds()
    return result_of(study, wall, largest)


def replay(pruner: str, trials: list[FrozenTrial], epochs: int, largest: int, floor: float = 0.5) -> tuple[int, float]:
    """Epochs a pruner lets the no-pruning study's trials train, in their order, and the hypervolume of the trials it lets finish.

    MO-ASHA is judged by the same pure function the objective calls (rung values from the recorded curves), the
    threshold by its floor; the sampler's reaction to pruning is left out, so this isolates the pruner's own decisions.
    """
    seen: list[FrozenTrial] = []
    trained, finished = 0, []
    for trial in sorted(trials, key=lambda t: t.number):
        curve = [point["val_accuracy"] for point in trial.user_attrs.get("learning_curve", [])]
        if trial.state != TrialState.COMPLETE or len(curve) < epochs:
            continue
        rungs_seen, stopped_at = {}, None
        for epoch, accuracy in enumerate(curve[:-1], start=1):
            if pruner == "threshold" and accuracy < floor:
                stopped_at = epoch
                break
            if pruner == "mo-asha" and epoch in mo_asha.rungs(epochs):
                rungs_seen[str(epoch)] = accuracy
                points = [*mo_asha.rung_points(seen, epoch), mo_asha.Point(trial.number, accuracy, trial.values[1])]
                if not mo_asha.judge(points, trial.number).promoted:
                    stopped_at = epoch
                    break
        seen.append(
            optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={mo_asha.RUNGS_ATTR: rungs_seen, "parameters": trial.values[1]})
        )
        seen[-1].number = trial.number
        trained += stopped_at or epochs
        if stopped_at is None:
            finished.append((trial.values[0], int(trial.values[1])))
    return trained, hypervolume(front_of_points(finished), largest)


def front_of_points(points: list[tuple[float, int]]) -> list[tuple[float, int]]:
    return [p for p in points if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points)]


def hypervolume_at(curve: list[tuple[int, float]], epochs: int) -> float:
    """The study's hypervolume once it had trained ``epochs`` epochs (its last value before passing them)."""
    reached = [hv for trained, hv in curve if trained <= epochs]
    return reached[-1] if reached else 0.0


def picture(results: dict[str, list[ParetoResult]], largest: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (fronts, curves) = plt.subplots(1, 2, figsize=(12, 4.8))
    for pruner, runs in results.items():
        for seed, run in enumerate(runs):
            label = pruner if seed == 0 else None
            accuracies, sizes = [a for a, _ in run.front], [n for _, n in run.front]
            fronts.step(sizes, accuracies, where="post", color=COLOURS[pruner], alpha=0.8, label=label, marker="o", markersize=3)
            curves.plot(
                [e for e, _ in run.curve],
                [hv for _, hv in run.curve],
                color=COLOURS[pruner],
                alpha=0.8,
                label=label,
                drawstyle="steps-post",
            )
    fronts.set(xscale="log", xlabel="parameters", ylabel="validation accuracy", title="final Pareto fronts (3 seeds each)")
    curves.set(
        xlabel="epochs trained",
        ylabel=f"hypervolume (reference: accuracy 0, {largest:,} parameters)",
        title="hypervolume of the front against epochs",
    )
    for axis in (fronts, curves):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main_multi(args: argparse.Namespace) -> None:
    from mnist_hpo.tuning import get_profile, new_settings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings: StudySettings = new_settings(
        SearchRequest(profile=args.profile, objectives="accuracy,params"), get_profile(args.profile, False)
    )
    largest = largest_parameter_count(Space.from_dict(settings.space))
    results: dict[str, list[ParetoResult]] = {p: [] for p in PRUNERS}
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for seed in range(args.seeds):
            for pruner in PRUNERS:  # interleaved, so machine drift hits every pruner alike
                run = one_study(pruner, seed, args, folder, largest)
                results[pruner].append(run)
                print(
                    f"seed {seed} pruner {pruner}: {run.epochs} epochs, {run.wall:.0f} s, hypervolume {run.hypervolume:.4f}, "
                    f"front of {len(run.front)}",
                    flush=True,
                )
    print(f"machine: {describe()}")
    print(
        f"profile {args.profile}, accuracy x parameters, {args.trials} trials x up to {args.epochs} epochs, {args.seeds} seeds (medians); "
        f"hypervolume in (validation accuracy, 1 - parameters / {largest:,}) against the reference (0, {largest:,} parameters)"
    )
    print(f"{'pruner':<10} {'epochs':>7} {'wall s':>7} {'hypervolume':>12} {'epochs saved':>13} {'none at these epochs':>21}")
    base = statistics.median(r.epochs for r in results["none"])
    for pruner, runs in results.items():
        epochs, wall, hv = (statistics.median(getattr(r, f) for r in runs) for f in ("epochs", "wall", "hypervolume"))
        at = statistics.median(hypervolume_at(b.curve, r.epochs) for r, b in zip(runs, results["none"], strict=True))
        print(f"{pruner:<10} {epochs:>7.0f} {wall:>7.0f} {hv:>12.4f} {base / epochs:>12.2f}x {at:>21.4f}")
    print("per seed (epochs, hypervolume; none's hypervolume after as many epochs):")
    for pruner, runs in results.items():
        cells = (
            f"{r.epochs} ep, {r.hypervolume:.4f} (none {hypervolume_at(b.curve, r.epochs):.4f})"
            for r, b in zip(runs, results["none"], strict=True)
        )
        print(f"{pruner:<10} " + " | ".join(cells))
    print("replayed on the no-pruning studies' learning curves, per seed (epochs saved, hypervolume change):")
    for pruner in PRUNERS:
        cells = []
        for trials in (run.trials for run in results["none"]):
            base_epochs, base_hv = replay("none", trials, args.epochs, largest)
            epochs, hv = replay(pruner, trials, args.epochs, largest)
            cells.append(f"{base_epochs / epochs:.2f}x {hv - base_hv:+.4f}")
        print(f"{pruner:<10} " + " | ".join(cells))
    title = f"profile {args.profile}, {args.trials} trials x up to {args.epochs} epochs, seeds 0-{args.seeds - 1}"
    picture(results, largest, args.picture, title)
    print(f"picture: {args.picture}")
