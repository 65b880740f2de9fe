"""`search`, `worker` and `study create`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mnist_hpo.cli._app import (
    ArtifactsOpt,
    DeviceOpt,
    GpusOpt,
    GraceOpt,
    HeartbeatOpt,
    MaxRetriesOpt,
    ProfileOpt,
    SpaceOpt,
    StorageOpt,
    TrialsPerGpuOpt,
    WorkersOpt,
    WorkerThreadsOpt,
    app,
    command_line,
)

study_app = typer.Typer(help="Studies for workers.", no_args_is_help=True)
PrunerOpt = typer.Option(
    None,
    help="sha (successive halving, default), hyperband, median, percentile, patient, wilcoxon or none; "
    "with two objectives mo-asha (default), threshold or none.",
)
StopAfterOpt = typer.Option(
    None, "--stop-after", help="Stop the study once N finished trials in a row bring no better best validation accuracy."
)
TargetOpt = typer.Option(None, "--target", help="Stop the study once a trial reaches this validation accuracy, in (0, 1].")
TerminatorOpt = typer.Option(
    False, "--terminator", help="Stop the study when Optuna's Terminator's regret bound falls below the validation noise."
)
MlflowOpt = typer.Option(
    None,
    "--mlflow",
    envvar="MNIST_HPO_MLFLOW",  # tuning.MLFLOW_ENV: how --workers passes on a URI with a password
    metavar="URI",
    help="Log every trial this process's workers finish as an MLflow run (experiment: the study's name) to this tracking URI; "
    "needs pip install -e '.[mlflow]'.",
)
PbtOpt = typer.Option(
    False,
    "--pbt",
    help="Population-based training: a population trains side by side; every --exploit-every epochs a member in the "
    "bottom quarter copies one in the top quarter and perturbs its learning rate, dropouts, weight decay and augmentation.",
)
PopulationOpt = typer.Option(None, "--population", help="--pbt: members of the population (default: the profile's; quick 8).")
ExploitEveryOpt = typer.Option(None, "--exploit-every", help="--pbt: epochs between exploit steps (default: the profile's; quick 2).")
BaselineOpt = typer.Option(
    None,
    "--baseline/--no-baseline",
    help="New study: train the published configuration first, as trial 0, to compare the best trial with (default: yes, "
    "except on the quick profile, where it costs a quarter of the 10 minutes).",
)
app.add_typer(study_app, name="study")


@app.command("search")
def search(
    study: Optional[str] = typer.Option(None, help="Study name (default: mnist-PROFILE)."),
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[str] = ArtifactsOpt,
    n_trials: Optional[int] = typer.Option(
        None, "--n-trials", help="New study: its budget of finished trials; existing study: trials to add (default: the profile's)."
    ),
    timeout: Optional[float] = typer.Option(
        None, help="Bound the command from its start: after this many seconds it waits no more and starts no trial (the rest stay queued)."
    ),
    profile: Optional[str] = ProfileOpt,
    space: Optional[Path] = SpaceOpt,
    sampler: Optional[str] = typer.Option(None, help="tpe (default), cmaes, gp, random, nsga2 or qmc."),
    pruner: Optional[str] = PrunerOpt,
    seed: Optional[int] = typer.Option(None, help="Seed for a reproducible one-worker study."),
    device: str = DeviceOpt,
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs per trial (default: the profile's)."),
    max_params: Optional[int] = typer.Option(None, "--max-params", help="Prune trials whose network has more parameters."),
    objectives: str = typer.Option("accuracy", help="accuracy, or accuracy,params for a Pareto front."),
    stop_after: Optional[int] = StopAfterOpt,
    target: Optional[float] = TargetOpt,
    terminator: bool = TerminatorOpt,
    warm_start: Optional[str] = typer.Option(
        None,
        "--warm-start",
        help="New study only: seed the sampler with the finished trials of this study (same storage, space and data); they never count in the budget or best.",
    ),
    workers: Optional[int] = WorkersOpt,
    gpus: Optional[str] = GpusOpt,
    trials_per_gpu: Optional[int] = TrialsPerGpuOpt,
    heartbeat_interval: int = HeartbeatOpt,
    grace_period: Optional[int] = GraceOpt,
    max_retries: int = MaxRetriesOpt,
    threads: Optional[int] = WorkerThreadsOpt,
    mlflow: Optional[str] = MlflowOpt,
    pbt: bool = PbtOpt,
    population: Optional[int] = PopulationOpt,
    exploit_every: Optional[int] = ExploitEveryOpt,
    baseline: Optional[bool] = BaselineOpt,
) -> None:
    """Create or continue a study and run its trials (no arguments: the quick profile into ./mnist-hpo.db)."""
    from mnist_hpo.api import search as run
    from mnist_hpo.commands.search import show_outcome

    done = run(
        study,
        storage=storage,
        artifacts=artifacts,
        n_trials=n_trials,
        timeout=timeout,
        profile=profile,
        space=space,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        device=device,
        epochs=epochs,
        max_params=max_params,
        objectives=objectives,
        stop_after=stop_after,
        target=target,
        terminator=terminator,
        warm_start=warm_start,
        workers=workers,
        gpus=gpus,
        trials_per_gpu=trials_per_gpu,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        max_retries=max_retries,
        threads=threads,
        mlflow=mlflow,
        pbt=pbt,
        population=population,
        exploit_every=exploit_every,
        baseline=baseline,
        progress=True,
        command=command_line(),
    )
    show_outcome(done.study, storage, artifacts)


@app.command("worker")
def worker(
    study: str = typer.Option(..., help="Study name (made by `mnist-hpo study create` or `search`)."),
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[str] = ArtifactsOpt,
    device: str = DeviceOpt,
    seed: Optional[int] = typer.Option(None, help="Sampler seed of this worker (default: random; give each worker its own)."),
    timeout: Optional[float] = typer.Option(
        None, help="Bound the command from its start: after this many seconds it waits no more and starts no trial."
    ),
    workers: Optional[int] = typer.Option(None, "--workers", help="Start K worker processes on this machine instead of one."),
    gpus: Optional[str] = GpusOpt,
    trials_per_gpu: Optional[int] = TrialsPerGpuOpt,
    heartbeat_interval: int = HeartbeatOpt,
    grace_period: Optional[int] = GraceOpt,
    max_retries: int = MaxRetriesOpt,
    threads: Optional[int] = WorkerThreadsOpt,
    mlflow: Optional[str] = MlflowOpt,
) -> None:
    """Join an existing study and run its trials until its global budget of finished trials is met."""
    from mnist_hpo.commands.search import worker as run
    from mnist_hpo.tuning import SearchRequest

    run(
        SearchRequest(
            study=study,
            storage=storage,
            artifacts=artifacts,
            device=device,
            seed=seed,
            timeout=timeout,
            workers=workers,
            gpus=gpus,
            trials_per_gpu=trials_per_gpu,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            max_retries=max_retries,
            threads=threads,
            mlflow=mlflow,
        )
    )


@study_app.command("create")
def study_create(
    study: str = typer.Option(..., help="Study name."),
    storage: Optional[str] = StorageOpt,
    n_trials: Optional[int] = typer.Option(
        None, "--n-trials", help="The global budget: finished trials across all workers (default: the profile's; can be raised later)."
    ),
    profile: Optional[str] = ProfileOpt,
    space: Optional[Path] = SpaceOpt,
    sampler: Optional[str] = typer.Option(None, help="tpe (default), cmaes, gp, random, nsga2 or qmc."),
    pruner: Optional[str] = PrunerOpt,
    seed: Optional[int] = typer.Option(None, help="Seed of the trials' training (workers seed their samplers themselves)."),
    device: str = typer.Option("auto", "--device", help="Only picks the default profile: paper with a GPU here, else quick."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs per trial (default: the profile's)."),
    max_params: Optional[int] = typer.Option(None, "--max-params", help="Prune trials whose network has more parameters."),
    objectives: str = typer.Option("accuracy", help="accuracy, or accuracy,params for a Pareto front."),
    stop_after: Optional[int] = StopAfterOpt,
    target: Optional[float] = TargetOpt,
    terminator: bool = TerminatorOpt,
    pbt: bool = PbtOpt,
    population: Optional[int] = PopulationOpt,
    exploit_every: Optional[int] = ExploitEveryOpt,
    baseline: Optional[bool] = BaselineOpt,
) -> None:
    """Create a study for workers with its settings and trial budget; an existing one is kept (idempotent)."""
    from mnist_hpo.commands.search import study_create as run
    from mnist_hpo.tuning import SearchRequest

    run(
        SearchRequest(
            study=study,
            storage=storage,
            n_trials=n_trials,
            profile=profile,
            space_file=space,
            sampler=sampler,
            pruner=pruner,
            seed=seed,
            device=device,
            epochs=epochs,
            max_params=max_params,
            objectives=objectives,
            stop_after=stop_after,
            target=target,
            terminator=terminator,
            pbt=pbt,
            population=population,
            exploit_every=exploit_every,
            baseline=baseline,
            command=command_line(),
        )
    )
