"""Workers: processes that share one study through its storage and stop at its global trial budget.

The budget lives in the study as trials. A study made for workers (`mnist-hpo study create`, or
`search --workers K`) queues N trials (state WAITING) when it is created, the published baseline
first, and records N in its settings. A worker only ever *takes* a waiting trial (WAITING ->
RUNNING is one atomic update in every Optuna storage, so exactly one worker wins it) and never
creates one, so however many workers join or leave, no more than N trials ever run. A trial that
fails is replaced by a new waiting one: a dead worker's trial by a retry with the same parameters
that resumes from its last checkpoint, any other failure by a fresh trial. So the finished trials
(COMPLETE + PRUNED) add up to exactly N, and each worker stops when they do.

Dead workers. On SQL storages Optuna's heartbeats are used: a worker's trial records a heartbeat
every --heartbeat-interval seconds, and a RUNNING trial silent for --grace-period seconds is marked
FAIL by whichever worker looks first, which re-queues it (RetryDeadTrial, up to --max-retries times,
then a fresh trial). Journal and gRPC storages have no heartbeat table; there the heartbeat is a
trial system attribute with the same interval and grace.

Signals. SIGTERM (how Kubernetes and Slurm stop work) is handled like Ctrl-C: the running trial is
marked FAIL with the reason and re-queued with its parameters, so the next worker resumes it from
its checkpoint; the worker exits with status 130.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from mnist_hpo import storage
from mnist_hpo.console import console, progress
from mnist_hpo.data import Splits, load_splits
from mnist_hpo.signals import sigterm_as_interrupt
from mnist_hpo.errors import SearchInterrupted, StorageUnavailable, UserError
from mnist_hpo.search.objective import Objective, resume_key
from mnist_hpo.search.profiles import get_profile
from mnist_hpo.search.runner import (
    SearchRequest,
    make_pruner,
    make_sampler,
    new_settings,
    _print_outcome as print_outcome,
    quiet_optuna,
    trial_line,
)
from mnist_hpo.search.settings import ATTR, StudySettings
from mnist_hpo.search.space import Space
from mnist_hpo.trainer import resolve_device

HEARTBEAT_S = 10
GRACE_FACTOR = 6  # default grace period: six missed heartbeats
MAX_RETRIES = 3
MAX_FAILURES_IN_A_ROW = 3  # a worker whose trials keep failing stops instead of burning the budget's retries
THREADS_ENV = "MNIST_HPO_THREADS"  # CPU threads per worker process, set by the launcher
HEARTBEAT_ATTR = "mnist_hpo:heartbeat"  # journal and gRPC storages: seconds since the epoch
CREATING_ATTR = "mnist_hpo:creating"  # study system attribute while its budget is being queued
SETTINGS_WAIT_S = 60  # how long a worker waits for a study that another process is still creating
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# --- requests and settings ------------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    """Heartbeat interval, grace period and retries, checked once."""

    heartbeat_interval: int = HEARTBEAT_S
    grace_period: int | None = None  # default: GRACE_FACTOR heartbeats
    max_retries: int = MAX_RETRIES

    def validated(self) -> Faults:
        if self.heartbeat_interval < 1:
            raise UserError(f"--heartbeat-interval must be at least 1 second, got {self.heartbeat_interval}")
        grace = self.grace_period if self.grace_period is not None else GRACE_FACTOR * self.heartbeat_interval
        if grace <= self.heartbeat_interval:
            raise UserError(
                f"--grace-period ({grace} s) must be longer than --heartbeat-interval ({self.heartbeat_interval} s), "
                "or every slow heartbeat fails a healthy trial"
            )
        if self.max_retries < 0:
            raise UserError(f"--max-retries must be 0 or more, got {self.max_retries}")
        return replace(self, grace_period=grace)

    def cli_args(self) -> list[str]:
        return [
            "--heartbeat-interval", str(self.heartbeat_interval),
            "--grace-period", str(self.grace_period),
            "--max-retries", str(self.max_retries),
        ]


@dataclass
class WorkerRequest:
    study: str
    storage: str | None = None
    artifacts: Path | None = None
    device: str = "auto"
    seed: int | None = None
    timeout: float | None = None
    workers: int | None = None
    gpus: str | None = None
    trials_per_gpu: int | None = None
    heartbeat_interval: int = HEARTBEAT_S
    grace_period: int | None = None
    max_retries: int = MAX_RETRIES


def faults_of(request: SearchRequest | WorkerRequest) -> Faults:
    return Faults(request.heartbeat_interval, request.grace_period, request.max_retries).validated()


# --- the budget, as waiting trials ----------------------------------------------------------


class RetryDeadTrial:
    """Optuna's heartbeat-stale callback: re-queue a dead worker's trial with the same parameters.

    Records "failed_trial" and "retry_history" in the retry's system attributes exactly as
    optuna.storages.RetryHeartbeatStaleTrialCallback does (the objective reads the history to resume
    from the dead trial's checkpoint), plus user attributes "retry_of" and "retry_history" for people.
    Past `max_retries` the trial is given up; with `keep_budget` a fresh trial takes its place.
    """

    def __init__(self, max_retries: int = MAX_RETRIES, keep_budget: bool = True) -> None:
        self.max_retries = max_retries
        self.keep_budget = keep_budget

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        requeue(study, trial, self.max_retries, self.keep_budget)


def requeue(study: optuna.Study, trial: FrozenTrial, max_retries: int, keep_budget: bool = True) -> str:
    """Queue the retry of failed `trial` (or a fresh trial once it ran out of retries); says which."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > max_retries:
        if not keep_budget:
            return f"trial {trial.number} ran out of retries ({max_retries})"
        study.enqueue_trial({}, user_attrs={"replaces": trial.number})
        return f"trial {trial.number} ran out of retries ({max_retries}); a fresh trial takes its place"
    user_attrs: dict[str, Any] = {"retry_of": trial.number, "retry_history": history}
    if trial.user_attrs.get("published_baseline"):
        user_attrs["published_baseline"] = True
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=user_attrs,
            system_attrs={"failed_trial": history[0], "retry_history": history},
        )
    )
    return f"trial {trial.number} re-queued (retry {len(history)} of {max_retries})"


