"""Population-based training (Jaderberg et al. 2017) as decisions over the trials in the storage.

A member of the population is a chain of trials, one per *segment* of ``interval`` epochs (a
generation). The trial that trains a member's next segment is given its place here: a new member
(its parameters drawn by the study's sampler), or a member whose generation every member has finished.
A member ranked in the bottom quantile of the population by that generation's last validation accuracy
*exploits*: it copies the network,
weights and parameters of a member in the top quantile, then *explores*: each parameter that may change
during training is multiplied by 1.2 or 0.8, or drawn afresh with probability 0.25 (Ray Tune's
defaults). The network's shape never changes, so weights are only ever loaded into their own shape.

Every decision is a pure function of the trials read (under the study's lock) and a random generator
seeded by the study's seed and the trial's number: one worker or fifty decide alike.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from mnist_hpo.errors import UserError
from mnist_hpo.tuning.attrs import EPOCHS_RUN_ATTR, LEARNING_CURVE_ATTR, PBT_SEGMENT_ATTR

#: What may change while a member trains: the optimiser's rate and decay, the dropouts and the augmentation.
#: Everything else (the network, the optimiser, the batch, the schedule's kind, the EMA) is its shape.
MUTABLE = ("lr", "weight_decay", "dropout_in", "dropout_hidden", "rotation", "translation", "label_smoothing")


@dataclass(frozen=True)
class Pbt:
    """A study's population-based training: P members, an exploit step every ``interval`` epochs."""

    population: int
    interval: int
    quantile: float = 0.25  # Ray Tune's quantile_fraction
    factors: tuple[float, float] = (1.2, 0.8)  # Ray Tune's perturbation_factors
    resample: float = 0.25  # Ray Tune's resample_probability

    def check(self, epochs: int) -> None:
        if self.population < 2:
            raise UserError(f"--population must be at least 2 members (a member exploits another), got {self.population}")
        if not 1 <= self.interval <= epochs:
            raise UserError(f"--exploit-every must be 1 to {epochs} epochs (a member trains {epochs}), got {self.interval}")

    def generations(self, epochs: int) -> int:
        return math.ceil(epochs / self.interval)

    def budget(self, epochs: int) -> int:
        """The study's trials: one per member and segment."""
        return self.population * self.generations(epochs)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "factors": list(self.factors)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pbt:
        return cls(**{**data, "factors": tuple(data["factors"])})


@dataclass(frozen=True)
class Segment:
    """One trial's place in the population: which member, which epochs, whose training state it goes on from."""

    member: int
    generation: int
    first_epoch: int
    last_epoch: int
    source: int | None  # the trial whose last training state this segment starts from; None: a new network
    donor: int | None = None  # the member it exploited (copied), if it did
    placed_at: float | None = None  # when a worker gave a trial this place (seconds since the epoch, its clock)

    def to_attr(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, trial: FrozenTrial) -> Segment | None:
        data = trial.user_attrs.get(PBT_SEGMENT_ATTR)
        return cls(**data) if data else None


@dataclass(frozen=True)
class Placement:
    segment: Segment
    params: dict[str, Any] | None  # the parameters to train with; None: the study's sampler draws them (a new member)
    distributions: dict[str, BaseDistribution]


def last_accuracy(trial: FrozenTrial) -> float:
    """The validation accuracy after a segment's last epoch (Ray Tune ranks by the last result); -inf if it has none."""
    curve = trial.user_attrs.get(LEARNING_CURVE_ATTR) or []
    if trial.state != TrialState.COMPLETE or not curve or curve[-1].get("val_accuracy") is None:
        return -math.inf
    return float(curve[-1]["val_accuracy"])


