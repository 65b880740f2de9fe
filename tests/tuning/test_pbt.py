"""Population-based training's decisions, over trials as Optuna stores them (no training, no storage)."""

from __future__ import annotations

import math
import random

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from mnist_hpo.tuning.attrs import EPOCHS_RUN_ATTR, LEARNING_CURVE_ATTR, PBT_SEGMENT_ATTR
from mnist_hpo.tuning.pbt import MUTABLE, Pbt, Segment, explore, lineage, one_per_member, place, quantiles, schedule, unreachable

DISTRIBUTIONS = {
    "lr": FloatDistribution(1e-3, 1e-2, log=True),
    "dropout_in": FloatDistribution(0.0, 0.4),
    "first_channels": IntDistribution(4, 12, step=4),
    "head": CategoricalDistribution([False, True]),
}


def params(member: int) -> dict:
    return {"lr": 2e-3 + 1e-3 * member, "dropout_in": 0.1, "first_channels": 4 + 4 * (member % 3), "head": member % 2 == 0}


class Population:
    """Trials as workers leave them: each placed segment is stored, then finished with a score."""

    def __init__(self, pbt: Pbt, epochs: int) -> None:
        self.pbt, self.epochs, self.trials = pbt, epochs, []

    def place(self, seed: int = 0) -> FrozenTrial | None:
        number = len(self.trials)
        placement = place(self.trials, self.pbt, self.epochs, random.Random(f"{seed}:{number}"))
        if placement is None:
            return None
        segment = placement.segment
        values = placement.params or params(segment.member)
        trial = create_trial(
            state=TrialState.WAITING,  # replaced by `finish`; RUNNING cannot be made by create_trial
            params=values,
            distributions=placement.distributions or DISTRIBUTIONS,
            user_attrs={PBT_SEGMENT_ATTR: segment.to_attr()},
        )
        trial.number = number
        trial.state = TrialState.RUNNING
        self.trials.append(trial)
        return trial

    def finish(self, trial: FrozenTrial, accuracy: float | None, state: TrialState = TrialState.COMPLETE) -> None:
        segment = Segment.of(trial)
        trial.state = state
        trial.value = accuracy if state == TrialState.COMPLETE else None
        curve = [{"epoch": e, "val_accuracy": accuracy} for e in range(segment.first_epoch, segment.last_epoch + 1)]
        trial.set_user_attr(LEARNING_CURVE_ATTR, curve if state == TrialState.COMPLETE else [])


def test_generation_zero_places_each_member_once_then_waits_for_every_member():
    population = Population(Pbt(population=3, interval=2), epochs=6)
    first = [population.place() for _ in range(3)]
    assert [Segment.of(t) for t in first] == [Segment(m, 0, 1, 2, None) for m in range(3)]
    assert population.place() is None  # every member is training
    population.finish(first[0], 0.9)
    population.finish(first[1], 0.8)
    assert population.place() is None  # member 2 has not finished generation 0: no one goes on (synchronous generations)
    population.finish(first[2], 0.7)
    nxt = Segment.of(population.place())
    assert (nxt.member, nxt.generation, nxt.first_epoch, nxt.last_epoch) == (0, 1, 3, 4)


def test_the_bottom_member_copies_a_top_one_and_perturbs_only_what_may_change():
    population = Population(Pbt(population=4, interval=1), epochs=3)
    first = [population.place() for _ in range(4)]
    for trial, accuracy in zip(first, [0.95, 0.60, 0.90, 0.80]):
        population.finish(trial, accuracy)
    placed = [population.place() for _ in range(4)]
    by_member = {Segment.of(t).member: t for t in placed}
    loser = Segment.of(by_member[1])
    assert loser.donor == 0 and loser.source == first[0].number  # 1 quantile of 4: the best member, generation 0's trial
    copied = by_member[1]
    for name in ("first_channels", "head"):  # the network is the donor's, so its weights fit
        assert copied.params[name] == first[0].params[name]
    assert copied.params["lr"] != first[0].params["lr"] or copied.params["dropout_in"] != first[0].params["dropout_in"]
    for name in ("lr", "dropout_in"):
        assert DISTRIBUTIONS[name].low <= copied.params[name] <= DISTRIBUTIONS[name].high
    for member in (0, 2, 3):  # the others go on from their own state with their own parameters
        segment = Segment.of(by_member[member])
        assert segment.donor is None and segment.source == first[member].number
        assert by_member[member].params == first[member].params


def test_a_pruned_member_ranks_last_and_a_failed_one_is_placed_again():
    population = Population(Pbt(population=3, interval=1), epochs=2)
    a, b, c = (population.place() for _ in range(3))
    population.finish(a, 0.9)
    population.finish(b, None, TrialState.PRUNED)  # diverged: counted, never trained to a score
    population.finish(c, None, TrialState.FAIL)  # failed for good: its place is trained again
    again = population.place()
    assert Segment.of(again) == Segment(2, 0, 1, 1, None)
    assert population.place() is None
    population.finish(again, 0.8)
    nxt = {Segment.of(t).member: Segment.of(t) for t in (population.place() for _ in range(3))}
    assert nxt[1].donor == 0 and nxt[1].source == a.number  # the pruned member copies the best


