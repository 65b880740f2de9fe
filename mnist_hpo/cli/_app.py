"""The typer application and the options several commands share."""

from __future__ import annotations

import sys

import typer

from mnist_hpo import redact

app = typer.Typer(
    help="Optuna hyperparameter search for the BatchNorm MNIST CNNs of An et al. 2020.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

StorageOpt = typer.Option(None, "--storage", help="Storage URL (default: $MNIST_HPO_STORAGE or sqlite:///mnist-hpo.db).")
ArtifactsOpt = typer.Option(
    None,
    "--artifacts",
    help="Artifact folder (default: ./mnist-hpo-artifacts), or s3://BUCKET/PREFIX on an S3-compatible store (AWS_ENDPOINT_URL and AWS credentials from the environment).",
)
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda.")
WorkersOpt = typer.Option(
    None, "--workers", help="Run K worker processes to the study's global budget (SQLite: K=1 only; use journal:PATH or PostgreSQL)."
)
GpusOpt = typer.Option(
    None, "--gpus", help="GPUs for the workers, e.g. 0,1,2,3 (default: all visible), one worker each via CUDA_VISIBLE_DEVICES."
)
TrialsPerGpuOpt = typer.Option(None, "--trials-per-gpu", help="Workers packed onto each GPU (small models).")
HeartbeatOpt = typer.Option(10, "--heartbeat-interval", help="Seconds between a running trial's heartbeats.")
GraceOpt = typer.Option(None, "--grace-period", help="Seconds without a heartbeat before a trial counts as dead (default: 6 heartbeats).")
MaxRetriesOpt = typer.Option(
    3, "--max-retries", help="Times a dead worker's trial is re-queued with its parameters, resuming from its checkpoint."
)
ThreadsOpt = typer.Option(
    None,
    "--threads",
    help="CPU threads (default: $OMP_NUM_THREADS if set, else the cores this process may use: its CPU affinity and cgroup CPU quota).",
)
WorkerThreadsOpt = typer.Option(
    None,
    "--threads",
    help="CPU threads per worker (default: $OMP_NUM_THREADS if set, else the cores this process may use, by CPU affinity "
    "and cgroup CPU quota, shared among the --workers).",
)
ProfileOpt = typer.Option(None, "--profile", help="smoke, quick (CPU default) or paper (GPU default).")
SpaceOpt = typer.Option(None, "--space", help="TOML file that fixes, narrows, widens or drops parameters.")


def command_line() -> str:
    """The command as typed, secrets masked: recorded in the study it creates, shown in its note and report."""
    return redact.command_line(sys.argv[1:])
