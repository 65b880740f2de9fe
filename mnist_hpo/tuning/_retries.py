"""Dead workers' trials: heartbeats while a trial runs, the re-queue, and the resume state a retry continues from.

On SQL storages Optuna's heartbeats are used: the take records the first beat, a thread records one
every --heartbeat-interval seconds, and ``optuna.storages.fail_stale_trials`` marks FAIL a RUNNING
trial silent for --grace-period seconds and calls the storage's stale-trial callback
(``RetryDeadTrial``). Journal and gRPC storages have no heartbeat table; there the heartbeat is a
trial system attribute with the same interval and grace. A RUNNING trial that never beat at all is
timed on this process's own clock, so no two machines' clocks are compared. On SQL storages the take
also records who took the trial (``OWNER_ATTR``, ``_owner.this_process``): a trial whose process is
gone from this machine (killed, or stopped by a storage fault it could not give the trial back
through) is failed and re-queued at once by the next worker here, without waiting for the grace period.

A running trial keeps its full training state in the artifact store (``resume_key``) after every
better epoch; its retry continues from it (``load_resume_state``), or starts over and says why when it
is missing or unreadable. The states go when the trial is over for good (``forget_resume_states``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from mnist_hpo import storage as stores
from mnist_hpo.console import console
from mnist_hpo.errors import UserError
from mnist_hpo.tuning._owner import process_gone
from mnist_hpo.tuning.attrs import (
    FAIL_REASON_ATTR,
    HEARTBEAT_ATTR,
    OPTUNA_FAILED_TRIAL_ATTR,
    OPTUNA_FIXED_PARAMS_ATTR,
    OPTUNA_RETRY_HISTORY_ATTR,
    OWNER_ATTR,
    PBT_SEGMENT_ATTR,
    PUBLISHED_BASELINE_ATTR,
    REPLACES_ATTR,
    RESUME_FAILED_ATTR,
    RESUMED_FROM_ATTR,
    RETRY_HISTORY_ATTR,
    RETRY_OF_ATTR,
)

HEARTBEAT_S = 10
GRACE_FACTOR = 6  # default grace period: six missed heartbeats
MAX_RETRIES = 3


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
            "--heartbeat-interval",
            str(self.heartbeat_interval),
            "--grace-period",
            str(self.grace_period),
            "--max-retries",
            str(self.max_retries),
        ]


def retry_history(trial: FrozenTrial) -> list[int]:
    """Numbers of the trials this one retries, oldest first (Optuna's retry bookkeeping, not our user attribute copy)."""
    return list(trial.system_attrs.get(OPTUNA_RETRY_HISTORY_ATTR, []))


class RetryDeadTrial:
    """The stale-trial callback: re-queue a dead worker's trial with its parameters, or replace it past the retries."""

    def __init__(self, max_retries: int = MAX_RETRIES) -> None:
        self.max_retries = max_retries

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        requeue(study, trial, self.max_retries)


def queue_replacement(study: optuna.Study, trial: FrozenTrial) -> None:
    """A fresh trial in a failed one's place; the published baseline's place goes to the published configuration again."""
    if trial.user_attrs.get(PUBLISHED_BASELINE_ATTR):
        published = trial.system_attrs.get(OPTUNA_FIXED_PARAMS_ATTR) or trial.params
        study.enqueue_trial(dict(published), user_attrs={REPLACES_ATTR: trial.number, PUBLISHED_BASELINE_ATTR: True})
    else:
        study.enqueue_trial({}, user_attrs={REPLACES_ATTR: trial.number})


def requeue(study: optuna.Study, trial: FrozenTrial, max_retries: int) -> str:
    """Queue the retry of failed ``trial`` (a fresh trial once it ran out of retries); says which.

    The retry is made by Optuna's RetryHeartbeatStaleTrialCallback, which keeps its own system
    attributes "failed_trial" and "retry_history" (OPTUNA_FAILED_TRIAL_ATTR, OPTUNA_RETRY_HISTORY_ATTR),
    from a copy of the trial that carries only what a retry should inherit. Our user attributes
    "retry_of" and "retry_history" (RETRY_HISTORY_ATTR: the same list under the same key, but ours)
    are added for people, and for the objective, which reads the latter to resume from the dead
    trial's checkpoint.
    """
    history = [*retry_history(trial), trial.number]
    if len(history) > max_retries:
        queue_replacement(study, trial)
        return f"trial {trial.number} ran out of retries ({max_retries}); a fresh trial takes its place"
    inherit = copy.deepcopy(trial)
    # "fixed_params" (how Optuna enqueues): a trial that died before sampling has no params of its own to pass on
    passed_on = (OPTUNA_FAILED_TRIAL_ATTR, OPTUNA_RETRY_HISTORY_ATTR, OPTUNA_FIXED_PARAMS_ATTR)
    inherit.system_attrs = {key: trial.system_attrs[key] for key in passed_on if key in trial.system_attrs}
    inherit.user_attrs = {
        RETRY_OF_ATTR: trial.number,
        RETRY_HISTORY_ATTR: history,
        **({PUBLISHED_BASELINE_ATTR: True} if trial.user_attrs.get(PUBLISHED_BASELINE_ATTR) else {}),
        **({PBT_SEGMENT_ATTR: trial.user_attrs[PBT_SEGMENT_ATTR]} if PBT_SEGMENT_ATTR in trial.user_attrs else {}),  # its place
    }
    RetryHeartbeatStaleTrialCallback(max_retry=max_retries)(study, inherit)
    return f"trial {trial.number} re-queued (retry {len(history)} of {max_retries})"


class Heartbeats:
    """Heartbeats of this worker's trial, and the check that fails other workers' silent ones."""

    def __init__(
        self, study: optuna.Study, storage: BaseStorage, study_id: int, faults: Faults, on_dead: Callable[[optuna.Study, FrozenTrial], Any]
    ) -> None:
        self.study = study
        self.storage = storage
        self.study_id = study_id
        self.faults = faults
        self.on_dead = on_dead
        self.native = stores.is_sql(storage) and bool(getattr(storage, "heartbeat_interval", None))
        self._silent_since: dict[int, float] = {}

    def beat(self, trial_id: int) -> None:
        if self.native:
            self.storage.record_heartbeat(trial_id)
        else:
            self.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    @contextlib.contextmanager
    def beating(self, trial_id: int, first_beat: bool = True) -> Iterator[None]:
        """Beat now (unless the take already did), then every interval from a thread, until the block ends."""
        if first_beat:
            self.beat(trial_id)
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.faults.heartbeat_interval):
                with contextlib.suppress(Exception):  # the main thread meets the same storage error and reports it
                    self.beat(trial_id)

        thread = threading.Thread(target=loop, name=f"heartbeat-{trial_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=30)

    def fail_dead_trials(self) -> None:
        """Mark FAIL the RUNNING trials whose heartbeat stopped or whose process is gone, and re-queue them (one worker wins each)."""
        if self.native:
            self._fail_orphans()  # first: a trial whose process is gone is failed with the reason why
            fail_stale_trials(self.study)  # Optuna's own check; it calls RetryDeadTrial for each
            silent = stores.running_without_heartbeat(self.storage, self.study_id)
            self._fail(self._timed_out(silent, set(silent)))
            return
        now = time.time()
        running = self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.RUNNING,))
        beats = {t.number: t.system_attrs.get(HEARTBEAT_ATTR) for t in running}
        dead = [n for n, beat in beats.items() if isinstance(beat, (int, float)) and now - beat > self.faults.grace_period]
        never = [n for n, beat in beats.items() if not isinstance(beat, (int, float))]
        dead += self._timed_out(never, set(beats))
        self._fail([self.storage.get_trial_id_from_study_id_trial_number(self.study_id, n) for n in dead])

    def _timed_out(self, silent: list[int], alive: set[int]) -> list[int]:
        """Of the silent trials (ids or numbers), those silent for longer than the grace period on this clock."""
        now = time.monotonic()
        self._silent_since = {k: v for k, v in self._silent_since.items() if k in alive}
        return [key for key in silent if now - self._silent_since.setdefault(key, now) > self.faults.grace_period]

    def _fail_orphans(self) -> None:
        """RUNNING trials whose recorded process is gone from this machine: no need to wait for their grace period."""
        owners = stores.running_attrs(self.storage, self.study_id, OWNER_ATTR)
        reasons = {
            trial_id: f"its worker (pid {owner['pid']} on {owner['host']}) ended without finishing it; re-queued at once"
            for trial_id, owner in owners.items()
            if process_gone(owner)
        }
        self._fail(list(reasons), reasons)

    def _fail(self, trial_ids: list[int], reasons: dict[int, str] | None = None) -> None:
        reasons = reasons or {}
        for trial_id in trial_ids:
            try:
                if trial_id in reasons:  # written while RUNNING: a finished trial takes no attributes
                    self.storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reasons[trial_id])
                if not self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except UpdateFinishedTrialError:
                continue  # another worker failed it first, and re-queued it
            self.on_dead(self.study, self.storage.get_trial(trial_id))