def queue_budget(study: optuna.Study, settings: StudySettings, count: int, baseline: bool) -> None:
    """Queue `count` waiting trials: the published configuration first when `baseline`, then free ones."""
    for index in range(count):
        if index == 0 and baseline:
            study.enqueue_trial(Space.from_dict(settings.space).published(), user_attrs={"published_baseline": True})
        else:
            study.enqueue_trial({})


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

    def describe(self) -> str:
        c = self.counts
        return (
            f"budget {self.budget} trials: {self.finished} finished ({c[TrialState.COMPLETE]} complete, "
            f"{c[TrialState.PRUNED]} pruned), {c[TrialState.RUNNING]} running, {c[TrialState.WAITING]} waiting, "
            f"{c[TrialState.FAIL]} failed (not counted)"
        )


def _sql(study: optuna.Study) -> Any:
    """The study's SQL storage when it offers the workers' cheap queries (see storage.open_storage), else None."""
    backend = getattr(study._storage, "_backend", study._storage)
    return backend if hasattr(backend, "count_trial_states") else None


def budget_view(study: optuna.Study, budget: int) -> BudgetView:
    return _snapshot(study, budget)[0]


def _snapshot(study: optuna.Study, budget: int) -> tuple[BudgetView, list[FrozenTrial] | None]:
    """Trial counts, plus the trials themselves where reading them was the only way to count."""
    sql = _sql(study)
    if sql is not None:  # one GROUP BY instead of loading every queued trial
        return BudgetView(budget, Counter(sql.count_trial_states(study._study_id))), None
    trials = study.get_trials(deepcopy=False)
    return BudgetView(budget, Counter(t.state for t in trials)), trials


def _make_known(study: optuna.Study, trial_id: int, number: int) -> None:
    """Put a trial taken by id into the cache of Optuna's cached SQL storage, which set_trial_param needs.

    The public way is study.get_trials(), which re-reads every unfinished trial: the whole queue. The
    cache only needs the id and number here; the trial itself is read again at the cache's next read
    (its id is above every trial the cache had finished when it was created, or it is listed unfinished).
    """
    if _sql(study) is None:
        return
    cached = study._storage
    try:
        frozen = optuna.trial.FrozenTrial(
            number=number, state=TrialState.RUNNING, value=None, datetime_start=None, datetime_complete=None, params={},
            distributions={}, user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=trial_id,
        )
        with cached._lock:
            if study._study_id in cached._studies:
                cached._add_trials_to_cache(study._study_id, [frozen])
                return
    except AttributeError:  # another Optuna's cache: fall back to the public read
        pass
    study.get_trials(deepcopy=False)


def waiting_trials(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[tuple[int, int, bool]]:
    """(trial id, number, goes first) of the study's WAITING trials: retries, and the lowest numbers (trial 0, the baseline), first."""
    sql = _sql(study)
    if sql is not None:
        return sql.waiting_trial_ids(study._study_id)
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    return [(t._trial_id, t.number, bool(t.system_attrs.get("retry_history") or t.user_attrs.get("published_baseline")))
            for t in sorted(waiting, key=lambda t: t.number)]


def _top_up(study: optuna.Study, settings: StudySettings, budget: int) -> int:
    """Queue what the budget lacks (finished + running + waiting short of it); returns how many."""
    view = budget_view(study, budget)
    missing = budget - view.finished - view.in_flight
    if missing > 0:
        first = not any(t.user_attrs.get("published_baseline") for t in study.get_trials(deepcopy=False))
        queue_budget(study, settings, missing, baseline=first)
    return max(0, missing)


def _wait_for_settings(study: optuna.Study, seconds: float = SETTINGS_WAIT_S) -> StudySettings | None:
    """The study's settings; None if a crashed `study create` left it half made. Waits for a concurrent creator."""
    deadline = time.monotonic() + seconds
    while True:
        attrs = study._storage.get_study_user_attrs(study._study_id)
        if attrs.get(ATTR):
            return StudySettings(**attrs[ATTR])
        creating = CREATING_ATTR in study._storage.get_study_system_attrs(study._study_id)
        if not creating:
            return StudySettings.load(study)  # raises: a study that mnist-hpo did not make
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)


