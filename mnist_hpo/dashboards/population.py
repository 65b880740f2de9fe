"""The population of a population-based-training study, drawn from its trials (``tuning.pbt``).

``read`` turns the trials into each member's validation accuracy by epoch (its segments joined in
epoch order, the line broken where the member copied another: an *exploit*, drawn as a dashed
jump from the donor's last point to the copy's first) and the best trial's schedule (its parameters
epoch by epoch across every copy, ``pbt.schedule``). Two drawings of that one reading: a PNG for the
study's dashboard note (matplotlib, as ``figures``), and plotly figures for the HTML report. Only
the validation split is read: it is what members were ranked on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from mnist_hpo.dashboards import figures
from mnist_hpo.tuning import pbt
from mnist_hpo.tuning.attrs import EPOCHS_RUN_ATTR, LEARNING_CURVE_ATTR

#: The schedule's parameters drawn: the learning rate (log axis) and the dropouts, where the space searches them.
RATE, DROPOUTS = "lr", ("dropout_in", "dropout_hidden")
#: One colour per member (matplotlib's tab10, then tab20's light shades), the same in the note and the report.
COLOURS = (
    *("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"),
    *("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"),
)
EXPLOIT_GID, BEST_GID = "exploit", "best"


@dataclass(frozen=True)
class Point:
    epoch: int
    accuracy: float  # validation, 0 to 1
    trial: int


@dataclass(frozen=True)
class Exploit:
    """A member copying another: from the donor's point at the end of the copied segment to the copy's first point."""

    member: int
    donor: int
    trial: int  # the segment that copied
    source: int  # the trial whose training state it copied
    start: Point
    end: Point


@dataclass(frozen=True)
class Population:
    runs: tuple[tuple[int, tuple[Point, ...]], ...]  # (member, points): a member's line, broken where it copied or started over
    exploits: tuple[Exploit, ...]
    best: FrozenTrial | None  # the best completed segment by validation accuracy
    schedule: tuple[dict[str, Any], ...]  # pbt.schedule of the best: {"epoch", "trial", "member", "donor", params...}

    @property
    def members(self) -> list[int]:
        return sorted({member for member, _ in self.runs})

    def copies(self) -> list[dict[str, Any]]:
        """The schedule's epochs where the best trial's chain began a segment copied from another member."""
        return [
            e for i, e in enumerate(self.schedule) if e["donor"] is not None and (i == 0 or self.schedule[i - 1]["trial"] != e["trial"])
        ]


def read(trials: Sequence[FrozenTrial], best: int | None = None) -> Population:
    """The population in ``trials`` (a study's own); ``best``: the trial whose schedule is drawn (default: the best completed).

    A segment's points are every epoch its trials recorded: a retry resumes where its dead (FAILed)
    trial stopped, so both count, and a later trial's epoch replaces an earlier one's; a segment placed
    again from another source starts over. An exploit is drawn once the copy has a validated epoch.
    """
    places: dict[tuple[int, int], tuple[pbt.Segment, int, dict[int, Point]]] = {}
    where: dict[int, tuple[int, int]] = {}  # trial number -> its place (member, generation)
    for trial in sorted(trials, key=lambda t: t.number):
        segment = pbt.Segment.of(trial)
        if segment is None or trial.state == TrialState.WAITING:
            continue
        key = (segment.member, segment.generation)
        points = places[key][2] if key in places and places[key][0].source == segment.source else {}
        points.update({p.epoch: p for p in _points(trial)})
        places[key] = (segment, trial.number, points)
        where[trial.number] = key
    runs: list[tuple[int, list[Point]]] = []
    run_of: dict[tuple[int, int], int] = {}
    exploits = []
    for key in sorted(places, key=lambda k: (k[1], k[0])):
        segment, number, points = places[key]
        line = [points[e] for e in sorted(points)]
        came_from = where.get(segment.source) if segment.source is not None else None
        if came_from is not None and came_from[0] == segment.member and segment.donor is None and came_from in run_of:
            run_of[key] = run_of[came_from]
            runs[run_of[key]][1].extend(line)
        else:
            run_of[key] = len(runs)
            runs.append((segment.member, line))
        donor_points = places[came_from][2] if came_from is not None else {}
        if segment.donor is not None and donor_points and line:
            start = donor_points[max(donor_points)]
            exploits.append(Exploit(segment.member, segment.donor, number, int(segment.source), start, line[0]))
    chosen = _best(trials, best)
    schedule = tuple(pbt.schedule(trials, chosen.number)) if chosen else ()
    return Population(tuple((m, tuple(p)) for m, p in runs if p), tuple(exploits), chosen, schedule)


def _points(trial: FrozenTrial) -> list[Point]:
    curve = trial.user_attrs.get(LEARNING_CURVE_ATTR) or []
    return [Point(int(p["epoch"]), float(p["val_accuracy"]), trial.number) for p in curve if _finite(p.get("val_accuracy"))]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _best(trials: Sequence[FrozenTrial], number: int | None) -> FrozenTrial | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and pbt.Segment.of(t) is not None]
    if number is not None:
        return next((t for t in complete if t.number == number), None)
    return min(complete, key=lambda t: (-t.values[0], t.number), default=None)


def generation_done(trials: Sequence[FrozenTrial], number: int, population: int) -> int | None:
    """The generation of trial ``number`` if all ``population`` members have trained it now, else None.

    Trial ``number`` (being published) counts as trained, and so does a RUNNING segment whose epochs
    are all run (two last segments of a generation may end at once, each seeing the other running).
    """
    segments = {t.number: (t, s) for t in trials if (s := pbt.Segment.of(t)) is not None}
    if number not in segments:
        return None
    generation = segments[number][1].generation
    trained = {
        s.member
        for t, s in segments.values()
        if s.generation == generation
        and (
            t.number == number
            or t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.RUNNING and t.user_attrs.get(EPOCHS_RUN_ATTR, 0) >= s.last_epoch)
        )
    }
    return generation if len(trained) >= population else None


def colour(member: int) -> str:
    return COLOURS[member % len(COLOURS)]


def _label(exploit: Exploit) -> str:
    return f"trial {exploit.trial}: member {exploit.member} copied member {exploit.donor} (trial {exploit.source})"


def _best_point(data: Population) -> Point | None:
    if data.best is None:
        return None
    mine = [p for _, points in data.runs for p in points if p.trial == data.best.number]
    return max(mine, key=lambda p: p.accuracy, default=None)


def _searched(data: Population, names: Sequence[str], margin: float) -> tuple[float, float]:
    """The axis range of ``names``: the range the space searches them in, with a margin (a factor on a log axis)."""
    ranges = [d for name in names if isinstance(d := (data.best.distributions if data.best else {}).get(name), FloatDistribution)]
    if not ranges:
        return (1e-4, 1e-1) if margin > 1 else (-margin, 0.5 + margin)
    low, high = min(d.low for d in ranges), max(d.high for d in ranges)
    return (low / margin, high * margin) if margin > 1 else (low - margin, high + margin)


def _schedule_title(data: Population) -> str:
    if data.best is None:
        return "best trial's schedule (no completed trial yet)"
    return f"trial {data.best.number}'s schedule (best by validation accuracy)"


# ------------------------------------------------------------------------------------- the note's PNG


def draw(data: Population, title: str = ""):
    """The matplotlib Figure: the population on the left; the best trial's learning rate and dropouts on the right."""
    figure = figures.blank_figure(figures.POPULATION)
    grid = figure.add_gridspec(2, 2, width_ratios=(3, 2), hspace=0.12)
    axes = figure.add_subplot(grid[:, 0])
    for index, (member, points) in enumerate(data.runs):
        first = all(m != member for m, _ in data.runs[:index])
        x, y = [p.epoch for p in points], [100 * p.accuracy for p in points]
        axes.plot(x, y, marker="o", markersize=3, color=colour(member), label=f"member {member}" if first else None, gid=f"member {member}")
    for exploit in data.exploits:
        x, y = [exploit.start.epoch, exploit.end.epoch], [100 * exploit.start.accuracy, 100 * exploit.end.accuracy]
        axes.plot(x, y, linestyle="--", linewidth=1.2, color=colour(exploit.member), gid=EXPLOIT_GID)
        axes.plot(x[1:], y[1:], marker="v", markersize=6, color=colour(exploit.member), linestyle="none", gid=EXPLOIT_GID + " mark")
    best = _best_point(data)
    if best is not None:
        axes.plot([best.epoch], [100 * best.accuracy], marker="*", markersize=13, color="gold", markeredgecolor="black", gid=BEST_GID)
    axes.plot([], [], linestyle="--", color="grey", marker="v", label="exploit (copies a better member)")
    axes.set(title="population: validation accuracy by epoch", xlabel="epoch", ylabel="validation accuracy (%)")
    axes.legend(fontsize=7, ncol=2, loc="lower right")
    _draw_schedule(data, figure.add_subplot(grid[0, 1]), figure.add_subplot(grid[1, 1]))
    from matplotlib.ticker import MaxNLocator

    for each in figure.axes:
        each.grid(alpha=0.3)
        each.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.1, top=0.86 if title else 0.92, wspace=0.18)
    return figure