# -------------------------------------------------------------- resume states: what a retry continues from


def resume_key(study_name: str, trial_number: int) -> str:
    """Where a trial's full training state lives in the artifact store while it may be retried."""
    return f"resume-{study_name}-{trial_number}.pt"


def state_bytes(state: dict[str, Any]) -> bytes:
    """A full training state as the bytes kept in the artifact store (a resume state, a PBT segment's end state)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def state_from(data: bytes, device: Any) -> dict[str, Any]:
    """A training state read back as any model file is: the zip checked before torch reads it, weights only."""
    import torch

    from mnist_hpo.checkpoints import zip_entries

    zip_entries(data)
    return torch.load(io.BytesIO(data), map_location=device, weights_only=True)


def save_resume_state(store: Any, trial: optuna.Trial, state: dict[str, Any]) -> None:
    """The trainer's state after an epoch (network, optimiser, schedule, EMA, epoch), for a retry of ``trial``."""
    stores.write_blob(store, resume_key(trial.study.study_name, trial.number), state_bytes(state))


def load_resume_state(store: Any, trial: optuna.Trial, device: Any) -> dict[str, Any] | None:
    """A retried trial's state to continue from: the last one of the trial it replaces; None (and why, recorded) to start over."""
    history = trial.user_attrs.get(RETRY_HISTORY_ATTR) or []
    if not history:
        return None
    previous = history[-1]
    problem = "its training state is missing (it died before its first epoch ended)"
    data = stores.read_blob(store, resume_key(trial.study.study_name, previous))
    if data is not None:
        try:
            state = state_from(data, device)
            epoch = int(state["epoch"])
        except Exception as exc:  # truncated, corrupt, or not a training state
            problem = f"its training state cannot be read ({type(exc).__name__})"
        else:
            trial.set_user_attr(RESUMED_FROM_ATTR, {"trial": previous, "epoch": epoch})
            console.print(f"trial {trial.number}: resuming trial {previous} after epoch {epoch}")
            return state
    message = f"cannot resume trial {previous}: {problem}; starting over from epoch 1"
    trial.set_user_attr(RESUME_FAILED_ATTR, message)
    console.print(f"trial {trial.number}: {message}")
    return None


def forget_resume_states(store: Any, trial: optuna.Trial) -> None:
    """The trial is over for good: its resume state and its retried trials' are no longer needed."""
    for number in [*trial.user_attrs.get(RETRY_HISTORY_ATTR, []), trial.number]:
        stores.remove_blob(store, resume_key(trial.study.study_name, number))


def abandon_resume_state(store: Any, study: optuna.Study, number: int) -> str:
    """Trial ``number`` was failed by another worker while this one ran it (a partition, a stall):
    remove its resume state unless a queued or running retry still reads it; says which."""
    live = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    retries = [t.number for t in live if number in (t.user_attrs.get(RETRY_HISTORY_ATTR) or [])]
    if retries:
        return f"its resume state stays for its retry, trial {retries[0]}, which removes it when done"
    stores.remove_blob(store, resume_key(study.study_name, number))
    return "its resume state was removed (its retry is done), so nothing is left behind"