def place(trials: Sequence[FrozenTrial], pbt: Pbt, epochs: int, rng: random.Random) -> Placement | None:
    """The next segment to train, or None while the members it may place are training (wait and ask again).

    Generations are synchronous: a member's generation g+1 is placed once every member has finished
    generation g, and it is ranked against them all by their generation-g results (so no member is
    ahead of the schedule it copies). A segment counts when COMPLETE or PRUNED (diverged, or over
    ``--max-params``: ranked last); a FAILed one that is not retried is trained again. So the budget,
    population x generations, places every member exactly once per generation.
    """
    placed = [(t, s) for t in trials if (s := Segment.of(t)) is not None]
    members = {s.member for _, s in placed}
    if len(members) < pbt.population:
        member = min(set(range(pbt.population)) - members)
        return Placement(Segment(member, 0, 1, min(pbt.interval, epochs), None), None, {})
    counted = {(s.member, s.generation): t for t, s in placed if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    done = {m: max((g for (n, g) in counted if n == m), default=-1) for m in members}
    generation = min(done.values()) + 1  # the population's slowest member sets the generation placed next
    busy = {s.member for t, s in placed if not t.state.is_finished()}
    ready = [m for m in sorted(members) if done[m] + 1 == generation and m not in busy]
    if generation >= pbt.generations(epochs) or not ready:
        return None
    member = ready[0]
    last = min((generation + 1) * pbt.interval, epochs)
    fresh = Placement(Segment(member, generation, 1, last, None), None, {})  # a new network, trained from epoch 1
    if generation == 0:
        return fresh
    cohort = {m: counted[(m, generation - 1)] for m in members}
    scores = {m: last_accuracy(t) for m, t in cohort.items()}
    bottom, top = quantiles(scores, pbt.quantile)
    donors = [m for m in top if m != member and scores[m] > -math.inf]
    segment = Segment(member, generation, generation * pbt.interval + 1, last, None)
    if (member in bottom or scores[member] == -math.inf) and donors:
        donor = rng.choice(donors)
        source = cohort[donor]
        params = explore(source.params, source.distributions, pbt, rng)
        return Placement(_at(segment, source.number, donor), params, dict(source.distributions))
    if scores[member] == -math.inf:  # its network never trained, and no one to copy
        return fresh
    own = cohort[member]
    return Placement(_at(segment, own.number, None), dict(own.params), dict(own.distributions))


def unreachable(trials: Sequence[FrozenTrial]) -> list[int]:
    """Segments whose end state no segment will start from any more: placements of their generation's
    successors are over (every member has trained a later generation) and no segment still to train starts from them.

    A RUNNING segment whose epochs are all trained counts as trained: the last two segments of a
    study may end at once, each seeing the other still RUNNING.
    """
    placed = [(t, s) for t in trials if (s := Segment.of(t)) is not None]
    trained = {t.number for t, s in placed if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or _all_epochs_run(t, s)}
    counted: dict[int, int] = {}
    for trial, segment in placed:
        if trial.number in trained:
            counted[segment.member] = max(counted.get(segment.member, -1), segment.generation)
    trained_by_all = min(counted.values(), default=-1) if len(counted) == len({s.member for _, s in placed}) else -1
    needed = {s.source for t, s in placed if not t.state.is_finished() and t.number not in trained}
    return [t.number for t, s in placed if s.generation < trained_by_all and t.number not in needed]


def _all_epochs_run(trial: FrozenTrial, segment: Segment) -> bool:
    return trial.state == TrialState.RUNNING and trial.user_attrs.get(EPOCHS_RUN_ATTR, 0) >= segment.last_epoch


def quantiles(scores: Mapping[int, float], fraction: float) -> tuple[list[int], list[int]]:
    """(bottom, top) members by score, each ``ceil(fraction * n)`` long but at most half (Ray Tune's rule)."""
    ranked = sorted(scores, key=lambda m: (scores[m], -m))
    if len(ranked) <= 1:
        return [], []
    size = min(math.ceil(len(ranked) * fraction), len(ranked) // 2)
    return ranked[:size], ranked[-size:]


def explore(params: Mapping[str, Any], distributions: Mapping[str, BaseDistribution], pbt: Pbt, rng: random.Random) -> dict[str, Any]:
    """``params`` with every mutable float perturbed by a factor, or drawn afresh, within its range."""
    explored = dict(params)
    for name in MUTABLE:
        dist = distributions.get(name)
        if name not in params or not isinstance(dist, FloatDistribution) or dist.low == dist.high:
            continue
        if rng.random() < pbt.resample:
            value = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high))) if dist.log else rng.uniform(dist.low, dist.high)
        else:
            value = params[name] * rng.choice(pbt.factors)
        explored[name] = min(max(value, dist.low), dist.high)
    return explored


def lineage(trials: Sequence[FrozenTrial], number: int) -> list[FrozenTrial]:
    """The segments that made trial ``number``'s weights, first to last (across exploits)."""
    by_number = {t.number: t for t in trials}
    chain: list[FrozenTrial] = []
    current: FrozenTrial | None = by_number.get(number)
    while current is not None and len(chain) <= len(by_number):
        chain.append(current)
        segment = Segment.of(current)
        current = by_number.get(segment.source) if segment and segment.source is not None else None
    return chain[::-1]


def one_per_member(ranked: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Each member's first segment in ``ranked`` (its best, when ranked best first); trials outside a population pass.

    An ensemble of a PBT study's top trials would otherwise average one member's successive generations: one network
    counted several times.
    """
    seen: set[int] = set()
    kept = []
    for trial in ranked:
        segment = Segment.of(trial)
        if segment is not None:
            if segment.member in seen:
                continue
            seen.add(segment.member)
        kept.append(trial)
    return kept


def schedule(trials: Sequence[FrozenTrial], number: int) -> list[dict[str, Any]]:
    """Trial ``number``'s parameters epoch by epoch, from its first segment: what `train --from-study` replays."""
    epochs = []
    for trial in lineage(trials, number):
        segment = Segment.of(trial)
        if segment is None:
            continue
        for epoch in range(segment.first_epoch, segment.last_epoch + 1):
            epochs.append({"epoch": epoch, "trial": trial.number, "member": segment.member, "donor": segment.donor, **trial.params})
    return epochs


def _at(segment: Segment, source: int, donor: int | None) -> Segment:
    return Segment(segment.member, segment.generation, segment.first_epoch, segment.last_epoch, source, donor)
