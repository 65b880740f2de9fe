"""Tables and pictures of the peers benchmark, rebuilt from the result files alone (`--read`).

Per system and condition (task, data, budget, machine): best validation accuracy (two objectives:
the hypervolume) at a quarter, half and all of the budget, median and worst over the seeds; time to
the task's target; trials started and finished and epochs trained within the budget; the chosen
trial's test accuracy (reported only). Each system is compared with mnist-hpo seed by seed (on a
machine without its runs, with mnist-hpo-hyperband: the default until 2026-12-05), over the seeds
both ran (the systems driven by Optuna share their first random trials within a seed), at half and
all of the budget; a difference is called only where the median paired difference exceeds the
validation split's binomial standard error. For the population-based systems a trial is one member's
segment (the epochs between two exploit steps), and each run says how many segments exploited another member.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from benchmarks.pareto_efficiency import front_of_points, hypervolume
from benchmarks.peers._tasks import SYSTEMS, TASKS

FRACTIONS = (0.25, 0.5, 1.0)
PAIRED = (0.5, 1.0)  # the goal's two points: half and the full budget
BASES = ("mnist-hpo", "mnist-hpo-hyperband")  # what the others are paired with: the default, else the earlier one


def load(folder: Path) -> dict[str, list[dict]]:
    """Every result file in ``folder``, by condition."""
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        runs[result["condition"]].append(result)
    return runs


def completed(run: dict, until: float) -> list[dict]:
    return sorted(
        (t for t in run["trials"] if t["state"] == "complete" and t["end"] is not None and t["end"] <= until), key=lambda t: t["end"]
    )


def score_at(run: dict, until: float) -> float | None:
    """Best validation accuracy (two objectives: hypervolume) of the trials completed by ``until`` seconds."""
    done = completed(run, until)
    if not done:
        return None
    if run["reference_parameters"]:
        return hypervolume(front_of_points([(t["value"], t["parameters"]) for t in done]), run["reference_parameters"])
    return max(t["value"] for t in done)


def curve(run: dict) -> list[tuple[float, float]]:
    return [(t["end"], score_at(run, t["end"])) for t in completed(run, run["budget"])]


def time_to(run: dict, target: float) -> float | None:
    return next((t["end"] for t in completed(run, run["budget"]) if t["value"] >= target), None)


def counts(run: dict) -> tuple[int, int, int]:
    """Trials started and finished, and epochs trained by the trials that ended, within the budget."""
    budget = run["budget"]
    started = sum(1 for t in run["trials"] if t["start"] is not None and t["start"] <= budget)
    ended = [t for t in run["trials"] if t["end"] is not None and t["end"] <= budget and t["state"] != "cut"]
    return started, len(ended), sum(t["epochs"] for t in ended)


def exploits(run: dict) -> int:
    """Segments of a population-based run that started from another member's state (an exploit step), within the budget."""
    return sum(1 for t in run["trials"] if (t.get("pbt") or {}).get("donor") is not None and (t["start"] or 0) <= run["budget"])


def noise(p: float, n: int) -> float:
    """Binomial standard error of an accuracy ``p`` measured on ``n`` images."""
    return math.sqrt(p * (1 - p) / n)


def pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def median_worst(values: list[float | None], multi: bool) -> str:
    """Median and worst over seeds; a seed with nothing completed counts as 0."""
    filled = [v or 0.0 for v in values]
    if multi:
        return f"{statistics.median(filled):.4f} ({min(filled):.4f})"
    return f"{pct(statistics.median(filled))} ({pct(min(filled))})"


def paired(runs: list[dict], base: list[dict], at: float) -> list[float]:
    """A system minus the base at ``at`` seconds, seed by seed, over the seeds both ran (nothing completed counts as 0)."""
    by_seed = {r["seed"]: score_at(r, at) or 0.0 for r in base}
    return [(score_at(r, at) or 0.0) - by_seed[r["seed"]] for r in runs if r["seed"] in by_seed]


def verdict(differences: list[float], se: float, multi: bool) -> str:
    """The median paired difference, called only beyond the noise, and how many seeds were beyond it either way."""
    if not differences:
        return "no seed in common"
    median = statistics.median(differences)
    shown = f"{median:+.4f}" if multi else f"{100 * median:+.2f} pp"
    above, below = sum(d > se for d in differences), sum(d < -se for d in differences)
    call = "same within noise" if abs(median) <= se else ("higher" if median > 0 else "lower")
    return f"{call} ({shown}; {above} higher, {below} lower of {len(differences)})"


