"""Population-based training in the storage: a trial's place in the population, and the states members go on from.

``take_segment`` gives a taken trial its place (``pbt.place``) under the study's lock, so two workers
never advance one member; the place and its parameters are written to the trial before it trains.
A segment's last training state (``end_state_key``) is what its member, or a member exploiting it,
starts from; states no segment will start from any more are removed as the population moves on.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from mnist_hpo import storage as stores
from mnist_hpo.console import console
from mnist_hpo.tuning._retries import state_bytes, state_from
from mnist_hpo.tuning.attrs import PBT_SEGMENT_ATTR
from mnist_hpo.tuning.copies import own_trials
from mnist_hpo.tuning.pbt import Pbt, Segment, place, unreachable
from mnist_hpo.tuning.settings import StudySettings

POLL_S = 1.0  # how often a worker whose members are all training looks again


class SegmentQueued(RuntimeError):
    """A waiting trial makes way for a dead worker's queued segment (the engine fails it and queues a fresh one)."""


class WaitTimedOut(RuntimeError):
    """The worker's --timeout came while its trial waited for a member: the trial gives its place back the same way."""


def take_segment(
    trial: optuna.Trial, settings: StudySettings, artifacts: Any, on_wait: Callable[[], None] | None = None
) -> tuple[optuna.Trial, Segment]:
    """Give ``trial`` its place in the population (a retry keeps its own); the trial handle to train with, and the place.

    While every member it may place is training, it waits; ``on_wait`` (the engine's check for dead
    workers' trials, and for its deadline: ``WaitTimedOut``) runs between looks, so a member whose worker
    died is re-queued. A queued segment makes this trial give way (``SegmentQueued``: failed, a fresh
    trial queued in its place), and the engine takes the queued segment next: no worker waits on a
    segment nobody runs.
    """
    study, pbt = trial.study, Pbt.from_dict(settings.pbt or {})
    kept = Segment.of(trial)  # a retry inherits its place
    if kept is not None:
        return trial, kept
    waited = False
    while True:
        with stores.study_lock(trial.storage, study.study_name):
            trials = own_trials(study.get_trials(deepcopy=False))
            placement = place(trials, pbt, settings.epochs, random.Random(f"{settings.seed}:{trial.number}"))
            if placement is not None:
                trial_id = stores.trial_id_of(trial)
                for name, value in (placement.params or {}).items():
                    distribution = placement.distributions[name]
                    trial.storage.set_trial_param(trial_id, name, distribution.to_internal_repr(value), distribution)
                segment = dataclasses.replace(placement.segment, placed_at=round(time.time(), 3))
                trial.storage.set_trial_user_attr(trial_id, PBT_SEGMENT_ATTR, segment.to_attr())
                _forget(artifacts, study.study_name, unreachable(trials), keep=placement.segment.source)
                return optuna.trial.Trial(study, trial_id), segment
            if not any(Segment.of(t) and not t.state.is_finished() for t in trials if t.number != trial.number):
                raise RuntimeError(f"every member of the population has trained its {pbt.generations(settings.epochs)} generations")
            if any(t.state == TrialState.WAITING and Segment.of(t) for t in trials):
                raise SegmentQueued("a member's segment is queued again (its worker died); this trial makes way so that a worker trains it")
        if not waited:
            console.print(f"trial {trial.number}: every member is training; waiting for one to finish its segment")
            waited = True
        time.sleep(POLL_S)
        if on_wait is not None:
            on_wait()


def end_state_key(study_name: str, trial_number: int) -> str:
    """Where a segment's last training state lives while a segment may start from it."""
    return f"pbt-{study_name}-{trial_number}.pt"


def save_end_state(artifacts: Any, trial: optuna.Trial, state: dict[str, Any]) -> None:
    stores.write_blob(artifacts, end_state_key(trial.study.study_name, trial.number), state_bytes(state))


def load_end_state(artifacts: Any, study_name: str, number: int, device: Any) -> dict[str, Any]:
    """Segment ``number``'s last training state, read as any model file is (zip checked, weights only)."""
    data = stores.read_blob(artifacts, end_state_key(study_name, number))
    if data is None:
        raise RuntimeError(f"the training state of trial {number}, which this segment starts from, is missing")
    return state_from(data, device)


def segment_done(trial: optuna.Trial, settings: StudySettings, segment: Segment, state: dict[str, Any], artifacts: Any) -> None:
    """A segment has trained: keep its last state for the next generation (the last generation has none),
    and remove the states no segment will start from any more."""
    if segment.generation + 1 < Pbt.from_dict(settings.pbt or {}).generations(settings.epochs):
        save_end_state(artifacts, trial, state)
    with stores.study_lock(trial.storage, trial.study.study_name):
        trials = own_trials(trial.study.get_trials(deepcopy=False))
    _forget(artifacts, trial.study.study_name, unreachable(trials))


def _forget(artifacts: Any, study_name: str, numbers: list[int], keep: int | None = None) -> None:
    for number in numbers:
        if number != keep:
            stores.remove_blob(artifacts, end_state_key(study_name, number))
