"""`mnist-hpo dashboard`: optuna-dashboard on the study storage and the artifact folder the search uses.

optuna-dashboard has no authentication and has write endpoints (notes, renames, deletions), so
it listens on loopback unless told otherwise, loudly. The storage is opened the way the search
opens it (SQLite in WAL mode with a busy timeout), so a dashboard reading a study never makes a
trial that is writing to it fail with "database is locked". A missing database is an error, never
a new empty file; a port in use is found before anything starts.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import sys
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.util import setup_testing_defaults

import optuna

from mnist_hpo import storage
from mnist_hpo.console import console
from mnist_hpo.dashboards._speedup import fold_in_only_new_trials
from mnist_hpo.errors import UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
REMOTE_WARNING = (
    "warning: optuna-dashboard has no authentication and can rename, edit and delete studies; anyone who can reach {where} can do so"
)


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # what optuna-dashboard's own CLI serves with: one thread per request
    warm_up: threading.Thread | None = None  # the start-up load of every study's page, if asked for


class _IPv6Server(_ThreadedServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per request would drown the URL
        pass


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/dashboard"


def _family(host: str) -> socket.AddressFamily:
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on --host {host}: {exc.strerror or exc}; use an IP address such as 127.0.0.1") from None
    return infos[0][0]


def check_port_free(host: str, port: int) -> None:
    """UserError unless ``host:port`` can be bound now (the same SO_REUSEADDR rule the server uses)."""
    family = _family(host)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise _bind_error(host, port, exc) from None


def _bind_error(host: str, port: int, exc: OSError) -> UserError:
    if exc.errno == errno.EADDRINUSE:
        return UserError(
            f"port {port} on {host} is already in use (another dashboard?); pass --port with a free port, e.g. --port {port + 1}"
        )
    if exc.errno == errno.EACCES:
        return UserError(f"no permission to listen on port {port}; use a port above 1023, e.g. --port 8080")
    if exc.errno == errno.EADDRNOTAVAIL:
        return UserError(f"--host {host} is not an address of this machine; use 127.0.0.1")
    return UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def make_dashboard_server(
    storage_url: str | None = None,
    artifacts: str | Path | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allow_remote: bool = False,
    warm_up: bool = False,
) -> tuple[_ThreadedServer, list[str]]:
    """A bound, not yet serving, optuna-dashboard server and the lines to print about it.

    ``port`` 0 picks a free port (``server.server_port`` says which). ``warm_up`` starts loading
    every study's page once in the background (``server.warm_up``), filling the caches.
    """
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    remote = not is_loopback(host)
    if remote and not allow_remote:
        raise UserError(
            f"--host {host} is not a loopback address and optuna-dashboard has no authentication; "
            "pass --allow-remote to expose it anyway (better: an SSH tunnel to 127.0.0.1)"
        )
    url = storage.resolve_url(storage_url)
    rdb = storage.open_storage(url, must_exist=True)  # a missing file is an error, never created here
    lines: list[str] = []
    store, shown = storage.existing_artifacts(artifacts)  # a folder may be missing; a bucket must answer
    if store is None:
        lines.append(
            f"warning: no artifact folder {shown}: pictures and checkpoints will not show; pass --artifacts DIR or s3://BUCKET/PREFIX"
        )
    check_port_free(host, port)

    from optuna_dashboard import wsgi

    lines += fold_in_only_new_trials()
    # Optuna's cache of finished trials (what a Study wraps an RDBStorage in): optuna-dashboard
    # re-reads a study's trials every 10 s, and without it that is every trial, every time.
    cached = optuna.storages.get_storage(rdb)
    app = wsgi(cached, artifact_store=store)
    server_class = _IPv6Server if _family(host) == socket.AF_INET6 else _ThreadedServer
    try:
        server = make_server(host.strip("[]"), port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as exc:  # lost a race for the port since the check
        raise _bind_error(host, port, exc) from None
    if remote:
        lines.append(REMOTE_WARNING.format(where=f"{host}:{server.server_port}"))
    if warm_up:
        server.warm_up = warm_up_in_background(app, cached)
    where = f"artifacts {shown}" if store is not None else "no artifacts"
    lines.append(f"optuna-dashboard for {storage.mask_url(url)} ({where}) at {url_for(host, server.server_port)}")
    return server, lines


def warm_up_in_background(app: Any, cached: optuna.storages.BaseStorage) -> threading.Thread:
    """Load every study's page once, in the background, so that nobody waits for the first load.

    At 10,000 trials on 2 cores a cold first load is about 9.6 s (BENCHMARKS.md): some 7 s of it
    reading the trials through the ORM into Optuna's cache, the rest optuna-dashboard's first walk
    over them for its search spaces. Both caches outlive the request, so one request made through
    the app itself, as soon as the server starts, leaves the first real load as fast as the later
    ones. A failure is left to the request that needs the page, which reads it again and says why.
    """

    def load_pages() -> None:
        with contextlib.suppress(Exception):
            for study in cached.get_all_studies():
                environ: dict[str, Any] = {
                    "PATH_INFO": f"/api/studies/{cached.get_study_id_from_name(study.study_name)}",
                    "QUERY_STRING": "after=0",
                }
                setup_testing_defaults(environ)
                for _ in app(environ, lambda status, headers, exc_info=None: None):
                    pass

    thread = threading.Thread(target=load_pages, name="dashboard-warm-up", daemon=True)
    thread.start()
    return thread


def serve_dashboard(
    storage_url: str | None = None,
    artifacts: str | Path | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allow_remote: bool = False,
) -> None:
    """Start optuna-dashboard, print its URL and serve until Ctrl-C."""
    server, lines = make_dashboard_server(storage_url, artifacts, host, port, allow_remote, warm_up=True)
    for line in lines:
        if line.startswith("warning:"):
            print(line, file=sys.stderr, flush=True)
        else:
            console.print(line)
    console.print("press Ctrl-C to stop")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("dashboard stopped")
    finally:
        server.server_close()
