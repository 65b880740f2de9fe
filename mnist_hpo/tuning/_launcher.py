"""Several worker processes on this machine: where each runs (CPU threads, a GPU), start them, watch them.

Each is a real `mnist-hpo worker` process with its own sampler seed; the storage URL reaches it
through the environment, never the command line, where `ps` would show the password.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from mnist_hpo import storage as stores
from mnist_hpo.console import console, plural, progress
from mnist_hpo.deadline import DEADLINE_ENV, Deadline
from mnist_hpo.errors import SearchInterrupted, UserError
from mnist_hpo.redact import mask_url
from mnist_hpo.signals import Interrupts
from mnist_hpo.trainer import default_threads
from mnist_hpo.tuning._budget import FINISHED, budget_view
from mnist_hpo.tuning._display import trial_line
from mnist_hpo.tuning._spec import WorkerSpec
from mnist_hpo.tuning.attrs import WORKER_ATTR
from mnist_hpo.tuning.copies import own_trials
from mnist_hpo.tuning.settings import StudySettings
from mnist_hpo.tuning.tracking import MLFLOW_ENV

STOP_GRACE_S = 60  # how long stopped workers get to fail and re-queue their trials before they are killed


@dataclass
class Slot:
    index: int
    gpu: str | None  # this worker's CUDA_VISIBLE_DEVICES entry; None on the CPU


def plan_slots(workers: int | None, gpus: str | None, trials_per_gpu: int | None, device: str) -> list[Slot]:
    """Where each worker runs: K CPU workers, or one (or --trials-per-gpu) per GPU of --gpus."""
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if trials_per_gpu is not None and trials_per_gpu < 1:
        raise UserError(f"--trials-per-gpu must be at least 1, got {trials_per_gpu}")
    gpu_flags = gpus is not None or trials_per_gpu is not None
    if not gpu_flags and device == "cpu":
        return [Slot(i, None) for i in range(workers or 1)]
    import torch

    has_cuda = torch.cuda.is_available()
    if gpu_flags and not has_cuda:
        raise UserError(
            "--gpus and --trials-per-gpu need a CUDA GPU and none is visible here (torch.cuda.is_available() is False); "
            "use --workers K to run K worker processes on the CPU"
        )
    if gpu_flags and device == "cpu":
        raise UserError("--gpus and --trials-per-gpu put workers on GPUs; leave out --device cpu")
    if not has_cuda:
        return [Slot(i, None) for i in range(workers or 1)]
    visible = _visible_gpus(torch.cuda.device_count())
    chosen = visible if gpus is None or gpus.strip() == "all" else _chosen_gpus(gpus, visible)
    if gpu_flags:
        per = trials_per_gpu or 1
        placed = [gpu for gpu in chosen for _ in range(per)]
        if workers is not None and workers != len(placed):
            raise UserError(f"--workers {workers} does not match {len(chosen)} GPUs x {per} per GPU = {len(placed)}; give one or the other")
    else:
        placed = [chosen[i % len(chosen)] for i in range(workers or 1)]
    return [Slot(i, gpu) for i, gpu in enumerate(placed)]


def _visible_gpus(count: int) -> list[str]:
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[:count] if visible else [str(i) for i in range(count)]


def _chosen_gpus(gpus: str, visible: list[str]) -> list[str]:
    chosen = []
    for part in (p.strip() for p in gpus.split(",")):
        if not part.isdigit() or int(part) >= len(visible):
            raise UserError(f"--gpus {gpus}: no GPU {part!r}; {len(visible)} visible, numbered 0 to {len(visible) - 1}")
        chosen.append(visible[int(part)])
    if len(set(chosen)) != len(chosen):
        raise UserError(f"--gpus {gpus} names a GPU twice; use --trials-per-gpu to put several workers on one GPU")
    return chosen


def in_process(slots: list[Slot], gpus: str | None, trials_per_gpu: int | None) -> bool:
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


def launch_workers(url: str, storage: BaseStorage, study: optuna.Study, slots: list[Slot], spec: WorkerSpec) -> None:
    """Start one `mnist-hpo worker` process per slot and show their combined progress until all exit.

    Their logs are local files: in the artifact folder, or ./mnist-hpo-worker-logs with an object store.
    Each trains on ``spec.threads`` CPU threads, by default its share of the cores this process may use.
    With ``spec.mlflow`` (a tracking URI) each logs the trials it finishes there. Each inherits
    ``spec.deadline`` (the command's --timeout, counted from the command's start), so none starts a trial after it.
    """
    deadline, again = spec.deadline, spec.continue_command(study.study_name)
    if deadline.passed:
        console.print(f"--timeout reached before the workers started; what is left of the budget stays queued: continue with `{again}`")
        return
    threads = spec.threads if spec.threads is not None else default_threads(share=len(slots))
    location = str(spec.artifacts if spec.artifacts is not None else stores.DEFAULT_ARTIFACTS)
    stores.open_artifacts(location)
    if stores.is_object_store(location):
        logs = Path("mnist-hpo-worker-logs")
    else:
        location = str(Path(location).expanduser())
        logs = Path(location) / "worker-logs"
    logs.mkdir(exist_ok=True)
    each = replace(spec, artifacts=location, threads=threads)
    processes = [_start(url, study.study_name, slot, each, logs) for slot in slots]
    placement = ", ".join(f"GPU {s.gpu}" for s in slots) if slots[0].gpu is not None else f"the CPU, {plural(threads, 'thread')} each"
    console.print(f"started {len(slots)} worker processes on {placement}; their logs: {logs}/")
    interrupted = _watch(study, processes, deadline)
    if interrupted:
        raise SearchInterrupted(f"interrupted: running trials were marked FAIL and re-queued; continue with `{again}`")
    failed = [(slot, process.returncode, log) for slot, process, log in processes if process.returncode != 0]
    view = budget_view(storage, storage.get_study_id_from_name(study.study_name), StudySettings.load(study).n_trials or 0)
    for slot, code, log in failed:
        console.print(f"worker {slot.index} exited with status {code}: {last_error(log)} (log: {log})")
    if failed and not view.met:
        slot, code, log = failed[0]
        raise UserError(
            f"{len(failed)} of {len(slots)} workers failed before the budget was met ({view.describe()}); "
            f"worker {slot.index}: {last_error(log)}; continue with `{again}`"
        )
    console.print(f"all workers done: {view.describe()}")


def _start(url: str, study: str, slot: Slot, spec: WorkerSpec, logs: Path) -> tuple[Slot, subprocess.Popen, Path]:
    """`mnist-hpo worker` for ``slot``, with ``spec``'s options (its artifacts and threads already resolved)."""
    assert spec.threads is not None
    threads, deadline, mlflow = spec.threads, spec.deadline, spec.mlflow
    env = dict(os.environ)
    env[stores.STORAGE_ENV] = url
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "mnist_hpo", "worker", "--study", study, "--artifacts", str(spec.artifacts), "--threads", str(threads)]
    command += spec.faults.cli_args()
    if slot.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot.gpu
        command += ["--device", "cuda"]
    else:
        command += ["--device", spec.device]
    if spec.seed is not None:
        command += ["--seed", str(spec.seed + slot.index)]
    if deadline.bounded:  # what is left of it, not --timeout again; to the instant through the environment
        command += ["--timeout", f"{max(0.1, deadline.left()):.1f}"]
    env.pop(DEADLINE_ENV, None)
    env.update(deadline.environ())
    env.pop(MLFLOW_ENV, None)  # the worker logs to MLflow only if this process was asked to
    if mlflow is not None and mask_url(mlflow) == mlflow:
        command += ["--mlflow", mlflow]
    elif mlflow is not None:  # a password reaches the worker through its environment, never its command line
        env[MLFLOW_ENV] = mlflow
    log = logs / f"{study}-worker-{slot.index}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    return slot, process, log


