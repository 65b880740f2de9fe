"""`status`, `best`, `export`, `ensemble`, `dashboard`, `report`, `storage upgrade` and `storage-proxy`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mnist_hpo.cli._app import ArtifactsOpt, DeviceOpt, StorageOpt, app

FormatOpt = typer.Option(
    "pt", "--format", help="pt (mnist-hpo checkpoint), safetensors, onnx or pt2 (torch.export); the last two run without mnist-hpo."
)
InputDtypeOpt = typer.Option(
    "float32", "--input-dtype", help="Pixel type the onnx and pt2 programs take: float32 or uint8 (values 0-255 either way)."
)
storage_app = typer.Typer(help="The study storage.", no_args_is_help=True)
app.add_typer(storage_app, name="storage")


@app.command("status")
def status(study: Optional[str] = typer.Option(None, help="One study (default: all)."), storage: Optional[str] = StorageOpt) -> None:
    """All studies, or one study's counts, budget, retries, best trial or Pareto front."""
    from mnist_hpo.commands.status import show_status

    show_status(storage, study)


@app.command("best")
def best(
    study: str = typer.Option(..., help="Study name."),
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[str] = ArtifactsOpt,
    test: bool = typer.Option(False, "--test", help="Also report the test accuracy of its checkpoint."),
    device: str = DeviceOpt,
) -> None:
    """The best trial by validation accuracy."""
    from mnist_hpo.commands.status import show_best

    show_best(storage, study, test, artifacts, device)


@app.command("export")
def export(
    study: str = typer.Option(..., help="Study name."),
    out: Path = typer.Option(..., help="Output file."),
    trial: Optional[int] = typer.Option(None, help="Trial number (default: the best by validation)."),
    format: str = FormatOpt,
    input_dtype: str = InputDtypeOpt,
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[str] = ArtifactsOpt,
) -> None:
    """Write a trial's model, with a model card beside it, to a file that runs elsewhere; prints its sha256."""
    from mnist_hpo.commands.export import export_trial

    export_trial(storage, study, trial, out, format, artifacts, input_dtype)


@app.command("ensemble")
def ensemble(
    study: str = typer.Option(..., help="Study name."),
    top_k: int = typer.Option(
        3, "--top-k", help="Members: the K best trials by validation (of a PBT study: the K best members, one segment each)."
    ),
    out: Path = typer.Option(..., help="Output file (one model: the mean of the members' softmax)."),
    format: str = FormatOpt,
    input_dtype: str = InputDtypeOpt,
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[str] = ArtifactsOpt,
    device: str = DeviceOpt,
) -> None:
    """Average the softmax of the K best trials; reports validation and test accuracy; exports it as one model."""
    from mnist_hpo.commands.export import build_ensemble

    build_ensemble(storage, study, top_k, out, artifacts, device, format, input_dtype)


@app.command("dashboard")
def dashboard(
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[str] = ArtifactsOpt,
    host: str = typer.Option("127.0.0.1", help="Address to listen on; beyond loopback a token is required."),
    port: int = typer.Option(8080, help="Port to listen on; 0 picks a free one."),
    allowed_host: Optional[list[str]] = typer.Option(
        None,
        "--allowed-host",
        metavar="NAME[:PORT]",
        help="Also answer requests for this Host (an ingress or proxy name); repeatable. Loopback names and --host always are.",
    ),
    read_only: Optional[bool] = typer.Option(
        None,
        "--read-only/--read-write",
        help="Refuse every change (notes, renames, deletions, uploads, tells). Default: read-only beyond loopback, read-write on it.",
    ),
    token_file: Optional[Path] = typer.Option(
        None,
        "--token-file",
        metavar="PATH",
        help="File holding the access token (16+ characters), or set $MNIST_HPO_DASHBOARD_TOKEN. Required beyond loopback.",
    ),
    allow_remote: bool = typer.Option(False, "--allow-remote", hidden=True),  # gone: a one-line error says what replaced it
    token: Optional[str] = typer.Option(None, "--token", hidden=True),  # never on the command line: a one-line error
) -> None:
    """Serve optuna-dashboard on the study storage and artifacts; prints its URL."""
    from mnist_hpo.errors import UserError

    if token is not None:
        raise UserError(
            "the dashboard token is never given on the command line (other users see it in the process list): "
            "set $MNIST_HPO_DASHBOARD_TOKEN or pass --token-file PATH"
        )
    if allow_remote:
        raise UserError(
            "--allow-remote is gone: beyond loopback the dashboard now requires a token ($MNIST_HPO_DASHBOARD_TOKEN or "
            "--token-file PATH) and is read-only unless --read-write; drop --allow-remote"
        )
    from mnist_hpo.dashboards import serve_dashboard

    serve_dashboard(storage, artifacts, host, port, read_only=read_only, token_file=token_file, allowed_hosts=allowed_host or ())


@app.command("report")
def report(
    study: str = typer.Option(..., help="Study name."),
    out: Path = typer.Option(..., help="HTML file to write."),
    storage: Optional[str] = StorageOpt,
    artifacts: Optional[str] = ArtifactsOpt,
) -> None:
    """Write one self-contained HTML report of a study (opens offline)."""
    from mnist_hpo.dashboards import write_report

    write_report(storage, study, out, artifacts)


@storage_app.command("upgrade")
def storage_upgrade(storage: Optional[str] = StorageOpt) -> None:
    """Bring an SQL storage's schema, and every study's stored settings, up to date (back it up first)."""
    from mnist_hpo.commands.storage import upgrade

    upgrade(storage)


@app.command("storage-proxy")
def storage_proxy(
    storage: Optional[str] = StorageOpt,
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface; it has no authentication)."),
    port: int = typer.Option(13000, help="Port to listen on."),
) -> None:
    """Serve an SQL storage over Optuna's gRPC proxy; workers then use --storage grpc://HOST:PORT."""
    from mnist_hpo.commands.storage import proxy

    proxy(storage, host, port)
