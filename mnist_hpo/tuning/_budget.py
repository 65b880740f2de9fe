"""The global budget of a study, kept as trials: a worker only ever takes a queued (WAITING) trial.

A study queues N trials when it is created, the published baseline first, and records N in its
settings. Workers never queue a trial beyond N, so however many join or leave, no more than N run. A trial
that fails is replaced by a new waiting one (a retry with its parameters, or a fresh trial), so the
finished trials (COMPLETE + PRUNED) add up to exactly N. Raising the budget queues more.

The recorded budget is the truth and the queue follows it: a raise is one write, made before its
trials are queued, so a raise cut short (Ctrl-C, a kill) has already asked for what it asked; any
later command that opens the study (`search`, `study create`, `worker`) queues what it lacks, and
the interrupted command's line names one that does so without raising the budget twice.
"""

from __future__ import annotations

import contextlib
import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from mnist_hpo import storage as stores
from mnist_hpo.console import plural
from mnist_hpo.deadline import NEVER, Deadline
from mnist_hpo.errors import SearchInterrupted, UserError
from mnist_hpo.signals import Interrupts
from mnist_hpo.tuning._owner import process_gone, this_process
from mnist_hpo.tuning.attrs import CREATING_ATTR, DATA_SOURCE_ATTR, PUBLISHED_BASELINE_ATTR, REPLACES_ATTR, RETRY_OF_ATTR, SETTINGS_ATTR
from mnist_hpo.tuning.copies import copied_counts, copy_trials, own_trials, recount_copies
from mnist_hpo.tuning.settings import StudySettings, check_study_name
from mnist_hpo.tuning.space import Space

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
    """Queue ``count`` waiting trials: the published configuration first when ``baseline`` (and the study has one), then free ones."""
    for index in range(count):
        if index == 0 and baseline and settings.baseline:
            study.enqueue_trial(Space.from_dict(settings.space).published(), user_attrs={PUBLISHED_BASELINE_ATTR: True})
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
    deadline: Deadline = NEVER,
    finish: str | None = None,
) -> tuple[optuna.Study, StudySettings, str]:
    """Create study ``name`` with its budget queued, or bring an existing one to the budget ``budget()`` says.

    ``budget(stored, view)`` gets the stored settings and trial counts (None, None for a new study)
    and returns the budget to have. Safe to run from several processes at once: one creates, the
    others wait for its settings. ``copies``: a new study's warm start, trials of the study
    ``settings.warm_start`` (added after the budget, so trial 0 is still the published baseline).
    ``deadline`` (the command's --timeout): waiting for the study's lock or its creator past it is a
    one-line UserError, raised before anything is written. ``finish``: for a command that adds to a
    budget (`search --n-trials N`), the command that tops a study up to its recorded budget without
    adding again, which an interrupted raise names (None: the command sets the budget, so the same
    command again finishes the job). Returns the study, its settings and a one-line account.
    """
    refuse_through_proxy(storage, name)
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        check_study_name(name)  # a new study only: one made by an older release keeps its name
    with _continuable(storage, name, finish) as change, stores.study_lock(storage, name, deadline=deadline):  # one budget change at a time
        return _ensure(storage, name, settings, budget, data_source, copies, deadline, change)


def check_objectives(name: str, stored: StudySettings, asked: StudySettings) -> None:
    """An existing study keeps what it optimises: another --objectives is a one-line error, not a second study's values."""
    if stored.objectives != asked.objectives:
        raise UserError(
            f"study {name!r} optimises {','.join(stored.objectives)}, not {','.join(asked.objectives)}; "
            f"pass --objectives {','.join(stored.objectives)} or a new --study name"
        )


def refuse_through_proxy(storage: BaseStorage | str, name: str) -> None:
    """A budget change through a gRPC proxy is refused before anything is written: the proxy cannot hold the study's lock.

    Optuna's proxy serves single storage calls, no lock and no transaction, so two commands changing
    a budget through it would both read the old one and both queue. The storage behind the proxy has
    the lock; workers only take trials, so they join through the proxy. ``storage``: the storage, or
    its URL (a command checks before opening anything).
    """
    if isinstance(storage, str):
        if not storage.startswith("grpc://"):
            return
        proxy = storage
    elif isinstance(storage, optuna.storages.GrpcStorageProxy):
        proxy = stores.describe(storage)
    else:
        return
    raise UserError(
        f"the budget of study {name!r} cannot be set through the gRPC proxy {proxy} (it cannot hold the study's lock, so "
        "two commands could both queue): run this command with the proxy's own --storage URL, then join workers with "
        f"`mnist-hpo worker --study {shlex.quote(name)} --storage {proxy}`"
    )


@dataclass
class _Change:
    """What a budget change was doing when it was interrupted, so that its message names what finishes it."""

    creating: bool = False  # this command created the study, or was finishing a half-made one
    existed: bool = False  # the study had its settings: ``before`` is the budget this command found
    before: int | None = None
    topping_up: bool = False  # only queueing what the recorded budget lacks (a worker)


