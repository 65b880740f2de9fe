"""One worker in this process: join a study, load its data, build the objective, run the engine with progress."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from mnist_hpo import storage as stores
from mnist_hpo.console import console, plural, progress
from mnist_hpo.errors import SearchInterrupted, UserError
from mnist_hpo.search._budget import BudgetView, wait_for_settings
from mnist_hpo.search._display import trial_line
from mnist_hpo.search._engine import Worker, WorkerReport, worker_label
from mnist_hpo.search._retries import Faults, RetryDeadTrial
from mnist_hpo.search.pruners import make_pruner
from mnist_hpo.search.samplers import make_sampler
from mnist_hpo.search.settings import StudySettings
from mnist_hpo.search.stopping import stop_rule_for
from mnist_hpo.signals import Interrupts

if TYPE_CHECKING:
    import torch
    from optuna.storages import BaseStorage

    from mnist_hpo.data import Splits
    from mnist_hpo.search.objective import Objective


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


def study_settings(study: optuna.Study, storage: optuna.storages.BaseStorage) -> StudySettings:
    """The settings of a study made for workers; a one-line error for a half-made or budget-less one."""
    settings = wait_for_settings(study, storage)
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
    faults: Faults,
    *,
    device: str = "auto",
    artifacts: str | Path | None = None,
    seed: int | None = None,
    timeout: float | None = None,
    threads: int | None = None,
    splits: Splits | None = None,
    on_finish: Callable | None = None,
    on_stop: Callable[[optuna.Study, str], None] | None = None,
    again: str | None = None,
) -> WorkerReport:
    """Run one worker in this process against an existing study until its budget is met or a stop rule stops it.

    ``on_stop(study, reason)`` runs when the study stopped early (the dashboard note says why).
    ``threads``: CPU threads to train with (default: $OMP_NUM_THREADS, else every core this process may use).
    """
    from mnist_hpo.search.objective import Objective
    from mnist_hpo.trainer import resolve_device, use_threads

    target = resolve_device(device)
    stores.check_artifacts(artifacts)  # a wrong folder, bucket or credentials: one line, creating nothing
    use_threads(threads)
    rdb = open_for_workers(url, faults)
    study = stores.load_study(rdb, study_name)
    store = stores.open_artifacts(artifacts)  # the storage and the study are there: now make the folder
    settings = study_settings(study, rdb)
    splits = _study_data(study, settings, splits)
    sampler = make_sampler(settings.sampler, seed, settings.multi_objective, constant_liar=True)
    study = stores.load_study(rdb, study_name, sampler=sampler, pruner=make_pruner(settings.pruner, settings.epochs))
    objective = Objective(settings, splits, target, store, seed=settings.seed or 0, on_finish=on_finish)
    report = _run_engine(study, rdb, objective, faults, settings, splits, target, store, timeout=timeout, again=again)
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
    faults: Faults,
    settings: StudySettings,
    splits: Splits,
    target: torch.device,
    store: object,  # the artifact store, shown in the worker's first line
    *,
    timeout: float | None,
    again: str | None,
) -> WorkerReport:
    """Announce this worker, then run the trial engine with a progress bar until it stops."""
    study_name = study.study_name
    gpu = gpu_info(target)
    label = worker_label()
    where = f"on {target}" + (
        f" ({gpu['name']}, CUDA_VISIBLE_DEVICES={gpu['cuda_visible_devices']})" if gpu else f", {plural(_threads(), 'CPU thread')}"
    )
    console.print(
        f"worker {label} joined study {study_name!r} in {stores.describe(rdb)} {where}, artifacts in {store}; "
        f"heartbeat every {faults.heartbeat_interval} s, grace {faults.grace_period} s, up to {faults.max_retries} retries"
    )
    interrupts = Interrupts()
    with interrupts.installed(), progress() as bar:
        task = bar.add_task("trials", total=None, timeout=timeout, unit="trials finished")

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
                epoch_of[trial.number] = len(trial.user_attrs.get("learning_curve") or []) + 1
            epoch = epoch_of.get(trial.number, 1)
            bar.update(task, description=f"trial {trial.number} epoch {epoch}/{settings.epochs} batch {done}/{total}")

        objective.on_epoch, objective.on_step = on_epoch, on_step
        engine = Worker(
            study,
            rdb,
            objective,
            faults,
            label=label,
            gpu=gpu,
            timeout=timeout,
            on_trial=lambda trial: console.print(trial_line(trial)),
            on_poll=on_poll,
            interrupts=interrupts,
            stop_rule=stop_rule_for(settings, len(splits.val)),
            on_refused=objective.abandon,
        )
        try:
            report = engine.run()
        except KeyboardInterrupt:
            raise SearchInterrupted(
                "interrupted: the running trial was marked FAIL and re-queued; any worker resumes it "
                f"(`{again or f'mnist-hpo worker --study {study_name}'}`)"
            ) from None
    return report


def _study_data(study: optuna.Study, settings: StudySettings, splits: Splits | None) -> Splits:
    """The study's data (loaded here unless given), checked against the digest the study recorded."""
    from mnist_hpo.data import load_splits

    if splits is None:
        splits = load_splits(settings.data, subset=settings.train_subset, log=console.print)
    if settings.data_digest and splits.digest != settings.data_digest:
        raise UserError(
            f"this worker's {settings.data} data (sha256 {splits.digest}) differ from the study's ({settings.data_digest}); fetch the same MNIST"
        )
    if "data_source" not in study.user_attrs:
        study.set_user_attr("data_source", splits.describe())
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