def ensure_budget_study(
    rdb: BaseStorage,
    name: str,
    settings: StudySettings,
    *,
    budget: Callable[[StudySettings | None, BudgetView | None], int],
    data_source: str | None = None,
) -> tuple[optuna.Study, StudySettings, str]:
    """Create study `name` with its budget queued, or bring an existing one to the budget `budget()` says.

    `budget(stored, view)` gets the stored settings and trial counts (None, None for a new study) and
    returns the budget to have. Safe to run from several processes at once: one creates, the
    others wait for its settings. Returns the study, its settings and a one-line account.
    """
    try:
        study = optuna.create_study(study_name=name, storage=rdb, directions=settings.directions)
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=rdb)
    else:
        study._storage.set_study_system_attr(study._study_id, CREATING_ATTR, True)
        settings.n_trials = budget(None, None)
        queue_budget(study, settings, settings.n_trials, baseline=True)
        if data_source:
            study.set_user_attr("data_source", data_source)
        settings.save(study)  # last: a study with settings has its whole budget queued
        return study, settings, f"created study {name!r} with a budget of {settings.n_trials} trials (trial 0 is the published {settings.profile} baseline)"

    stored = _wait_for_settings(study)
    if stored is None:  # its creator died before queuing the budget: finish the job
        settings.n_trials = budget(None, None)
        queued = _top_up(study, settings, settings.n_trials)
        settings.save(study)
        return study, settings, f"finished creating study {name!r} (budget {settings.n_trials}, {queued} trials queued)"
    if stored.objectives != settings.objectives:
        raise UserError(
            f"study {name!r} optimises {','.join(stored.objectives)}, not {','.join(settings.objectives)}; "
            f"pass --objectives {','.join(stored.objectives)} or a new --study name"
        )
    view = budget_view(study, stored.n_trials or 0)
    new_budget = budget(stored, view)
    queued = 0
    if new_budget != stored.n_trials:
        stored.n_trials = new_budget
        stored.save(study)
    queued = _top_up(study, stored, new_budget)
    if data_source and "data_source" not in study.user_attrs:
        study.set_user_attr("data_source", data_source)
    account = f"study {name!r} exists: {budget_view(study, new_budget).describe()}"
    if queued:
        account += f"; queued {queued} more"
    return study, stored, account


def create_study(request: SearchRequest) -> optuna.Study:
    """`mnist-hpo study create`: make a study for workers, or check and keep an existing one (idempotent)."""
    quiet_optuna()
    if request.n_trials is not None and request.n_trials < 1:
        raise UserError(f"--n-trials must be at least 1, got {request.n_trials}")
    if not request.study:
        raise UserError("--study NAME is required")
    has_gpu = request.device != "cpu" and torch.cuda.is_available()
    profile = get_profile(request.profile, has_gpu)
    settings = new_settings(request, profile)
    url = storage.resolve_url(request.storage)
    rdb = storage.open_storage(url)

    def budget(stored: StudySettings | None, view: BudgetView | None) -> int:
        if stored is None:
            return request.n_trials or profile.n_trials
        _check_same_study(request, stored, settings)
        if request.n_trials is None:
            if stored.n_trials is None:
                raise UserError(f"study {request.study!r} has no trial budget yet (a plain `mnist-hpo search` made it); pass --n-trials N")
            return stored.n_trials
        if stored.n_trials is not None and request.n_trials < stored.n_trials:
            raise UserError(f"study {request.study!r} already has a budget of {stored.n_trials} trials; a budget can be raised, not lowered")
        assert view is not None
        return max(request.n_trials, view.finished)

    study, settings, account = ensure_budget_study(rdb, request.study, settings, budget=budget)
    console.print(f"{account} in {storage.mask_url(url)}")
    console.print(f"profile {settings.profile}, objectives {','.join(settings.objectives)}, {settings.epochs} epochs max")
    shown = storage.mask_url(url)
    console.print(f"workers join with: mnist-hpo worker --storage '{shown}' --study {request.study}")
    return study


def _check_same_study(request: SearchRequest, stored: StudySettings, asked: StudySettings) -> None:
    """`study create` on an existing study: every option given must agree with what it recorded."""
    given = {
        "profile": request.profile, "epochs": request.epochs, "max_params": request.max_params, "seed": request.seed,
        "space": asked.space if request.space_file is not None else None,
    }
    if request.sampler != "tpe":
        given["sampler"] = request.sampler
    if request.pruner != "hyperband":
        given["pruner"] = request.pruner
    differ = [key for key, value in given.items() if value is not None and getattr(stored, key) != value]
    if differ:
        shown = ", ".join(f"{key} {getattr(stored, key)!r}" if key != "space" else "another space" for key in differ)
        raise UserError(f"study {request.study!r} exists with {shown}; leave those options out to keep it, or use another --study name")


# --- signals --------------------------------------------------------------------------------


class Interrupts:
    """SIGTERM and SIGINT raise KeyboardInterrupt once; inside `deferred()` they wait until it ends."""

    def __init__(self) -> None:
        self.fired = False
        self.pending: int | None = None
        self._defer = 0
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.fired:
            return  # the first signal is being handled: a second one must not cut the cleanup short
        if self._defer:
            self.pending = signum
            return
        self.fired = True
        raise KeyboardInterrupt(signal.Signals(signum).name)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupts]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handler)
        try:
            yield self
        finally:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1

    def raise_pending(self) -> None:
        if self.pending is not None and not self.fired:
            self.fired = True
            raise KeyboardInterrupt(signal.Signals(self.pending).name)


# --- heartbeats -----------------------------------------------------------------------------