@contextlib.contextmanager
def _continuable(storage: BaseStorage, name: str, finish: str | None, topping_up: bool = False) -> Iterator[_Change]:
    """Ctrl-C or SIGTERM while a budget is queued: exit 130 with one line naming the command that finishes the job.

    A signal inside Optuna or SQLAlchemy may come back as another error (a commit cut short, a
    journal lock's RuntimeError): once a signal fired, any error here is that interrupt.
    """
    change = _Change(topping_up=topping_up)
    interrupts = Interrupts()
    with interrupts.installed():
        try:
            yield change
        except (KeyboardInterrupt, Exception) as exc:
            if not isinstance(exc, KeyboardInterrupt) and not interrupts.fired:
                raise
            raise SearchInterrupted(_interrupted(storage, name, change, finish)) from None


def _interrupted(storage: BaseStorage, name: str, change: _Change, finish: str | None) -> str:
    """The interrupted command's line: what the storage holds now decides which command finishes the job.

    The same command again, unless that would change the budget a second time: an interrupted
    `search --n-trials N` on an existing study had already recorded its raise (the budget is written
    before its trials are queued), so ``finish``, which tops up to the recorded budget, completes it.
    """
    head = f"interrupted while queueing the budget of study {name!r}"
    try:
        recorded = (storage.get_study_user_attrs(storage.get_study_id_from_name(name)).get(SETTINGS_ATTR) or {}).get("n_trials")
    except KeyError:  # not created yet
        recorded = None
    except Exception:  # the storage is out of reach: what was written is unknown
        return f"{head}; check it with `mnist-hpo status --study {name}` before running a command on it again"
    if finish is not None and recorded is not None:
        if change.topping_up:
            return f"{head}; `{finish}` queues the rest"
        if change.existed and recorded != change.before:
            return (
                f"{head}, already raised to {recorded} trials; `{finish}` queues the rest and continues "
                "(the same command again would raise it further)"
            )
        if change.creating and not change.existed:
            return f"interrupted after creating study {name!r} with its budget of {recorded} trials queued; continue it with `{finish}`"
    return f"{head}; run the same command again to finish it"


def _ensure(
    storage: BaseStorage,
    name: str,
    settings: StudySettings,
    budget: BudgetRule,
    data_source: str | None,
    copies: Sequence[FrozenTrial],
    deadline: Deadline,
    change: _Change,
) -> tuple[optuna.Study, StudySettings, str]:
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=settings.directions)
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
    else:
        change.creating = True
        study_id = storage.get_study_id_from_name(name)
        storage.set_study_system_attr(study_id, CREATING_ATTR, this_process())
        settings.n_trials = budget(None, None)
        queue_budget(study, settings, settings.n_trials, baseline=True)
        warm = _warm_start(study, settings, copies)
        if data_source:
            study.set_user_attr(DATA_SOURCE_ATTR, data_source)
        settings.save(study)  # last: a study with settings has its whole budget queued
        first = (
            f"trial 0 is the published {settings.profile} baseline" if settings.baseline else "no baseline trial: every trial is searched"
        )
        return study, settings, f"created study {name!r} with a budget of {settings.n_trials} trials ({first}){warm}"

    study_id = storage.get_study_id_from_name(name)
    stored = wait_for_settings(study, storage, deadline=deadline)
    if stored is None:  # its creator died before queuing the budget or copying the warm start: finish the job
        change.creating = True
        settings.n_trials = budget(None, None)
        return _finish_creation(study, storage, settings, data_source, copies)
    change.existed, change.before = True, stored.n_trials
    check_objectives(name, stored, settings)
    new_budget = budget(stored, budget_view(storage, study_id, stored.n_trials or 0))
    if new_budget != stored.n_trials:
        stored.n_trials = new_budget
        stored.save(study)
    queued = _top_up(study, storage, study_id, stored, new_budget)
    if data_source and DATA_SOURCE_ATTR not in study.user_attrs:
        study.set_user_attr(DATA_SOURCE_ATTR, data_source)
    account = f"study {name!r} exists: {budget_view(storage, study_id, new_budget).describe()}"
    if queued:
        account += f"; queued {queued} more"
    return study, stored, account


