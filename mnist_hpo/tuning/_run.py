"""One worker in this process: join a study, load its data, build the objective, run the engine with progress."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import optuna

from mnist_hpo import storage as stores
from mnist_hpo.console import console, plural, progress
from mnist_hpo.deadline import NEVER, Deadline
from mnist_hpo.errors import SearchInterrupted, UserError
from mnist_hpo.signals import Interrupts
from mnist_hpo.tuning._budget import BudgetView, queue_missing, wait_for_settings
from mnist_hpo.tuning._display import trial_line
from mnist_hpo.tuning._engine import Worker, WorkerReport, worker_label
from mnist_hpo.tuning._population import WaitTimedOut
from mnist_hpo.tuning._retries import Faults, RetryDeadTrial, abandon_resume_state
from mnist_hpo.tuning._spec import EngineHooks, WorkerSpec
from mnist_hpo.tuning.attrs import DATA_SOURCE_ATTR, LEARNING_CURVE_ATTR
from mnist_hpo.tuning.pruners import make_pruner
from mnist_hpo.tuning.samplers import make_sampler
from mnist_hpo.tuning.settings import StudySettings
from mnist_hpo.tuning.stopping import stop_rule_for

if TYPE_CHECKING:
    import torch
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

    from mnist_hpo.data import Splits
    from mnist_hpo.tuning.objective import Objective


def quiet_optuna() -> None:
    """Our own per-trial lines (failure reasons included) replace Optuna's log and its tracebacks."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_for_workers(url: str, faults: Faults, must_exist: bool = True) -> optuna.storages.BaseStorage:
    """The storage with heartbeats on, dead workers' trials re-queued by RetryDeadTrial, and one pooled connection."""
    return stores.open_storage(
        url,
        must_exist=must_exist,
        heartbeat_interval=faults.heartbeat_interval,
        grace_period=faults.grace_period,
        stale_trial_callback=RetryDeadTrial(faults.max_retries),
        pool=stores.WORKER_POOL,
    )


def study_settings(study: optuna.Study, storage: optuna.storages.BaseStorage, deadline: Deadline = NEVER) -> StudySettings:
    """The settings of a study made for workers; a one-line error for a half-made or budget-less one.

    A study another command is still creating is waited for, until ``deadline`` at most.
    """
    settings = wait_for_settings(study, storage, deadline=deadline)
    name = study.study_name
    if settings is None:
        raise UserError(f"study {name!r} is still being created (or its creator died); run `mnist-hpo study create --study {name}` again")
    if settings.n_trials is None:
        raise UserError(
            f"study {name!r} has no global trial budget (an older mnist-hpo made it); "
            f"give it one with `mnist-hpo study create --study {name} --n-trials N`"
        )
    return settings