def _watch(study: optuna.Study, processes: list[tuple[Slot, subprocess.Popen, Path]], deadline: Deadline) -> bool:
    """Show the workers' trials as they finish until every process exits; True if interrupted (then stop them)."""
    budget = StudySettings.load(study).n_trials or 0
    reported = {t.number for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL))}
    interrupted = False
    with progress() as bar:
        task = bar.add_task("trials", total=budget, timeout=deadline.seconds())

        def sweep() -> None:
            trials = study.get_trials(deepcopy=False)
            for trial in sorted(trials, key=lambda t: t.number):
                if trial.state.is_finished() and trial.number not in reported:
                    reported.add(trial.number)
                    console.print(f"{trial_line(trial)}  ({trial.user_attrs.get(WORKER_ATTR, '?')})")
            counts = Counter(t.state for t in own_trials(trials))
            alive = sum(1 for _, p, _ in processes if p.poll() is None)
            bar.update(
                task,
                completed=counts[TrialState.COMPLETE] + counts[TrialState.PRUNED],
                description=f"{counts[TrialState.RUNNING]} running on {alive} workers",
            )

        try:
            with Interrupts().installed():  # Ctrl-C or SIGTERM to this process stops the workers cleanly
                while any(p.poll() is None for _, p, _ in processes):
                    time.sleep(1.0)
                    sweep()
        except KeyboardInterrupt:
            interrupted = True
            _stop(processes)
        with contextlib.suppress(Exception):
            sweep()
    return interrupted


def _stop(processes: list[tuple[Slot, subprocess.Popen, Path]]) -> None:
    for _, process, _ in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for _, process, _ in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()  # its trial is retried once its heartbeat is stale
            process.wait()


def last_error(log: Path) -> str:
    """The line of a worker's log that says why it stopped."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("error:") or "Error" in line or line.startswith("interrupted")]
    return (errors or lines or ["no output"])[-1][:300]
