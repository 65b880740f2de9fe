"""The global budget of a study, kept as trials: a worker only ever takes a queued (WAITING) trial.

A study queues N trials when it is created, the published baseline first, and records N in its
settings. Workers never create trials, so however many join or leave, no more than N run. A trial
that fails is replaced by a new waiting one (a retry with its parameters, or a fresh trial), so the
finished trials (COMPLETE + PRUNED) add up to exactly N. Raising the budget queues more.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from mnist_hpo import storage as stores
from mnist_hpo.console import plural
from mnist_hpo.errors import SearchInterrupted, UserError
from mnist_hpo.search.copies import copied_counts, copy_trials, recount_copies
from mnist_hpo.search.settings import ATTR, StudySettings, check_study_name
from mnist_hpo.search.space import Space

CREATING_ATTR = "mnist_hpo:creating"  # study system attribute while its budget is being queued
SETTINGS_WAIT_S = 60  # how long a worker waits for a study that another process is still creating
MARK_WAIT_S = 5  # how long an empty study without settings or creator may be one whose creator has not marked it yet
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class BudgetView:
    budget: int
    counts: Counter

    @property
    def finished(self) -> int:
        return self.counts[TrialState.COMPLETE] + self.counts[TrialState.PRUNED]

    @property
    def in_flight(self) -> int:
        return self.counts[TrialState.RUNNING] + self.counts[TrialState.WAITING]

    @property
    def met(self) -> bool:
        return self.finished >= self.budget

    def describe(self) -> str:
        c = self.counts
        return (
            f"budget {plural(self.budget, 'trial')}: {self.finished} finished ({c[TrialState.COMPLETE]} complete, "
            f"{c[TrialState.PRUNED]} pruned), {c[TrialState.RUNNING]} running, {c[TrialState.WAITING]} waiting, "
            f"{c[TrialState.FAIL]} failed (not counted)"
        )


def budget_view(storage: BaseStorage, study_id: int, budget: int, copied: dict[str, int] | None = None) -> BudgetView:
    """The study's own trials per state: trials copied by a warm start are never part of its budget.

    ``copied``: the study's copied counts (``copied_counts``) if the caller has them; they are
    written once, when the study is created, so a worker reads them with its budget, not every step.
    """
    if copied is None:
        copied = copied_counts(storage.get_study_user_attrs(study_id))
    return _own(BudgetView(budget, stores.count_states(storage, study_id)), copied)


def view_of_trials(trials: Sequence[FrozenTrial], budget: int, copied: dict[str, int]) -> BudgetView:
    """``budget_view`` from trials already read (a journal or gRPC worker reads them anyway to take one)."""
    return _own(BudgetView(budget, Counter(t.state for t in trials)), copied)


def _own(view: BudgetView, copied: dict[str, int]) -> BudgetView:
    for state, count in copied.items():
        view.counts[TrialState[state]] -= count
    return view


def queue_budget(study: optuna.Study, settings: StudySettings, count: int, baseline: bool) -> None:
    """Queue ``count`` waiting trials: the published configuration first when ``baseline``, then free ones."""
    for index in range(count):
        if index == 0 and baseline:
            study.enqueue_trial(Space.from_dict(settings.space).published(), user_attrs={"published_baseline": True})
        else:
            study.enqueue_trial({})


BudgetRule = Callable[[StudySettings | None, BudgetView | None], int]


def ensure_budget_study(
    storage: BaseStorage,
    name: str,
    settings: StudySettings,
    *,
    budget: BudgetRule,
    data_source: str | None = None,
    copies: Sequence[FrozenTrial] = (),
) -> tuple[optuna.Study, StudySettings, str]:
    """Create study ``name`` with its budget queued, or bring an existing one to the budget ``budget()`` says.

    ``budget(stored, view)`` gets the stored settings and trial counts (None, None for a new study)
    and returns the budget to have. Safe to run from several processes at once: one creates, the
    others wait for its settings. ``copies``: a new study's warm start, trials of the study
    ``settings.warm_start`` (added after the budget, so trial 0 is still the published baseline).
    Returns the study, its settings and a one-line account.
    """
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        check_study_name(name)  # a new study only: one made by an older release keeps its name
    with _continuable(name), stores.study_lock(storage, name):  # one budget change at a time (storage/_locks.py)
        return _ensure(storage, name, settings, budget, data_source, copies)


@contextlib.contextmanager
def _continuable(name: str) -> Iterator[None]:
    """Ctrl-C while a budget is queued: say that the same command finishes the job (exit 130)."""
    try:
        yield
    except KeyboardInterrupt:
        raise SearchInterrupted(
            f"interrupted while queueing the budget of study {name!r}; run the same command again to finish it"
        ) from None


def _ensure(
    storage: BaseStorage, name: str, settings: StudySettings, budget: BudgetRule, data_source: str | None, copies: Sequence[FrozenTrial]
) -> tuple[optuna.Study, StudySettings, str]:
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=settings.directions)
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
    else:
        study_id = storage.get_study_id_from_name(name)
        storage.set_study_system_attr(study_id, CREATING_ATTR, _creator())
        settings.n_trials = budget(None, None)
        queue_budget(study, settings, settings.n_trials, baseline=True)
        warm = _warm_start(study, settings, copies)
        if data_source:
            study.set_user_attr("data_source", data_source)
        settings.save(study)  # last: a study with settings has its whole budget queued
        return (
            study,
            settings,
            f"created study {name!r} with a budget of {settings.n_trials} trials (trial 0 is the published {settings.profile} baseline){warm}",
        )

    study_id = storage.get_study_id_from_name(name)
    stored = wait_for_settings(study, storage)
    if stored is None:  # its creator died before queuing the budget: finish the job
        settings.n_trials = budget(None, None)
        queued = _top_up(study, storage, study_id, settings, settings.n_trials)
        _warm_start(study, settings, copies)
        settings.warm_start = recount_copies(study) or settings.warm_start  # copies its creator added before it died
        settings.save(study)
        return study, settings, f"finished creating study {name!r} (budget {settings.n_trials}, {queued} trials queued)"
    if stored.objectives != settings.objectives:
        raise UserError(
            f"study {name!r} optimises {','.join(stored.objectives)}, not {','.join(settings.objectives)}; "
            f"pass --objectives {','.join(stored.objectives)} or a new --study name"
        )
    new_budget = budget(stored, budget_view(storage, study_id, stored.n_trials or 0))
    if new_budget != stored.n_trials:
        stored.n_trials = new_budget
        stored.save(study)
    queued = _top_up(study, storage, study_id, stored, new_budget)
    if data_source and "data_source" not in study.user_attrs:
        study.set_user_attr("data_source", data_source)
    account = f"study {name!r} exists: {budget_view(storage, study_id, new_budget).describe()}"
    if queued:
        account += f"; queued {queued} more"
    return study, stored, account


def _warm_start(study: optuna.Study, settings: StudySettings, copies: Sequence[FrozenTrial]) -> str:
    if not copies or not settings.warm_start:
        return ""
    copy_trials(study, settings.warm_start, copies)
    return f"; seeded with {len(copies)} finished trials copied from {settings.warm_start!r} (not counted in its budget or best)"


def _top_up(study: optuna.Study, storage: BaseStorage, study_id: int, settings: StudySettings, budget: int) -> int:
    """Queue what the budget lacks (finished + running + waiting short of it); returns how many."""
    view = budget_view(storage, study_id, budget)
    missing = budget - view.finished - view.in_flight
    if missing > 0:
        first = not any(t.user_attrs.get("published_baseline") for t in study.get_trials(deepcopy=False))
        queue_budget(study, settings, missing, baseline=first)
    return max(0, missing)


def _creator() -> dict[str, Any]:
    """Who is creating a study: a later command on the same machine sees at once whether it died."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _creator_died(record: Any) -> bool:
    """True if the recorded creator ran on this machine and is gone (Ctrl-C, a kill); unknown elsewhere."""
    if not isinstance(record, dict) or record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(record["pid"]), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError):  # alive under another user, or a record not ours
        pass
    return False