def work(
    url: str,
    study_name: str,
    spec: WorkerSpec,
    *,
    splits: Splits | None = None,
    on_finish: Callable | None = None,
    on_stop: Callable[[optuna.Study, str], None] | None = None,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> WorkerReport:
    """Run one worker in this process against an existing study until its budget is met or a stop rule stops it.

    ``spec``: how it runs (its faults, device, artifacts, sampler seed, deadline, threads). ``splits``:
    the study's data if the caller has loaded it. ``on_finish(trial, end)``: the objective's "trial
    finished" hook (the dashboard's pictures). ``on_stop(study, reason)`` runs when the study stopped
    early (the dashboard note says why). ``on_trial(study, trial)`` runs for every trial this worker
    finishes (complete, pruned or failed), as Optuna's ``study.optimize`` runs its callbacks (the MLflow
    tracker). Waiting for a study being created gives up at ``spec.deadline``, and no trial starts after it.
    """
    from mnist_hpo.trainer import resolve_device, use_threads
    from mnist_hpo.tuning.objective import Objective

    target = resolve_device(spec.device)
    stores.check_artifacts(spec.artifacts)  # a wrong folder, bucket or credentials: one line, creating nothing
    use_threads(spec.threads)
    rdb = open_for_workers(url, spec.faults)
    study = stores.load_study(rdb, study_name)
    settings = study_settings(study, rdb, spec.deadline)
    if queued := queue_missing(study, rdb, settings, spec.again, spec.deadline):  # a budget raise cut short: its trials, never more
        console.print(f"queued {plural(queued, 'trial')} that the budget of study {study_name!r} lacked (a budget change was cut short)")
    store = stores.open_artifacts(spec.artifacts)  # the storage and the study's settings are there: now make the folder
    splits = _study_data(study, settings, splits)
    sampler = make_sampler(settings.sampler, spec.seed, settings.multi_objective, constant_liar=True)
    study = stores.load_study(rdb, study_name, sampler=sampler, pruner=make_pruner(settings.pruner, settings.epochs))
    objective = Objective(settings, splits, target, store, seed=settings.seed or 0, on_finish=on_finish)
    report = _run_engine(study, rdb, objective, spec, settings, splits, target, store, on_trial=on_trial)
    label = worker_label()
    assert report.view is not None
    if report.stopped:
        console.print(f"worker {label}: study {study_name!r} stopped early ({report.stopped}); it takes no more trials")
        if on_stop:
            on_stop(study, report.stopped)
    console.print(
        f"worker {label} ran {report.ran} trials ({report.finished} finished, {report.failed} failed); study {study_name!r}: {report.view.describe()}"
    )
    return report


def _run_engine(
    study: optuna.Study,
    rdb: BaseStorage,
    objective: Objective,
    spec: WorkerSpec,
    settings: StudySettings,
    splits: Splits,
    target: torch.device,
    store: object,  # the artifact store, shown in the worker's first line
    *,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> WorkerReport:
    """Announce this worker, then run the trial engine with a progress bar until it stops."""
    study_name = study.study_name
    gpu = gpu_info(target)
    label = worker_label()
    where = f"on {target}" + (
        f" ({gpu['name']}, CUDA_VISIBLE_DEVICES={gpu['cuda_visible_devices']})" if gpu else f", {plural(_threads(), 'CPU thread')}"
    )
    faults = spec.faults
    console.print(
        f"worker {label} joined study {study_name!r} in {stores.describe(rdb)} {where}, artifacts in {store}; "
        f"heartbeat every {faults.heartbeat_interval} s, grace {faults.grace_period} s, up to {faults.max_retries} retries"
    )
    interrupts = Interrupts()
    with interrupts.installed(), progress() as bar:
        task = bar.add_task("trials", total=None, timeout=spec.deadline.seconds(), unit="trials finished")

        def on_poll(view: BudgetView) -> None:
            bar.update(task, total=view.budget, completed=view.finished)

        def on_epoch(trial: optuna.Trial, report) -> None:
            bar.update(
                task,
                description=f"trial {trial.number} epoch {report.epoch}/{settings.epochs} (validation {100 * report.val_accuracy:.2f}%)",
            )

        epoch_of: dict[int, int] = {}  # trial number -> the epoch it is training

        def on_step(trial: optuna.Trial, done: int, total: int) -> None:
            if done == 1:  # an epoch starts: one read of the trial's curve says which (a resumed trial starts past 1)
                epoch_of[trial.number] = len(trial.user_attrs.get(LEARNING_CURVE_ATTR) or []) + 1
            epoch = epoch_of.get(trial.number, 1)
            bar.update(task, description=f"trial {trial.number} epoch {epoch}/{settings.epochs} batch {done}/{total}")

        objective.on_epoch, objective.on_step = on_epoch, on_step
        hooks = EngineHooks(on_trial=_finished(study, on_trial), on_poll=on_poll, on_refused=partial(abandon_resume_state, store))
        stop_rule = stop_rule_for(settings, len(splits.val))
        engine = Worker(study, rdb, objective, spec, hooks=hooks, stop_rule=stop_rule, interrupts=interrupts, label=label, gpu=gpu)

        def on_wait() -> None:  # a PBT segment waiting for a member: re-queue a dead worker's, and keep to --timeout
            stores.ride_out(engine.heartbeats.fail_dead_trials)
            if spec.deadline.passed:
                raise WaitTimedOut("--timeout reached while waiting for a member to finish its segment; this place stays queued")

        objective.on_wait = on_wait
        try:
            report = engine.run()
        except KeyboardInterrupt:
            raise SearchInterrupted(
                f"interrupted: the running trial was marked FAIL and re-queued; any worker resumes it (`{spec.continue_command(study_name)}`)"
            ) from None
    return report


def _finished(study: optuna.Study, hook: Callable[[optuna.Study, FrozenTrial], None] | None) -> Callable[[FrozenTrial], None]:
    """The engine's "trial finished" hook: the trial's line, then ``hook(study, trial)``."""

    def on_trial(trial: FrozenTrial) -> None:
        console.print(trial_line(trial))
        if hook is not None:
            hook(study, trial)

    return on_trial


def _study_data(study: optuna.Study, settings: StudySettings, splits: Splits | None) -> Splits:
    """The study's data (loaded here unless given), checked against the digest the study recorded."""
    from mnist_hpo.data import load_splits

    if splits is None:
        splits = load_splits(settings.data, subset=settings.train_subset, log=console.print)
    if settings.data_digest and splits.digest != settings.data_digest:
        raise UserError(
            f"this worker's {settings.data} data (sha256 {splits.digest}) differ from the study's ({settings.data_digest}); fetch the same MNIST"
        )
    if DATA_SOURCE_ATTR not in study.user_attrs:
        study.set_user_attr(DATA_SOURCE_ATTR, splits.describe())
    return splits


def gpu_info(device) -> dict | None:
    """Which GPU this process trains on: the CUDA_VISIBLE_DEVICES entry, name, UUID and memory."""
    if device.type != "cuda":
        return None
    import torch

    index = device.index or 0
    props = torch.cuda.get_device_properties(index)
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return {
        "cuda_visible_devices": visible[index] if index < len(visible) else str(index),
        "name": props.name,
        "uuid": str(getattr(props, "uuid", "")),
        "memory_gib": round(props.total_memory / 2**30, 1),
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()
