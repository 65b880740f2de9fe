"""MO-ASHA: asynchronous successive halving over the Pareto ranking (Schmucker et al. 2021).

Rungs sit after epochs 1, 3, 9, ... (reduction factor η = 3), never at a trial's last epoch. A
trial that reaches a rung records its validation accuracy there; it goes on only if it is among
the top ⌊n/η⌋ (at least one) of the n trials that have reached that rung so far, ranked by
non-dominated sorting of (validation accuracy at the rung: higher is better, parameters: fewer is
better), ties within a front broken by NSGA-II's crowding distance (boundary points first), and
remaining ties in favour of the trial being judged (as Optuna's successive halving promotes a
value equal to the cut-off). With fewer than η trials at a rung, a trial goes on only if it is
ranked first among them.

Everything here is a pure function of plain points or of FrozenTrials, so the decision reads only
values already in the storage: safe with any number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from mnist_hpo.tuning.attrs import PARAMETERS_ATTR, RUNGS_ATTR

REDUCTION_FACTOR = 3


@dataclass(frozen=True)
class Point:
    """One trial at one rung: its number, validation accuracy there, and its parameter count."""

    number: int
    accuracy: float
    parameters: float


@dataclass(frozen=True)
class Verdict:
    promoted: bool
    kept: int  # how many of the trials at the rung go on
    of: int  # trials at the rung, this one included
    front: int  # this trial's Pareto front, 1 = non-dominated


def rungs(epochs: int, eta: int = REDUCTION_FACTOR) -> list[int]:
    """The epochs after which trials are judged: 1, η, η², ... strictly before the last epoch."""
    found, rung = [], 1
    while rung < epochs:
        found.append(rung)
        rung *= eta
    return found


def dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as accurate and as small as ``b``, and strictly better in one of the two."""
    return a.accuracy >= b.accuracy and a.parameters <= b.parameters and (a.accuracy > b.accuracy or a.parameters < b.parameters)


def pareto_fronts(points: Sequence[Point]) -> list[list[Point]]:
    """Non-dominated sorting: the first front is dominated by nothing, the second only by the first, ..."""
    remaining = list(points)
    fronts = []
    while remaining:
        front = [p for p in remaining if not any(dominates(q, p) for q in remaining)]
        fronts.append(front)
        remaining = [p for p in remaining if p not in front]
    return fronts


def crowding_distances(front: Sequence[Point]) -> dict[int, float]:
    """NSGA-II crowding distance per trial number: the normalised gap to its neighbours on each objective.

    The two ends of each objective get infinity; an objective on which the whole front is equal adds nothing.
    """
    distance = {p.number: 0.0 for p in front}
    for key in (lambda p: p.accuracy, lambda p: p.parameters):
        ordered = sorted(front, key=lambda p: (key(p), p.number))
        span = key(ordered[-1]) - key(ordered[0])
        distance[ordered[0].number] = distance[ordered[-1].number] = math.inf
        if span == 0:
            continue
        for before, point, after in zip(ordered, ordered[1:], ordered[2:], strict=False):
            distance[point.number] += (key(after) - key(before)) / span
    return distance


def ranking(points: Sequence[Point], favour: int | None = None) -> list[tuple[int, Point]]:
    """(front, point) best first: by front, then crowding distance (larger first), then ``favour``, then trial number."""
    ranked = []
    for index, front in enumerate(pareto_fronts(points), start=1):
        crowding = crowding_distances(front)
        ranked += [(index, p) for p in sorted(front, key=lambda p: (-crowding[p.number], p.number != favour, p.number))]
    return ranked


def kept_at_rung(competitors: int, eta: int = REDUCTION_FACTOR) -> int:
    """How many of ``competitors`` trials at a rung go on: the top 1/η, and at least one."""
    return max(1, competitors // eta)


def judge(points: Sequence[Point], number: int, eta: int = REDUCTION_FACTOR) -> Verdict:
    """Does trial ``number`` (one of ``points``, all at the same rung) go on?"""
    ranked = ranking(points, favour=number)
    kept = kept_at_rung(len(points), eta)
    position = next(i for i, (_, p) in enumerate(ranked) if p.number == number)
    return Verdict(position < kept, kept, len(points), ranked[position][0])


def rung_points(trials: Iterable[FrozenTrial], rung: int) -> list[Point]:
    """Every trial that recorded a value at ``rung``, as a point (its parameter count from its "parameters" attribute)."""
    points = []
    for trial in trials:
        value = (trial.user_attrs.get(RUNGS_ATTR) or {}).get(str(rung))
        parameters = trial.user_attrs.get(PARAMETERS_ATTR)
        if value is not None and parameters is not None:
            points.append(Point(trial.number, float(value), float(parameters)))
    return points