def is_half_made(storage: BaseStorage, study_id: int) -> bool:
    """A study whose creator has not (yet) written its settings."""
    return not storage.get_study_user_attrs(study_id).get(ATTR) and CREATING_ATTR in storage.get_study_system_attrs(study_id)


def wait_for_settings(study: optuna.Study, storage: BaseStorage, seconds: float = SETTINGS_WAIT_S) -> StudySettings | None:
    """The study's settings; None if a crashed creator left it half made. Waits for a concurrent creator."""
    study_id = storage.get_study_id_from_name(study.study_name)
    deadline = time.monotonic() + seconds
    marked_by = time.monotonic() + MARK_WAIT_S  # a creator marks its empty study right after creating it
    while True:
        attrs = storage.get_study_user_attrs(study_id)
        if attrs.get(ATTR):
            return StudySettings.from_dict(attrs[ATTR], study.study_name)
        system = storage.get_study_system_attrs(study_id)
        if CREATING_ATTR not in system and (time.monotonic() > marked_by or storage.get_n_trials(study_id) > 0):
            return StudySettings.load(study)  # raises: a study that mnist-hpo did not make
        if CREATING_ATTR in system and (_creator_died(system[CREATING_ATTR]) or time.monotonic() > deadline):
            return None
        time.sleep(0.1 if CREATING_ATTR not in system else 0.5)