def table(cond: str, runs: list[dict]) -> list[str]:
    first = runs[0]
    task, budget, multi = TASKS[first["task"]], first["budget"], bool(first["reference_parameters"])
    by_system: dict[str, list[dict]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: r["seed"]):
        by_system[run["system"]].append(run)
    order = [s for s in SYSTEMS if s in by_system]
    base = next((s for s in BASES if s in by_system), BASES[0])
    chosen = [r["chosen"]["value"] for r in runs if r["chosen"]]  # the accuracy at which differences are judged
    p = statistics.median(chosen) if chosen else 0.99
    se = noise(p, first["val_images"])
    lines = [
        f"### {cond}: {task.description}",
        "",
        f"Budget {budget:g} s per run, {first['epochs']} epochs x {first['epoch_images'] or 'all'} images per trial at most, "
        f"data {first['data']} ({first['val_images']:,} validation / {first['test_images']:,} test images), {first['threads']} threads. "
        f"Machine: {first['machine']}.",
        f"Validation noise: binomial SE of a {first['val_images']:,}-image split at {pct(p)} % = {100 * se:.2f} pp; "
        f"a difference from {base} is called only above it"
        + (" (hypervolume: judged against the same SE, an approximation)." if multi else "."),
    ]
    if multi:
        lines.append(
            f"Hypervolume in (validation accuracy, 1 - parameters / {first['reference_parameters']:,}) over the reference point "
            f"(validation accuracy 0, {first['reference_parameters']:,} parameters: the largest network of the space)."
        )
    what = "hypervolume" if multi else "best validation %"
    head = ["system", "seeds", *(f"{what} at {f:g} budget: median (worst)" for f in FRACTIONS)]
    head += [f"vs {base} at {f:g} budget, paired by seed: median difference (seeds beyond noise)" for f in PAIRED]
    if task.target and not multi:
        head.append(f"time to {pct(task.target, 1)} %: median (seeds reaching it)")
    head += ["trials started / finished", "epochs", "chosen trial's test % (reported only): median (range)"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for s in order:
        rs = by_system[s]
        cells = [s, str(len(rs)), *(median_worst([score_at(r, f * budget) for r in rs], multi) for f in FRACTIONS)]
        cells += ["" if s == base else verdict(paired(rs, by_system.get(base, []), f * budget), se, multi) for f in PAIRED]
        if task.target and not multi:
            times = [time_to(r, task.target) for r in rs]
            reached = [t for t in times if t is not None]
            shown = f"{statistics.median([t if t is not None else math.inf for t in times]):.0f} s"
            cells.append(f"{'never' if 'inf' in shown else shown} ({len(reached)}/{len(rs)})")
        c = [counts(r) for r in rs]
        cells.append(f"{statistics.median(x[0] for x in c):g} / {statistics.median(x[1] for x in c):g}")
        cells.append(f"{statistics.median(x[2] for x in c):g}")
        tests = [r["chosen"]["test"] for r in rs if r["chosen"] and r["chosen"].get("test") is not None]
        cells.append(f"{pct(statistics.median(tests))} ({pct(min(tests))}–{pct(max(tests))})" if tests else "–")
        lines.append("| " + " | ".join(cells) + " |")
    populations = {(r["system"], r["pbt"]["population"], r["pbt"]["interval"]) for r in runs if r.get("pbt")}
    if populations:
        shown = ", ".join(f"{s} (population {p}, exploit step every {k} epochs)" for s, p, k in sorted(populations))
        lines += ["", f"Population-based: {shown}: a trial is one member's segment; epochs are those the segments trained."]
    lines += [
        "",
        "Per run (seed: best by the budget, chosen trial's validation / test, its parameters, trials started / finished, epochs):",
    ]
    for s in order:
        parts = []
        for r in by_system[s]:
            ch, (started, finished, epochs) = r["chosen"], counts(r)
            got = f"{pct(ch['value'])} / {pct(ch.get('test'))} %, {ch['parameters']:,} params" if ch else "nothing completed"
            final = score_at(r, budget)
            front = f"hypervolume {final:.4f}, most accurate member " if multi and final else ""
            exploited = f", {exploits(r)} exploit{'' if exploits(r) == 1 else 's'}" if r.get("pbt") else ""
            parts.append(f"{r['seed']}: {front}{got}, {started}/{finished}, {epochs} ep{exploited}")
        lines.append(f"- {s}: " + "; ".join(parts))
    return lines


def picture(cond: str, runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    first = runs[0]
    budget, multi = first["budget"], bool(first["reference_parameters"])
    grid = np.linspace(0, budget, 241)
    figure, axis = plt.subplots(figsize=(8, 5))
    for index, system in enumerate(s for s in SYSTEMS if any(r["system"] == s for r in runs)):
        rows = []
        for run in (r for r in runs if r["system"] == system):
            points = curve(run)
            rows.append([next((v for at, v in reversed(points) if at <= x), 0.0) for x in grid])  # nothing yet: 0, as in the table
        values = np.array(rows, dtype=float) * (1 if multi else 100)
        colour = f"C{index}"
        label = f"{system} (median of {len(rows)})"
        axis.plot(grid, np.median(values, axis=0), color=colour, label=label, drawstyle="steps-post")
        axis.fill_between(grid, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.15, step="post")
    axis.set(
        xlabel="seconds since the run's clock started",
        ylabel="hypervolume" if multi else "best validation accuracy, %",
        title=f"{cond}: median over seeds, band = the seeds' range",
        xlim=(0, budget),
    )
    finals = [v for v in (score_at(r, budget) for r in runs) if v]
    if finals:  # the last stretch, where the systems differ; earlier values run off the bottom
        low, high = (v * (1 if multi else 100) for v in (min(finals), max(finals)))
        axis.set_ylim(low - (0.05 if multi else 2.0), high + 0.01 if multi else min(100.0, high + 0.5))  # no accuracy above 100 %
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(folder: Path, tasks: list[str]) -> None:
    runs = load(folder)
    shown = [c for c in sorted(runs) if runs[c][0]["task"] in tasks]
    if not shown:
        print(f"no result files for {', '.join(tasks)} in {folder}")
        return
    for cond in shown:
        print("\n".join(table(cond, runs[cond])) + "\n")
        path = folder / f"{cond}.png"
        picture(cond, runs[cond], path)
        print(f"picture: {path}\n")