def _draw_schedule(data: Population, rate_axes, dropout_axes) -> None:
    epochs = [e["epoch"] for e in data.schedule]
    rate_axes.set_title(_schedule_title(data), fontsize=9)
    if RATE in (data.schedule[0] if data.schedule else {}):
        rate_axes.step(epochs, [e[RATE] for e in data.schedule], where="mid", marker="o", markersize=3, color="black", gid=RATE)
        rate_axes.set_yscale("log")
        rate_axes.set_ylim(*_searched(data, (RATE,), 1.25))
    rate_axes.set_ylabel("learning rate (log)")
    for name, style in zip(DROPOUTS, ("-", ":"), strict=True):
        if data.schedule and name in data.schedule[0]:
            values = [e[name] for e in data.schedule]
            dropout_axes.step(epochs, values, where="mid", linestyle=style, marker="o", markersize=3, label=name, gid=name)
    dropout_axes.set(xlabel="epoch", ylabel="dropout", ylim=_searched(data, DROPOUTS, 0.03))
    if dropout_axes.lines:
        dropout_axes.legend(fontsize=7, loc="best")
    rate_axes.tick_params(labelbottom=False)
    for copy in data.copies():
        for each in (rate_axes, dropout_axes):
            each.axvline(copy["epoch"] - 0.5, color=colour(copy["donor"]), linestyle="--", linewidth=1, gid="copied")
        rate_axes.annotate(
            f"copied member {copy['donor']}",
            (copy["epoch"] - 0.5, 1),
            xycoords=("data", "axes fraction"),
            xytext=(2, -10),
            textcoords="offset points",
            fontsize=7,
        )
    if epochs:
        for each in (rate_axes, dropout_axes):
            each.set_xlim(min(epochs) - 0.6, max(epochs) + 0.6)


