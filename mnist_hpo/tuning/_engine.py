"""The trial engine: the one loop every search runs, in one process or in many.

take a waiting trial -> heartbeat while it runs -> train (the objective) -> tell -> check the
budget -> fail and re-queue dead workers' trials. `mnist-hpo search`, `search --workers K` and
`mnist-hpo worker` all run this loop (``Worker.run``), so a study behaves the same however many
processes run it. Signals: SIGTERM and Ctrl-C fail the running trial with the reason and re-queue
it with its parameters (the next worker resumes it from its checkpoint); the worker then exits
with status 130. A storage fault (a full disk, a read-only or damaged SQLite file: ``storage_fault``)
stops the worker with one line, after one try to fail and re-queue its trial the same way; a trial it
could not give back is re-queued at once by the next worker on this machine, which finds its recorded
owner gone (``_retries.py``). Torch is imported only by the objective, so a worker that trains nothing is cheap.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import random
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from mnist_hpo import storage as stores
from mnist_hpo.console import console
from mnist_hpo.errors import StorageUnavailable, UserError
from mnist_hpo.signals import Interrupts
from mnist_hpo.tuning._budget import BudgetView, budget_view, view_of_trials
from mnist_hpo.tuning._owner import this_process
from mnist_hpo.tuning._retries import Heartbeats, RetryDeadTrial, queue_replacement, requeue
from mnist_hpo.tuning._spec import EngineHooks, WorkerSpec
from mnist_hpo.tuning.attrs import (
    FAIL_REASON_ATTR,
    FAIL_REASON_SYSTEM_ATTR,
    GPU_ATTR,
    OPTUNA_RETRY_HISTORY_ATTR,
    OWNER_ATTR,
    PUBLISHED_BASELINE_ATTR,
    WORKER_ATTR,
)
from mnist_hpo.tuning.copies import copied_counts
from mnist_hpo.tuning.settings import StudySettings

MAX_FAILURES_IN_A_ROW = 3  # a worker whose trials keep failing stops instead of burning the budget's retries
STUCK_POLLS = 5  # polls with nothing queued or running and the budget unmet before a worker gives up

Objective = Callable[[optuna.Trial], float | Sequence[float]]
StopRule = Callable[[optuna.Study, BudgetView], str | None]


def worker_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class WorkerReport:
    ran: int = 0  # trials this worker took
    finished: int = 0  # of them, COMPLETE or PRUNED
    failed: int = 0
    refused: int = 0  # results refused: another worker had finished or failed the same trial meanwhile
    view: BudgetView | None = None
    stopped: str | None = None  # why the study stopped early (a stop rule), if it did


class Worker:
    """Take waiting trials of ``study`` and run ``objective`` on them until the study's budget is met."""

    def __init__(
        self,
        study: optuna.Study,
        storage: BaseStorage,
        objective: Objective,
        spec: WorkerSpec,
        *,
        hooks: EngineHooks = EngineHooks(),
        stop_rule: StopRule | None = None,
        interrupts: Interrupts | None = None,
        label: str | None = None,
        gpu: dict[str, Any] | None = None,
    ) -> None:
        stores.check_optuna(storage)
        self.study = study
        self.storage = storage
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.objective = objective
        self.faults = faults = spec.faults
        self.deadline = spec.deadline  # the command's --timeout, counted from its start: no trial starts after it
        self.again = spec.continue_command(study.study_name)
        self.label = label or worker_label()
        self.gpu = gpu
        self.on_trial = hooks.on_trial or (lambda trial: None)
        self.on_poll = hooks.on_poll or (lambda view: None)
        self.on_refused = hooks.on_refused
        self.interrupts = interrupts or Interrupts()
        self.stop_rule = stop_rule
        self.sql = stores.is_sql(storage)
        self._owner = this_process() if self.sql else None  # recorded on each trial by the take itself: no extra write
        # Idle polls: SQL storages count in one cheap query; journal and gRPC re-read the trials, so less often.
        self.poll_s = 0.5 if self.sql else min(2.0, max(0.5, faults.heartbeat_interval / 2))
        self.heartbeats = Heartbeats(study, storage, self.study_id, faults, RetryDeadTrial(faults.max_retries))
        self.report = WorkerReport()
        self._budget: int | None = None
        self._copied: dict[str, int] = {}  # the warm start's copies per state, read with the budget
        self._waiting: list[FrozenTrial] = []  # journal and gRPC: the waiting trials the last view read

    def budget(self, refresh: bool = False) -> int:
        if self._budget is None or refresh:
            settings = StudySettings.load(self.study)
            if settings.n_trials is None:
                raise UserError(
                    f"study {self.study.study_name!r} has no global trial budget (an older mnist-hpo made it); "
                    f"give it one with `mnist-hpo study create --study {self.study.study_name} --n-trials N`"
                )
            self._budget = settings.n_trials
            self._copied = copied_counts(self.study.user_attrs)
        return self._budget

    def run(self) -> WorkerReport:
        failures: list[str] = []
        stuck, checked, idle = 0, -math.inf, False
        while True:
            if self.interrupts.fired:  # a library caught the signal's KeyboardInterrupt: the worker still stops
                raise KeyboardInterrupt(self.interrupts.fired)
            if self.deadline.passed:
                console.print(f"worker {self.label}: --timeout reached, starting no more trials")
                break
            if idle or time.monotonic() - checked >= self.faults.heartbeat_interval:
                stores.ride_out(self.heartbeats.fail_dead_trials)  # once a heartbeat interval is often enough to notice the dead
                checked = time.monotonic()
            view = stores.ride_out(self._view)
            if view.met:
                view = stores.ride_out(self._view, refresh=True)  # raised meanwhile?
                if view.met:
                    break
            self.report.view = view
            self.report.stopped = self.stop_rule(self.study, view) if self.stop_rule else None
            if self.report.stopped:
                break
            self.on_poll(view)
            with self.interrupts.deferred():  # a signal now would leave the taken trial RUNNING until its grace ends
                taken = stores.ride_out(self._take)
            idle = taken is None
            if taken is None:
                self.interrupts.raise_pending()
                stuck = stuck + 1 if view.in_flight == 0 else 0
                if stuck >= STUCK_POLLS:
                    raise UserError(
                        f"study {self.study.study_name!r} cannot reach its budget: {view.describe()}, and nothing is "
                        f"queued; queue the missing trials with `mnist-hpo study create --study {self.study.study_name}`"
                    )
                time.sleep(self.poll_s)
                continue
            stuck = 0
            reason = self._run(*taken)
            failures = [] if reason is None else [*failures, reason]
            if len(failures) >= MAX_FAILURES_IN_A_ROW:
                raise UserError(
                    f"worker {self.label} stops: its last {len(failures)} trials failed ({failures[-1]}); "
                    "their places in the budget were re-queued for other workers"
                )
        self.interrupts.raise_pending()  # a signal that came during the last take still stops the worker, 130
        self.report.view = stores.ride_out(self._view)
        return self.report

    def _view(self, refresh: bool = False) -> BudgetView:
        budget = self.budget(refresh)
        if self.sql:
            return budget_view(self.storage, self.study_id, budget, self._copied)
        trials = self.storage.get_all_trials(self.study_id, deepcopy=False)  # one read for the view and the next take
        self._waiting = [t for t in trials if t.state == TrialState.WAITING]
        return view_of_trials(trials, budget, self._copied)

    def _take(self) -> tuple[int, int, bool] | None:
        """(id, number, first heartbeat recorded) of a WAITING trial this worker made RUNNING; None if none is left.

        Retries (which resume from a checkpoint) and the published baseline go first; the rest are
        tried from a random start, so workers starting together do not all race for the same trial.
        """
        if self.sql:
            taken = stores.take_waiting_trial(self.storage, self.study_id, OPTUNA_RETRY_HISTORY_ATTR, (OWNER_ATTR, self._owner))
            return (*taken, bool(self.storage.heartbeat_interval)) if taken else None
        waiting = self._waiting  # as the view just before read them; a trial taken meanwhile is refused below
        first = sorted(
            (t for t in waiting if OPTUNA_RETRY_HISTORY_ATTR in t.system_attrs or t.user_attrs.get(PUBLISHED_BASELINE_ATTR)),
            key=lambda t: t.number,
        )
        early = {t.number for t in first}
        rest = [t for t in waiting if t.number not in early]
        if rest:
            start = random.randrange(len(rest))
            rest = rest[start:] + rest[:start]
        for frozen in first + rest:
            trial_id = stores.trial_id_of(frozen)
            with contextlib.suppress(UpdateFinishedTrialError):
                if self.storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                    return trial_id, frozen.number, False
        return None

    def _run(self, trial_id: int, number: int, beat_recorded: bool) -> str | None:
        """Run one taken trial to its end; returns the failure reason, or None.

        A storage fault stops the worker with its one line, after one try to give the trial back
        (``_give_back``): a trial left RUNNING would hold its place in the budget for a grace period.
        """
        try:
            return self._attempt(trial_id, number, beat_recorded)
        except UserError:
            raise  # already its own line (a lost PostgreSQL server: the trial's heartbeat stops, another worker retries it)
        except Exception as exc:
            fault = stores.storage_fault(exc, then=f"continue with `{self.again}`")
            if fault is None:
                raise
            raise self._give_back(trial_id, number, fault) from exc

    def _attempt(self, trial_id: int, number: int, beat_recorded: bool) -> str | None:
        """``_run`` up to a storage fault, which it leaves to ``_run``."""
        self.report.ran += 1
        state, values, reason, resume, interrupted, trial = None, None, None, False, False, None
        with contextlib.ExitStack() as stack:
            with self.interrupts.deferred():
                stack.enter_context(self.heartbeats.beating(trial_id, first_beat=not beat_recorded))
            try:
                self.interrupts.raise_pending()
                trial = stores.ride_out(self._start, trial_id, number)
                values = self.objective(trial)
                state = TrialState.COMPLETE
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except KeyboardInterrupt as exc:
                state, resume, interrupted = TrialState.FAIL, True, True
                reason = f"interrupted by {exc.args[0] if exc.args else 'Ctrl-C'}; re-queued to resume from its checkpoint"
            except (StorageUnavailable, stores.OptunaInternalsChanged):
                raise  # the trial stays RUNNING; its heartbeat stops and another worker retries it
            except UpdateFinishedTrialError:
                return self._refused(number)
            except Exception as exc:
                if stores.storage_fault(exc) is not None:
                    raise  # a full disk, a read-only or damaged database: _run gives the trial back, once
                state = TrialState.FAIL
                reason, resume, interrupted = self._failure(exc)
        if reason and reason.startswith("CUDA out of memory"):
            _free_cuda_memory()  # after the except block: the traceback no longer holds the tensors
        if state == TrialState.COMPLETE:
            values, invalid = _checked(values, len(self.study.directions))
            if invalid:
                state, reason = TrialState.FAIL, invalid
        if state == TrialState.FAIL:
            failed = self._fail(trial_id, number, reason or "failed", resume)
            if interrupted:
                raise KeyboardInterrupt
            return failed
        try:  # skip_if_finished: a repeat after a lost acknowledgement finds its own result there
            told = stores.ride_out(self.study.tell, trial, values, state=state, skip_if_finished=True)
        except UpdateFinishedTrialError:  # failed by another worker between tell's check and its write
            return self._refused(number)
        if told.state != state:
            return self._refused(number)
        self.report.finished += 1
        self.on_trial(told)
        return None

    def _failure(self, exc: Exception) -> tuple[str, bool, bool]:
        """(reason, resume, interrupted) for a trial that ``exc`` ended."""
        if isinstance(exc, StorageInternalError):  # the connection died under a write: resume elsewhere
            return f"lost the storage connection during the trial ({_first_line(exc.__cause__ or exc)}); re-queued to resume", True, False
        reason = _failure_reason(exc)
        if self.interrupts.fired:  # the signal's KeyboardInterrupt came back as another error
            return f"interrupted by {self.interrupts.fired} ({reason}); re-queued to resume from its checkpoint", True, True
        return reason, False, False

    def _start(self, trial_id: int, number: int) -> optuna.Trial:
        trial = stores.trial_handle(self.study, trial_id, number)
        trial.set_user_attr(WORKER_ATTR, self.label)
        if self.gpu:
            trial.set_user_attr(GPU_ATTR, self.gpu)
        return trial

    def _fail(self, trial_id: int, number: int, reason: str, resume: bool) -> str | None:
        """Mark the trial FAIL with its reason and queue its replacement: a retry when ``resume``, else a fresh trial."""
        return None if self._replace(trial_id, number, reason, resume) is None else reason

    def _replace(self, trial_id: int, number: int, reason: str, resume: bool) -> str | None:
        """``_fail``'s work; says what was queued in the trial's place, or None if another worker had failed it first."""
        with stores.study_lock(self.storage, self.study.study_name, required=False):  # budget changes see FAIL + its replacement as one
            if not stores.ride_out(self._mark_failed, trial_id, reason):
                return self._refused(number)
            told = self.storage.get_trial(trial_id)
            if resume:
                queued = stores.ride_out(requeue, self.study, told, self.faults.max_retries)
            else:
                stores.ride_out(queue_replacement, self.study, told)
                queued = f"trial {number} failed; a fresh trial takes its place"
        self.report.failed += 1
        self.on_trial(told)
        return queued

    def _give_back(self, trial_id: int, number: int, fault: UserError) -> UserError:
        """The one line for a storage fault during a trial, after one try, at once, to fail the trial and re-queue it.

        The storage has just failed, so it is tried once and never waited for; the line then says
        where the trial stands and who re-queues it.
        """
        try:
            if self.storage.get_trial(trial_id).state.is_finished():
                return fault  # told or failed before the fault: this worker leaves nothing RUNNING
            queued = self._replace(trial_id, number, f"the study database failed during the trial ({fault})", resume=True)
        except Exception:
            return UserError(f"{fault}; {self._left_behind(trial_id, number)}")
        return UserError(f"{fault}; {queued or f'trial {number} had been failed by another worker meanwhile; its retry stands'}")

    def _left_behind(self, trial_id: int, number: int) -> str:
        """Where a trial this worker could not give back stands, and who re-queues it (reads work on a full disk)."""
        with contextlib.suppress(Exception):
            if self.storage.get_trial(trial_id).state == TrialState.FAIL:
                return (
                    f"trial {number} was marked failed, but its retry may not be queued: the next `mnist-hpo search` or "
                    f"`mnist-hpo study create` of study {self.study.study_name!r} queues what its budget lacks"
                )
        stale = f"any worker re-queues it once its heartbeat is {self.faults.grace_period} s stale"
        if self._owner is None:  # journal and gRPC storages record no owner
            return f"trial {number} stays RUNNING; {stale} (`{self.again}`)"
        return f"trial {number} stays RUNNING; the next `{self.again}` on this machine re-queues it at once (elsewhere, {stale})"

    def _mark_failed(self, trial_id: int, reason: str) -> bool:
        """True if this worker failed the trial; the storage's state change is atomic, so exactly one process does."""
        try:
            self.storage.set_trial_system_attr(trial_id, FAIL_REASON_SYSTEM_ATTR, reason)
            self.storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason)
            return self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:  # failed by another worker, or by this one's first attempt (a repeat)
            frozen = self.storage.get_trial(trial_id)
            return frozen.state == TrialState.FAIL and frozen.system_attrs.get(FAIL_REASON_SYSTEM_ATTR) == reason

    def _refused(self, number: int) -> None:
        self.report.refused += 1
        cleaned = ""
        if self.on_refused is not None:
            try:
                cleaned = "; " + stores.ride_out(self.on_refused, self.study, number)
            except Exception as exc:  # the clean-up is best effort: say what is left behind
                cleaned = f"; its resume state may be left behind ({type(exc).__name__}: {_first_line(exc)})"
        console.print(
            f"trial {number} was failed by another worker meanwhile (its heartbeat looked dead to them); "
            f"this worker's late result was refused and the trial's retry stands{cleaned}"
        )


def _checked(values: Any, objectives: int) -> tuple[Any, str | None]:
    """The objective's values if Optuna can record them, else why not (NaN, the wrong count)."""
    items = list(values) if isinstance(values, (list, tuple)) else [values]
    if len(items) != objectives or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in items):
        return values, f"the objective returned {values!r}, not {objectives} finite number(s)"
    return (items[0] if objectives == 1 else items), None


def _failure_reason(exc: BaseException) -> str:
    if _is_cuda_oom(exc):
        line = _first_line(exc)
        return line if line.startswith("CUDA out of memory") else f"CUDA out of memory: {line}"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _is_cuda_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" and type(exc).__module__.startswith("torch")


def _free_cuda_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