@pytest.mark.parametrize("size, bottom_top", [(1, 0), (2, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3)])
def test_quantiles_follow_ray_tunes_rule(size, bottom_top):
    scores = {m: m / 10 for m in range(size)}
    bottom, top = quantiles(scores, 0.25)
    assert len(bottom) == len(top) == bottom_top
    assert bottom == list(range(bottom_top)) and sorted(top) == list(range(size - bottom_top, size))


def test_explore_multiplies_by_the_factors_or_resamples_and_stays_in_range():
    pbt = Pbt(population=4, interval=1)
    rng = random.Random(0)
    seen = set()
    for _ in range(400):
        explored = explore({"lr": 5e-3, "dropout_in": 0.35, "first_channels": 8}, DISTRIBUTIONS, pbt, rng)
        assert explored["first_channels"] == 8  # not mutable
        assert 1e-3 <= explored["lr"] <= 1e-2 and 0.0 <= explored["dropout_in"] <= 0.4
        seen.add("x1.2" if math.isclose(explored["lr"], 6e-3) else "x0.8" if math.isclose(explored["lr"], 4e-3) else "drawn")
        if explored["dropout_in"] == 0.4:
            seen.add("clipped")
    assert seen == {"x1.2", "x0.8", "drawn", "clipped"}
    assert set(MUTABLE) >= {"lr", "dropout_in", "dropout_hidden", "weight_decay", "rotation", "translation", "label_smoothing"}


@pytest.mark.parametrize("workers", [1, 3])
def test_the_budget_places_every_member_once_per_generation_and_decides_alike(workers):
    """Finished in a shuffled order by up to `workers` at once: population x generations places, then none."""
    pbt, epochs = Pbt(population=5, interval=2), 7
    population = Population(pbt, epochs)
    order = random.Random(workers)
    running: list[FrozenTrial] = []
    for _ in range(pbt.budget(epochs)):
        while len(running) < workers and (trial := population.place()) is not None:
            again = place(population.trials[:-1], pbt, epochs, random.Random(f"0:{trial.number}"))
            assert again is not None and again.segment == Segment.of(trial) and again.params == (trial.params if again.params else None)
            running.append(trial)
        done = running.pop(order.randrange(len(running)))
        population.finish(done, order.uniform(0.5, 1.0))
    assert not running and population.place() is None
    places = sorted((Segment.of(t).member, Segment.of(t).generation) for t in population.trials)
    assert places == [(m, g) for m in range(5) for g in range(pbt.generations(epochs))]
    assert {Segment.of(t).last_epoch for t in population.trials if Segment.of(t).generation == 3} == {7}


def test_end_states_are_kept_while_a_segment_may_start_from_them():
    population = Population(Pbt(population=2, interval=1), epochs=3)
    a, b = population.place(), population.place()
    population.finish(a, 0.9)
    population.finish(b, 0.8)
    assert unreachable(population.trials) == []
    c = population.place()
    assert unreachable(population.trials) == []  # b's generation-0 state is still to be started from
    d = population.place()
    population.finish(c, 0.9)
    assert unreachable(population.trials) == []  # d still trains from generation 0's state
    d.set_user_attr(EPOCHS_RUN_ATTR, 2)  # d has trained its epochs, and is still to be told
    assert unreachable(population.trials) == [a.number, b.number]


def test_the_schedule_follows_the_weights_across_an_exploit():
    population = Population(Pbt(population=2, interval=1), epochs=2)
    a, b = population.place(), population.place()
    population.finish(a, 0.9)
    population.finish(b, 0.5)
    c, d = population.place(), population.place()
    copied = c if Segment.of(c).donor is not None else d
    assert [t.number for t in lineage(population.trials, copied.number)] == [a.number, copied.number]
    epochs = schedule(population.trials, copied.number)
    assert [(e["epoch"], e["trial"], e["lr"]) for e in epochs] == [(1, a.number, a.params["lr"]), (2, copied.number, copied.params["lr"])]


def test_one_per_member_keeps_each_members_first_segment_in_the_ranking():
    population = Population(Pbt(population=2, interval=1), epochs=2)
    a, b = population.place(), population.place()
    population.finish(a, 0.9)
    population.finish(b, 0.8)
    c, d = population.place(), population.place()
    population.finish(c, 0.95)
    population.finish(d, 0.85)
    ranked = sorted(population.trials, key=lambda t: -t.value)
    kept = one_per_member(ranked)
    assert len(kept) == 2 and {Segment.of(t).member for t in kept} == {0, 1} and kept[0] is ranked[0]
    assert one_per_member([create_trial(value=0.5)]) != []  # a trial outside a population passes


def test_settings_out_of_range_are_one_line_errors():
    from mnist_hpo.errors import UserError

    with pytest.raises(UserError, match="--population must be at least 2"):
        Pbt(1, 1).check(4)
    with pytest.raises(UserError, match="--exploit-every must be 1 to 4 epochs"):
        Pbt(4, 5).check(4)
    assert Pbt.from_dict(Pbt(4, 2).to_dict()) == Pbt(4, 2) and Pbt(8, 2).budget(8) == 32 and Pbt(8, 3).budget(8) == 24