def png(data: Population, title: str = "") -> bytes:
    return figures.png_bytes(draw(data, title))


# -------------------------------------------------------------------------------- the report's plotly


def plotly_figures(data: Population) -> list[tuple[str, str, str, Callable[[], Any]]]:
    """(div id, title, caption, make) of the report's population figures."""
    return [
        (
            "plot-population",
            "Population",
            "Each member's validation accuracy by epoch, one line per member; a dashed jump is an exploit: the "
            "member copied the weights and parameters of a better member (from its point at the end of the copied "
            "segment) and perturbed them. The star is the best trial.",
            lambda: population_figure(data),
        ),
        (
            "plot-schedule",
            "The best trial's schedule",
            "The parameters the best trial's weights were trained with, epoch by epoch, across every copy; "
            "dashed lines are the epochs where it copied another member.",
            lambda: schedule_figure(data),
        ),
    ]


def population_figure(data: Population) -> Any:
    import plotly.graph_objects as go

    figure = go.Figure()
    for member in data.members:
        x: list[int | None] = []
        y: list[float | None] = []
        text: list[str | None] = []
        for points in (p for m, p in data.runs if m == member):
            gap = [None] if x else []
            x += gap + [p.epoch for p in points]
            y += gap + [100 * p.accuracy for p in points]
            text += gap + [f"trial {p.trial}" for p in points]
        figure.add_scatter(
            x=x,
            y=y,
            text=text,
            mode="lines+markers",
            name=f"member {member}",
            line={"color": colour(member)},
            legendgroup=f"member {member}",
            connectgaps=False,
            meta={"kind": "member", "member": member},
        )
    for index, exploit in enumerate(data.exploits):
        figure.add_scatter(
            x=[exploit.start.epoch, exploit.end.epoch],
            y=[100 * exploit.start.accuracy, 100 * exploit.end.accuracy],
            mode="lines+markers",
            line={"color": colour(exploit.member), "dash": "dash", "width": 1.5},
            marker={"symbol": ["circle-open", "triangle-down"], "size": [7, 13]},
            name="exploit",
            legendgroup=EXPLOIT_GID,
            showlegend=index == 0,
            text=[_label(exploit)] * 2,
            meta={"kind": EXPLOIT_GID, "trial": exploit.trial, "member": exploit.member, "donor": exploit.donor},
        )
    best = _best_point(data)
    if best is not None:
        figure.add_scatter(
            x=[best.epoch],
            y=[100 * best.accuracy],
            mode="markers",
            name=f"best: trial {best.trial}",
            marker={"symbol": "star", "size": 16, "color": "gold", "line": {"color": "black", "width": 1}},
        )
    figure.update_layout(title="Population: validation accuracy by epoch", xaxis_title="epoch", yaxis_title="validation accuracy (%)")
    figure.update_xaxes(dtick=1)
    return figure


