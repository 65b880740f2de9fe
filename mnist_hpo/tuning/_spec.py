"""What a worker runs with, as one object: from the command line to every worker, in this process or spawned.

`search`, `worker` and `study create` build one ``WorkerSpec`` from their options; the in-process
worker (``_run.work``), the worker processes (``_launcher``) and the engine (``_engine.Worker``) read
it, so an option added here reaches every worker without another argument on each function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_hpo.deadline import NEVER, Deadline
from mnist_hpo.tuning._retries import Faults

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from mnist_hpo.tuning._budget import BudgetView


@dataclass(frozen=True)
class WorkerSpec:
    """How a worker runs (not which study: that comes with the storage)."""

    faults: Faults
    device: str = "auto"
    artifacts: str | Path | None = None  # a folder, or s3://BUCKET/PREFIX (default ./mnist-hpo-artifacts)
    seed: int | None = None  # the sampler's; worker K of `--workers` gets seed + K
    deadline: Deadline = NEVER  # the command's --timeout, counted from its start: no trial starts after it
    threads: int | None = None  # CPU threads to train with (default: this process's cores, shared among its workers)
    mlflow: str | None = None  # an MLflow tracking URI every finished trial is logged to
    again: str | None = None  # the command that continues the study, named by interrupts and faults

    def continue_command(self, study_name: str) -> str:
        return self.again or f"mnist-hpo worker --study {study_name}"


@dataclass(frozen=True)
class EngineHooks:
    """What the engine tells its caller: a trial finished, the budget was polled, a result was refused."""

    on_trial: Callable[[FrozenTrial], None] | None = None  # every trial this worker finishes, failed ones included
    on_poll: Callable[[BudgetView], None] | None = None  # the study's counts, each time the engine reads them
    on_refused: Callable[[optuna.Study, int], str] | None = None  # cleans up what a refused trial left; says what it did