def _finish_creation(
    study: optuna.Study, storage: BaseStorage, settings: StudySettings, data_source: str | None, copies: Sequence[FrozenTrial]
) -> tuple[optuna.Study, StudySettings, str]:
    """Finish a study whose creator stopped half way: its budget queued and each trial of its warm start copied, once.

    The creator queued the budget before copying, and each copy is one write; copies already there
    are recounted first, so they are never taken for finished trials of the budget.
    """
    name = study.study_name
    present = recount_copies(study)  # the warm start's source, if its creator had begun copying
    if present is not None and present != (settings.warm_start if copies else None):
        raise UserError(
            f"study {name!r} was being warm-started from {present!r} when its creator stopped; finish it with the "
            f"command that created it (--warm-start {present}), or pick a new --study name"
        )
    queued = _top_up(study, storage, storage.get_study_id_from_name(name), settings, settings.n_trials or 0)
    warm = _warm_start(study, settings, copies)
    settings.warm_start = present or settings.warm_start
    if data_source:
        study.set_user_attr(DATA_SOURCE_ATTR, data_source)
    settings.save(study)  # last, as in a creation: a study with settings is whole
    return study, settings, f"finished creating study {name!r} (budget {settings.n_trials}, {queued} trials queued){warm}"


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
        first = not any(t.user_attrs.get(PUBLISHED_BASELINE_ATTR) for t in study.get_trials(deepcopy=False))
        queue_budget(study, settings, missing, baseline=first)
    return max(0, missing)


def queue_missing(
    study: optuna.Study, storage: BaseStorage, settings: StudySettings, finish: str | None = None, deadline: Deadline = NEVER
) -> int:
    """A worker's part after an interrupted budget raise: queue what the recorded budget lacks, never a trial beyond it.

    Counted under the budget lock from one read of the study's own trials. A failed trial whose
    replacement is not queued yet keeps its place: a dead worker's trial is failed and re-queued
    outside the lock, perhaps at this moment (a place whose failer died there is left to `search` or
    `study create`). Through a gRPC proxy, which has no lock, a worker queues nothing (the engine
    then says to run `study create` on the storage behind it). ``finish``: the command an interrupt
    here names (default: the same command). ``deadline``: the worker's --timeout; the lock still held by
    another command then is a one-line UserError.
    """
    if not isinstance(storage, (RDBStorage, JournalStorage)):  # no budget lock: two workers would both queue
        return 0
    name = study.study_name
    view = budget_view(storage, storage.get_study_id_from_name(name), settings.n_trials or 0)
    if view.finished + view.in_flight >= view.budget:
        return 0  # the usual case: one count, no lock
    with _continuable(storage, name, finish, topping_up=True), stores.study_lock(storage, name, deadline=deadline):
        trials = own_trials(study.get_trials(deepcopy=False))
        replaced = {t.user_attrs.get(key) for t in trials for key in (RETRY_OF_ATTR, REPLACES_ATTR)}
        held = sum(t.state != TrialState.FAIL or t.number not in replaced for t in trials)
        missing = (StudySettings.load(study).n_trials or 0) - held  # as recorded now: a raise may have come meanwhile
        if missing > 0:
            queue_budget(study, settings, missing, baseline=not any(t.user_attrs.get(PUBLISHED_BASELINE_ATTR) for t in trials))
        return max(0, missing)


def is_half_made(storage: BaseStorage, study_id: int) -> bool:
    """A study whose creator has not (yet) written its settings."""
    return not storage.get_study_user_attrs(study_id).get(SETTINGS_ATTR) and CREATING_ATTR in storage.get_study_system_attrs(study_id)


def wait_for_settings(
    study: optuna.Study, storage: BaseStorage, seconds: float = SETTINGS_WAIT_S, deadline: Deadline = NEVER
) -> StudySettings | None:
    """The study's settings; None if a crashed creator left it half made. Waits for a concurrent creator.

    A creator silent for ``seconds`` is presumed dead; a command whose ``deadline`` comes first gives
    up waiting with a one-line UserError (it has written nothing yet).
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    presumed_dead = time.monotonic() + seconds
    marked_by = time.monotonic() + MARK_WAIT_S  # a creator marks its empty study right after creating it
    while True:
        attrs = storage.get_study_user_attrs(study_id)
        if attrs.get(SETTINGS_ATTR):
            return StudySettings.from_dict(attrs[SETTINGS_ATTR], study.study_name)
        system = storage.get_study_system_attrs(study_id)
        if CREATING_ATTR not in system and (time.monotonic() > marked_by or storage.get_n_trials(study_id) > 0):
            return StudySettings.load(study)  # raises: a study that mnist-hpo did not make
        if CREATING_ATTR in system and (process_gone(system[CREATING_ATTR]) or time.monotonic() > presumed_dead):
            return None
        if deadline.passed:
            raise UserError(
                f"study {study.study_name!r} is being created by another command{_who(system.get(CREATING_ATTR))}; gave up at "
                "--timeout and changed nothing: run this command again when that one finishes"
            )
        time.sleep(min(0.1 if CREATING_ATTR not in system else 0.5, deadline.left()))


def _who(record: Any) -> str:
    """Who is creating a study, as ' (pid P on HOST)' from its record; '' without one."""
    if isinstance(record, dict) and "pid" in record and "host" in record:
        return f" (pid {record['pid']} on {record['host']})"
    return ""