def schedule_figure(data: Population) -> Any:
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    epochs = [e["epoch"] for e in data.schedule]
    hover = [f"trial {e['trial']}, member {e['member']}" for e in data.schedule]
    drawn = [(RATE, "learning rate", 1, {"shape": "hvh", "color": "black"})]
    drawn += [(name, name, 2, {"shape": "hvh", "dash": dash}) for name, dash in zip(DROPOUTS, ("solid", "dot"), strict=True)]
    for param, label, row, line in drawn:
        if data.schedule and param in data.schedule[0]:
            values = [e[param] for e in data.schedule]
            figure.add_scatter(
                x=epochs,
                y=values,
                text=hover,
                name=label,
                mode="lines+markers",
                line=line,
                row=row,
                col=1,
                meta={"kind": "schedule", "param": param},
            )
    for copy in data.copies():
        line = {"dash": "dash", "color": colour(copy["donor"]), "width": 1}
        figure.add_vline(x=copy["epoch"] - 0.5, line=line, annotation_text=f"copied member {copy['donor']}", row=1, col=1)
        figure.add_vline(x=copy["epoch"] - 0.5, line=line, row=2, col=1)
    low, high = _searched(data, (RATE,), 1.25)
    figure.update_yaxes(type="log", title_text="learning rate (log)", range=[math.log10(low), math.log10(high)], dtick="D2", row=1, col=1)
    figure.update_yaxes(title_text="dropout", range=list(_searched(data, DROPOUTS, 0.03)), row=2, col=1)
    figure.update_xaxes(dtick=1)
    figure.update_xaxes(title_text="epoch", row=2, col=1)
    figure.update_layout(title=_schedule_title(data))
    return figure