class Heartbeats:
    """Heartbeats of this worker's trial, and the check that fails other workers' silent ones.

    SQL storages use Optuna's own (storage.record_heartbeat, optuna.storages.fail_stale_trials).
    Journal and gRPC storages get the same from a trial system attribute.
    """

    def __init__(self, study: optuna.Study, faults: Faults, on_dead: Callable[[optuna.Study, FrozenTrial], None]) -> None:
        from optuna.storages._heartbeat import is_heartbeat_enabled

        self.study = study
        self.faults = faults
        self.on_dead = on_dead
        self.native = is_heartbeat_enabled(study._storage)
        self._silent_since: dict[int, float] = {}

    def beat(self, trial_id: int) -> None:
        if self.native:
            self.study._storage.record_heartbeat(trial_id)
        else:
            self.study._storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    @contextlib.contextmanager
    def beating(self, trial_id: int) -> Iterator[None]:
        """Beat now, then every interval from a thread, until the block ends."""
        self.beat(trial_id)
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.faults.heartbeat_interval):
                try:
                    self.beat(trial_id)
                except Exception:  # the main thread meets the same storage error and reports it
                    pass

        thread = threading.Thread(target=loop, name=f"heartbeat-{trial_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=30)

    def fail_dead_trials(self) -> None:
        """Mark FAIL the RUNNING trials whose heartbeat stopped, and re-queue them (one worker wins each)."""
        for trial_id in self._dead_trial_ids():
            try:
                if not self.study._storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except UpdateFinishedTrialError:
                continue  # another worker failed it first, and re-queued it
            self.on_dead(self.study, self.study._storage.get_trial(trial_id))

    def _dead_trial_ids(self) -> list[int]:
        if self.native:  # Optuna's heartbeat table (what optuna.storages.fail_stale_trials reads)
            return list(self.study._storage._get_stale_trial_ids(self.study._study_id))
        now, mono = time.time(), time.monotonic()
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        ids = {t._trial_id for t in running}
        self._silent_since = {k: v for k, v in self._silent_since.items() if k in ids}
        dead = []
        for trial in running:
            last = trial.system_attrs.get(HEARTBEAT_ATTR)
            if isinstance(last, (int, float)):
                if now - last > self.faults.grace_period:
                    dead.append(trial._trial_id)
            elif mono - self._silent_since.setdefault(trial._trial_id, mono) > self.faults.grace_period:
                dead.append(trial._trial_id)  # taken but never beat: its silence is timed on this process's clock
        return dead


# --- one worker -----------------------------------------------------------------------------


def gpu_info(device: torch.device) -> dict[str, Any] | None:
    """Which GPU this process trains on: the CUDA_VISIBLE_DEVICES entry, name, UUID and memory."""
    if device.type != "cuda":
        return None
    index = device.index or 0
    props = torch.cuda.get_device_properties(index)
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return {
        "cuda_visible_devices": visible[index] if index < len(visible) else str(index),
        "name": props.name,
        "uuid": str(getattr(props, "uuid", "")),
        "memory_gib": round(props.total_memory / 2**30, 1),
    }


def free_cuda_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def worker_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class WorkerReport:
    ran: int = 0  # trials this worker took
    finished: int = 0  # of them, COMPLETE or PRUNED
    failed: int = 0
    dropped: int = 0  # runs thrown away: another worker had finished or failed the same trial meanwhile
    view: BudgetView | None = None


class Worker:
    """Take waiting trials of `study` and run `objective` on them until the study's budget is met."""

    def __init__(
        self,
        study: optuna.Study,
        objective: Callable[[optuna.Trial], Any],
        faults: Faults,
        *,
        label: str | None = None,
        gpu: dict[str, Any] | None = None,
        artifacts: Any = None,
        timeout: float | None = None,
        on_trial: Callable[[FrozenTrial], None] | None = None,
        on_poll: Callable[[BudgetView], None] | None = None,
        interrupts: Interrupts | None = None,
    ) -> None:
        self.study = study
        self.objective = objective
        self.faults = faults
        self.label = label or worker_label()
        self.gpu = gpu
        self.artifacts = artifacts
        self.timeout = timeout
        self.on_trial = on_trial or (lambda trial: None)
        self.on_poll = on_poll or (lambda view: None)
        self.interrupts = interrupts or Interrupts()
        # Idle polls: SQL storages count in one cheap query; journal and gRPC re-read the trials, so less often.
        self.poll_s = 0.5 if _sql(study) is not None else min(2.0, max(0.5, faults.heartbeat_interval / 2))
        self.heartbeats = Heartbeats(study, faults, RetryDeadTrial(faults.max_retries))
        self.report = WorkerReport()
        self._budget: int | None = None

    def budget(self, refresh: bool = False) -> int:
        if self._budget is None or refresh:
            settings = StudySettings.load(self.study)
            if settings.n_trials is None:
                raise UserError(
                    f"study {self.study.study_name!r} has no global trial budget (a plain `mnist-hpo search` made it); "
                    f"give it one with `mnist-hpo study create --study {self.study.study_name} --n-trials N`"
                )
            self._budget = settings.n_trials
        return self._budget

    def run(self) -> WorkerReport:
        started = time.monotonic()
        failures: list[str] = []
        stuck = 0
        checked = -float("inf")
        self.study.get_trials(deepcopy=False)  # fills the storage's cache once
        idle = False
        while True:
            if self.timeout is not None and time.monotonic() - started >= self.timeout:
                console.print(f"worker {self.label}: --timeout reached, starting no more trials")
                break
            if idle or time.monotonic() - checked >= self.faults.heartbeat_interval:
                self.heartbeats.fail_dead_trials()  # once a heartbeat interval is often enough to notice the dead
                checked = time.monotonic()
            view, trials = _snapshot(self.study, self.budget())
            if view.finished >= view.budget:
                view, trials = _snapshot(self.study, self.budget(refresh=True))  # raised meanwhile?
                if view.finished >= view.budget:
                    break
            self.report.view = view
            self.on_poll(view)
            with self.interrupts.deferred():  # a signal now would leave the taken trial RUNNING until its grace ends
                trial_id = self._take(trials)
            idle = trial_id is None
            if trial_id is None:
                self.interrupts.raise_pending()
                stuck = stuck + 1 if view.in_flight == 0 else 0
                if stuck >= 5:  # several polls apart: not a retry being queued right now
                    raise UserError(
                        f"study {self.study.study_name!r} cannot reach its budget: {view.describe()}, and nothing is "
                        f"queued; queue the missing trials with `mnist-hpo study create --study {self.study.study_name}`"
                    )
                time.sleep(self.poll_s)
                continue
            stuck = 0
            reason = self._run(trial_id)
            if reason is None:
                failures.clear()
                continue
            failures.append(reason)
            if len(failures) >= MAX_FAILURES_IN_A_ROW:
                raise UserError(
                    f"worker {self.label} stops: its last {len(failures)} trials failed ({failures[-1]}); "
                    "their places in the budget were re-queued for other workers"
                )
        self.report.view = budget_view(self.study, self.budget())
        return self.report

    def _take(self, trials: list[FrozenTrial] | None = None) -> int | None:
        """Atomically turn one WAITING trial RUNNING: retries and the baseline first, then any, from a random start."""
        sql = _sql(self.study)
        if sql is not None:  # one conditional UPDATE
            taken = sql.take_waiting_trial(self.study._study_id)
            if taken is None:
                return None
            _make_known(self.study, *taken)
            return taken[0]
        waiting = waiting_trials(self.study, trials)
        first = [(trial_id, number) for trial_id, number, priority in waiting if priority or number == 0]
        rest = [(trial_id, number) for trial_id, number, priority in waiting if not (priority or number == 0)]
        if rest:
            start = random.randrange(len(rest))  # workers starting together do not all race for the same trial
            rest = rest[start:] + rest[:start]
        for trial_id, number in first + rest:
            try:
                if self.study._storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                    _make_known(self.study, trial_id, number)
                    return trial_id
            except UpdateFinishedTrialError:
                continue
        return None

    def _run(self, trial_id: int) -> str | None:
        """Run one taken trial to its end; returns the failure reason, or None."""
        study = self.study
        study._thread_local.cached_all_trials = None  # samplers and pruners see the storage as it is now
        self.report.ran += 1
        state: TrialState | None = None
        values: Any = None
        reason: str | None = None
        interrupted = False
        trial: optuna.Trial | None = None
        with contextlib.ExitStack() as stack:
            with self.interrupts.deferred():
                stack.enter_context(self.heartbeats.beating(trial_id))
            try:
                self.interrupts.raise_pending()
                trial = optuna.Trial(study, trial_id)
                trial.set_user_attr("worker", self.label)
                if self.gpu:
                    trial.set_user_attr("gpu", self.gpu)
                values = self.objective(trial)
                state = TrialState.COMPLETE
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except KeyboardInterrupt as exc:
                state, interrupted = TrialState.FAIL, True
                reason = f"interrupted by {exc.args[0] if exc.args else 'Ctrl-C'}; re-queued to resume from its checkpoint"
            except StorageUnavailable:
                raise  # the trial stays RUNNING; its heartbeat stops and another worker retries it
            except UpdateFinishedTrialError:
                self._dropped(trial_id)
                return None
            except torch.cuda.OutOfMemoryError as exc:
                state = TrialState.FAIL
                reason = _first_line(exc)
                if not reason.startswith("CUDA out of memory"):
                    reason = "CUDA out of memory: " + reason
            except Exception as exc:
                state = TrialState.FAIL
                reason = f"{type(exc).__name__}: {_first_line(exc)}"
        if reason and reason.startswith("CUDA out of memory"):
            free_cuda_memory()  # after the except block: the traceback no longer holds the tensors
        if state == TrialState.FAIL:
            frozen = study._storage.get_trial(trial_id)
            failed = self._fail(frozen, reason or "failed")
            if failed and interrupted:
                requeue(study, frozen, self.faults.max_retries)
            elif failed:
                study.enqueue_trial({}, user_attrs={"replaces": frozen.number})
            self.on_trial(study._storage.get_trial(trial_id))
            if interrupted:
                raise KeyboardInterrupt
            return reason
        assert trial is not None
        try:
            told = study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
        except (UpdateFinishedTrialError, ValueError) as exc:
            if isinstance(exc, ValueError) and not str(exc).startswith("Cannot tell a"):
                raise
            self._dropped(trial_id)  # another worker failed it meanwhile (and re-queued it)
            return None
        if told.state == TrialState.FAIL:  # the objective returned NaN or a wrong number of values
            study.enqueue_trial({}, user_attrs={"replaces": told.number})
            self.on_trial(told)
            return "the objective returned no valid value"
        self.report.finished += 1
        self._forget_resume_states(told)
        self.on_trial(told)
        return None

    def _fail(self, frozen: FrozenTrial, reason: str) -> bool:
        """Mark the trial FAIL with its reason; False if it had already finished (failed by another worker)."""
        try:
            self.study._storage.set_trial_system_attr(frozen._trial_id, "fail_reason", reason)
            self.study._storage.set_trial_user_attr(frozen._trial_id, "fail_reason", reason)
            self.study.tell(frozen.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, ValueError) as exc:
            if isinstance(exc, ValueError) and not str(exc).startswith("Cannot tell a"):
                raise
            return False
        self.report.failed += 1
        return True

    def _dropped(self, trial_id: int) -> None:
        self.report.dropped += 1
        number = self.study._storage.get_trial(trial_id).number
        console.print(f"trial {number} was finished by another worker meanwhile (its heartbeat looked dead to them, or the storage let two workers take it); dropping this run")

    def _forget_resume_states(self, trial: FrozenTrial) -> None:
        """A retry that finished no longer needs the checkpoints of the trials it replaced."""
        if self.artifacts is None:
            return
        for number in trial.system_attrs.get("retry_history", []):
            try:
                self.artifacts.remove(resume_key(self.study.study_name, number))
            except Exception:
                pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


# --- `mnist-hpo worker` and `search --workers` ----------------------------------------------


def _set_threads() -> None:
    threads = os.environ.get(THREADS_ENV, "").strip()
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def open_worker_storage(url: str, faults: Faults, must_exist: bool = True) -> BaseStorage:
    return storage.open_storage(
        url,
        must_exist=must_exist,
        heartbeat_interval=faults.heartbeat_interval,
        grace_period=faults.grace_period,
        failed_trial_callback=RetryDeadTrial(faults.max_retries),
    )


def work(
    url: str,
    study_name: str,
    faults: Faults,
    *,
    device: str = "auto",
    artifacts: Path | None = None,
    seed: int | None = None,
    timeout: float | None = None,
    splits: Splits | None = None,
    quiet: bool = False,
) -> WorkerReport:
    """Run one worker in this process against an existing study until its budget is met."""
    _set_threads()
    target = resolve_device(device)
    rdb = open_worker_storage(url, faults)
    study = storage.load_study(rdb, study_name)
    settings = _wait_for_settings(study)
    if settings is None:
        raise UserError(f"study {study_name!r} is still being created (or its creator died); run `mnist-hpo study create --study {study_name}` again")
    if settings.n_trials is None:
        raise UserError(
            f"study {study_name!r} has no global trial budget (a plain `mnist-hpo search` made it); "
            f"give it one with `mnist-hpo study create --study {study_name} --n-trials N`"
        )
    if splits is None:
        splits = load_splits(settings.data, subset=settings.train_subset, log=console.print)
    if settings.data_digest and splits.digest != settings.data_digest:
        raise UserError(f"this worker's {settings.data} data (sha256 {splits.digest}) differ from the study's ({settings.data_digest}); fetch the same MNIST")
    if "data_source" not in study.user_attrs:
        study.set_user_attr("data_source", f"{splits.source} ({len(splits.train):,} train / {len(splits.val):,} validation, sha256 {splits.digest})")
    sampler = make_sampler(settings.sampler, seed, settings.multi_objective, constant_liar=True)
    study = storage.load_study(rdb, study_name, sampler=sampler, pruner=make_pruner(settings.pruner, settings.epochs))
    store = storage.open_artifacts(artifacts)
    objective = Objective(settings, splits, target, store, seed=settings.seed or 0)
    label = worker_label()
    gpu = gpu_info(target)
    where = f"on {target}" + (f" ({gpu['name']}, CUDA_VISIBLE_DEVICES={gpu['cuda_visible_devices']})" if gpu else f", {torch.get_num_threads()} CPU threads")
    console.print(
        f"worker {label} joined study {study_name!r} in {storage.describe_storage(rdb)} {where}; "
        f"heartbeat every {faults.heartbeat_interval} s, grace {faults.grace_period} s, up to {faults.max_retries} retries"
    )
    interrupts = Interrupts()
    with interrupts.installed(), progress() as bar:
        task = bar.add_task("trials", total=None, timeout=timeout)

        def on_poll(view: BudgetView) -> None:
            bar.update(task, total=view.budget, completed=view.finished)

        def on_epoch(trial: optuna.Trial, report: Any) -> None:
            bar.update(task, description=f"trial {trial.number} epoch {report.epoch}/{settings.epochs} (validation {100 * report.val_accuracy:.2f}%)")

        def on_trial(trial: FrozenTrial) -> None:
            if not quiet:
                console.print(trial_line(trial))

        objective.on_epoch = on_epoch
        worker = Worker(study, objective, faults, label=label, gpu=gpu, artifacts=store, timeout=timeout,
                        on_trial=on_trial, on_poll=on_poll, interrupts=interrupts)
        try:
            report = worker.run()
        except KeyboardInterrupt:
            raise SearchInterrupted(
                f"interrupted: the running trial was marked FAIL and re-queued; any worker resumes it "
                f"(`mnist-hpo worker --study {study_name}`)"
            ) from None
    assert report.view is not None
    console.print(f"worker {label} ran {report.ran} trials ({report.finished} finished, {report.failed} failed); study {study_name!r}: {report.view.describe()}")
    return report


def run_worker(request: WorkerRequest) -> None:
    """`mnist-hpo worker`: join an existing study; with --workers/--gpus, start that many worker processes."""
    quiet_optuna()
    faults = faults_of(request)
    if request.timeout is not None and request.timeout <= 0:
        raise UserError(f"--timeout must be positive seconds, got {request.timeout}")
    slots = plan_slots(request.workers, request.gpus, request.trials_per_gpu, request.device)
    url = storage.resolve_url(request.storage)
    refuse_shared_sqlite(url, len(slots))
    if _in_process(slots, request.gpus, request.trials_per_gpu):
        work(url, request.study, faults, device=request.device, artifacts=request.artifacts, seed=request.seed, timeout=request.timeout)
        return
    rdb = storage.open_storage(url, must_exist=True)
    study = storage.load_study(rdb, request.study)
    launch_workers(url, study, slots, faults, device=request.device, artifacts=request.artifacts, seed=request.seed,
                   timeout=request.timeout, again=f"mnist-hpo worker --study {request.study}")


def search_with_workers(request: SearchRequest) -> optuna.Study:
    """`search` on a study with a global budget: create or extend it, then run its workers to the budget."""
    faults = faults_of(request)
    slots = plan_slots(request.workers, request.gpus, request.trials_per_gpu, request.device)
    url = storage.resolve_url(request.storage)
    refuse_shared_sqlite(url, len(slots))
    has_gpu = request.device != "cpu" and torch.cuda.is_available()
    profile = get_profile(request.profile, has_gpu)
    settings = new_settings(request, profile)
    study_name = request.study or f"mnist-{profile.name}"
    rdb = storage.open_storage(url)
    existing = study_name in storage.list_study_names(rdb)
    if existing:  # the study's own data, profile and space, not the command line's
        settings = StudySettings.load(storage.load_study(rdb, study_name))
    splits = load_splits(settings.data, subset=settings.train_subset, log=console.print)  # once, before any worker
    if not existing:
        settings.data_digest = splits.digest

    def budget(stored: StudySettings | None, view: BudgetView | None) -> int:
        if stored is None:
            return request.n_trials or profile.n_trials
        assert view is not None
        taken = view.finished + view.in_flight if stored.n_trials is None else max(stored.n_trials, view.finished)
        if request.n_trials is not None:
            return taken + request.n_trials  # --n-trials: trials to add
        if stored.n_trials is not None and view.finished < stored.n_trials:
            return stored.n_trials  # continue to the budget
        return taken + get_profile(stored.profile, False).n_trials

    data_source = f"{splits.source} ({len(splits.train):,} train / {len(splits.val):,} validation, sha256 {splits.digest})"
    study, settings, account = ensure_budget_study(rdb, study_name, settings, budget=budget, data_source=data_source)
    shown = storage.mask_url(url)
    console.print(f"{account} in {shown}")
    console.print(f"profile {settings.profile}: {get_profile(settings.profile, False).description}")
    where = f"--study {study_name}" + (f" --storage '{shown}'" if url != storage.DEFAULT_STORAGE else "")
    if _in_process(slots, request.gpus, request.trials_per_gpu):
        try:
            work(url, study_name, faults, device=request.device, artifacts=request.artifacts, seed=request.seed, timeout=request.timeout, splits=splits)
        except SearchInterrupted:
            raise SearchInterrupted(f"interrupted: the running trial was marked FAIL and re-queued; continue with `mnist-hpo search {where}`") from None
    else:
        workers = f" --workers {len(slots)}" if request.gpus is None and request.trials_per_gpu is None else ""
        launch_workers(url, study, slots, faults, device=request.device, artifacts=request.artifacts, seed=request.seed,
                       timeout=request.timeout, again=f"mnist-hpo search {where}{workers}")
    study = storage.load_study(rdb, study_name)
    print_outcome(study, settings, where)
    return study


# --- several worker processes ---------------------------------------------------------------


@dataclass
class Slot:
    index: int
    gpu: str | None  # this worker's CUDA_VISIBLE_DEVICES entry; None on the CPU


def _visible_gpus() -> list[str]:
    count = torch.cuda.device_count()
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[:count] if visible else [str(i) for i in range(count)]


def plan_slots(workers: int | None, gpus: str | None, trials_per_gpu: int | None, device: str) -> list[Slot]:
    """Where each worker runs: K CPU workers, or one (or --trials-per-gpu) per GPU of --gpus."""
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if trials_per_gpu is not None and trials_per_gpu < 1:
        raise UserError(f"--trials-per-gpu must be at least 1, got {trials_per_gpu}")
    gpu_flags = gpus is not None or trials_per_gpu is not None
    has_cuda = torch.cuda.is_available()
    if gpu_flags and not has_cuda:
        raise UserError(
            "--gpus and --trials-per-gpu need a CUDA GPU and none is visible here (torch.cuda.is_available() is False); "
            "use --workers K to run K worker processes on the CPU"
        )
    if gpu_flags and device == "cpu":
        raise UserError("--gpus and --trials-per-gpu put workers on GPUs; leave out --device cpu")
    if not has_cuda or device == "cpu":
        return [Slot(i, None) for i in range(workers or 1)]
    visible = _visible_gpus()
    if gpus is None or gpus.strip() == "all":
        chosen = visible
    else:
        chosen = []
        for part in (p.strip() for p in gpus.split(",")):
            if not part.isdigit() or int(part) >= len(visible):
                raise UserError(f"--gpus {gpus}: no GPU {part!r}; {len(visible)} visible, numbered 0 to {len(visible) - 1}")
            chosen.append(visible[int(part)])
        if len(set(chosen)) != len(chosen):
            raise UserError(f"--gpus {gpus} names a GPU twice; use --trials-per-gpu to put several workers on one GPU")
    if gpu_flags:
        per = trials_per_gpu or 1
        placed = [gpu for gpu in chosen for _ in range(per)]
        if workers is not None and workers != len(placed):
            raise UserError(f"--workers {workers} does not match {len(chosen)} GPUs x {per} per GPU = {len(placed)}; give one or the other")
    else:
        placed = [chosen[i % len(chosen)] for i in range(workers or 1)]
    return [Slot(i, gpu) for i, gpu in enumerate(placed)]


def _in_process(slots: list[Slot], gpus: str | None, trials_per_gpu: int | None) -> bool:
    return len(slots) == 1 and gpus is None and trials_per_gpu is None


def refuse_shared_sqlite(url: str, workers: int) -> None:
    """SQLite is one machine's, one writer's file: K worker processes get a journal file or PostgreSQL instead."""
    if workers > 1 and url.startswith("sqlite"):
        path = url.split(":///", 1)[-1] or "mnist-hpo.db"
        journal = (path[:-3] if path.endswith(".db") else path) + ".log"
        raise UserError(
            f"{workers} worker processes cannot share the SQLite file {path} (one writer at a time, heartbeats time out "
            f"under lock contention); use --storage journal:{journal} for workers on this machine, or a "
            "postgresql+psycopg:// URL for workers on several machines"
        )


def launch_workers(
    url: str,
    study: optuna.Study,
    slots: list[Slot],
    faults: Faults,
    *,
    device: str,
    artifacts: Path | None,
    seed: int | None,
    timeout: float | None,
    again: str,
) -> None:
    """Start one `mnist-hpo worker` process per slot and show their combined progress until all exit."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // len(slots))
    artifacts_dir = Path(artifacts if artifacts is not None else storage.DEFAULT_ARTIFACTS).expanduser()
    storage.open_artifacts(artifacts_dir)
    logs = artifacts_dir / "worker-logs"
    logs.mkdir(exist_ok=True)
    processes: list[tuple[Slot, subprocess.Popen, Path]] = []
    for slot in slots:
        env = dict(os.environ)
        env[storage.STORAGE_ENV] = url  # not on the command line, where `ps` would show the password
        env[THREADS_ENV] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        command = [sys.executable, "-m", "mnist_hpo", "worker", "--study", study.study_name, "--artifacts", str(artifacts_dir), *faults.cli_args()]
        if slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot.gpu
            command += ["--device", "cuda"]
        else:
            command += ["--device", device]
        if seed is not None:
            command += ["--seed", str(seed + slot.index)]
        if timeout is not None:
            command += ["--timeout", str(timeout)]
        log = logs / f"{study.study_name}-worker-{slot.index}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        processes.append((slot, process, log))
    placement = ", ".join(f"GPU {s.gpu}" for s in slots) if slots[0].gpu is not None else f"the CPU, {threads} threads each"
    console.print(f"started {len(slots)} worker processes on {placement}; their logs: {logs}/")

    budget = StudySettings.load(study).n_trials or 0
    reported: set[int] = {t.number for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL))}
    interrupted = False
    with progress() as bar:
        task = bar.add_task("trials", total=budget, timeout=timeout)

        def sweep() -> None:
            trials = study.get_trials(deepcopy=False)
            for trial in sorted(trials, key=lambda t: t.number):
                if trial.state.is_finished() and trial.number not in reported:
                    reported.add(trial.number)
                    console.print(f"{trial_line(trial)}  ({trial.user_attrs.get('worker', '?')})")
            counts = Counter(t.state for t in trials)
            alive = sum(1 for _, p, _ in processes if p.poll() is None)
            bar.update(task, completed=counts[TrialState.COMPLETE] + counts[TrialState.PRUNED],
                       description=f"{counts[TrialState.RUNNING]} running on {alive} workers")

        try:
            with sigterm_as_interrupt():  # SIGTERM to this process stops the workers cleanly, like Ctrl-C
                while any(p.poll() is None for _, p, _ in processes):
                    time.sleep(1.0)
                    sweep()
        except KeyboardInterrupt:
            interrupted = True
            for _, process, _ in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 60
            for _, process, _ in processes:
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()  # its trial is retried once its heartbeat is stale
                    process.wait()
        with contextlib.suppress(Exception):
            sweep()
    if interrupted:
        raise SearchInterrupted(f"interrupted: running trials were marked FAIL and re-queued; continue with `{again}`")
    failed = [(slot, process.returncode, log) for slot, process, log in processes if process.returncode != 0]
    view = budget_view(study, StudySettings.load(study).n_trials or 0)
    for slot, code, log in failed:
        console.print(f"worker {slot.index} exited with status {code}: {_last_error(log)} (log: {log})")
    if failed and view.finished < view.budget:
        slot, code, log = failed[0]
        raise UserError(f"{len(failed)} of {len(slots)} workers failed before the budget was met ({view.describe()}); worker {slot.index}: {_last_error(log)}; continue with `{again}`")
    console.print(f"all workers done: {view.describe()}")


def _last_error(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("error:") or "Error" in line or line.startswith("interrupted")]
    return (errors or lines or ["no output"])[-1][:300]


# --- what `status` shows --------------------------------------------------------------------


def retry_chains(study: optuna.Study) -> list[str]:
    """One line per retried trial: its chain of attempts and where the last one started."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    lines = []
    retries = [t for t in trials.values() if t.system_attrs.get("retry_history")]
    last_of_chain = [t for t in retries if not any(t.number in r.system_attrs.get("retry_history", []) for r in retries)]
    for trial in sorted(last_of_chain, key=lambda t: t.number):
        chain = [*trial.system_attrs["retry_history"], trial.number]
        parts = []
        for number in chain:
            attempt = trials.get(number)
            if attempt is None:
                continue
            resumed = attempt.user_attrs.get("resumed_from")
            note = f" resumed after epoch {resumed['epoch']}" if isinstance(resumed, dict) and "epoch" in resumed else ""
            parts.append(f"trial {number} {attempt.state.name}{note}")
        lines.append(" -> ".join(parts))
    return lines
