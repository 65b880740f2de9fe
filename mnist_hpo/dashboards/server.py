"""`mnist-hpo dashboard`: optuna-dashboard on the study storage and the artifact folder the search uses.

optuna-dashboard has no login of its own and has write endpoints (notes, renames, deletions,
uploads), so `_guard.Guard` stands in front of it: only requests naming this server in ``Host``
(DNS rebinding), no cross-site writes, a token for every request where one is set (always, beyond
loopback), and read-only unless asked otherwise beyond loopback. It is served by waitress (a pool
of threads). The storage is opened the way the search opens it (SQLite in WAL mode with a busy
timeout), so a dashboard reading a study never makes a trial that is writing to it fail with
"database is locked". A missing database is an error, never a new empty file; a port in use is
found before anything starts.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna

from mnist_hpo import storage
from mnist_hpo.console import console
from mnist_hpo.dashboards._guard import TOKEN_ENV, Guard, read_token, served_hosts, show_hosts
from mnist_hpo.dashboards._layout import FitToWindow
from mnist_hpo.dashboards._speedup import fold_in_only_new_trials
from mnist_hpo.errors import UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
THREADS = 8  # requests served at once; optuna-dashboard polls every open study page every 10 s


class DashboardServer:
    """A bound, not yet serving, waitress server: ``serve_forever``, ``shutdown`` and ``server_close`` as socketserver's."""

    warm_up: threading.Thread | None = None  # the start-up load of every study's page, if asked for

    def __init__(self, waitress_server: Any, sockets: dict[int, Any], app: Guard) -> None:
        self._server = waitress_server
        self._sockets = sockets  # waitress's socket map: the listening socket, its wake-up pipe, the connections
        self._app = app
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self.server_address = (waitress_server.effective_host, int(waitress_server.effective_port))
        self.server_port = self.server_address[1]

    def get_app(self) -> Guard:
        return self._app

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        from waitress import wasyncore

        self._stopped.clear()
        try:
            while not self._stop.is_set():
                wasyncore.loop(timeout=poll_interval, map=self._sockets, use_poll=True, count=1)
        finally:
            self._stop.clear()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (running in another thread) and wait until it has returned."""
        self._stop.set()
        with contextlib.suppress(Exception):
            self._server.pull_trigger()
        self._stopped.wait()

    def server_close(self) -> None:
        from waitress import wasyncore

        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        wasyncore.close_all(self._sockets)


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
    *,
    warm_up: bool = False,
    read_only: bool | None = None,
    token: str | None = None,
    allowed_hosts: Iterable[str] = (),
    threads: int = THREADS,
) -> tuple[DashboardServer, list[str]]:
    """A bound, not yet serving, optuna-dashboard server behind the guard, and the lines to print about it.

    ``port`` 0 picks a free port (``server.server_port`` says which). ``read_only`` None means
    read-only beyond loopback, read-write on loopback. ``token`` (checked already, see
    ``_guard.read_token``) is required beyond loopback. ``allowed_hosts`` are more NAME[:PORT]
    the Host header may carry. ``warm_up`` starts loading every study's page once in the
    background (``server.warm_up``), filling the caches.
    """
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    allowed_hosts = list(allowed_hosts)
    served_hosts(host, port, allowed_hosts)  # a malformed --allowed-host is refused before anything opens
    remote = not is_loopback(host)
    if remote and token is None:
        raise UserError(
            f"--host {host} is beyond loopback and optuna-dashboard has no login: set ${TOKEN_ENV} or pass --token-file PATH "
            "(16+ characters) to require a token, or keep --host 127.0.0.1 and use an SSH tunnel"
        )
    if read_only is None:
        read_only = remote
    url = storage.resolve_url(storage_url)
    rdb = storage.open_storage(url, must_exist=True)  # a missing file is an error, never created here
    lines: list[str] = []
    store, shown = storage.existing_artifacts(artifacts)  # a folder may be missing; a bucket must answer
    if store is None:
        lines.append(
            f"warning: no artifact folder {shown}: pictures and checkpoints will not show; pass --artifacts DIR or s3://BUCKET/PREFIX"
        )
    listening = _bind(host, port)  # a port in use is found before optuna-dashboard loads (closed with it on a failure below)

    import waitress
    from optuna_dashboard import wsgi

    lines += fold_in_only_new_trials()
    # Optuna's cache of finished trials (what a Study wraps an RDBStorage in): optuna-dashboard
    # re-reads a study's trials every 10 s, and without it that is every trial, every time.
    cached = optuna.storages.get_storage(rdb)
    app = FitToWindow(wsgi(cached, artifact_store=store))
    bound_port = listening.getsockname()[1]
    guard = Guard(app, served_hosts(host, bound_port, allowed_hosts), bound_port, read_only=read_only, token=token)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth is N": all threads busy for a moment
    sockets: dict[int, Any] = {}
    served = waitress.create_server(
        guard,
        map=sockets,
        sockets=[listening],
        threads=threads,
        ident="mnist-hpo",
        clear_untrusted_proxy_headers=False,  # the guard reads X-Forwarded-Proto (the cookie's Secure flag), trusts no other
    )
    server = DashboardServer(served, sockets, guard)
    if warm_up:
        server.warm_up = warm_up_in_background(app, cached)
    mode = "read-only" if read_only else "read-write"
    login = "token required (Authorization: Bearer, or sign in at /login)" if token else "no token (loopback only)"
    lines.append(f"{mode}, {login}; serves Host {show_hosts(guard.hosts)}")
    where = f"artifacts {shown}" if store is not None else "no artifacts"
    lines.append(f"optuna-dashboard for {storage.mask_url(url)} ({where}) at {url_for(host, server.server_port)}")
    return server, lines


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not listening yet; waitress listens on it), or the one-line reason it cannot be."""
    listening = socket.socket(_family(host), socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host.strip("[]"), port))
    except OSError as exc:
        listening.close()
        raise _bind_error(host, port, exc) from None
    return listening


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
    *,
    read_only: bool | None = None,
    token_file: str | Path | None = None,
    allowed_hosts: Iterable[str] = (),
) -> None:
    """Start optuna-dashboard, print its URL and serve until Ctrl-C.

    The token comes from ``token_file`` or ``$MNIST_HPO_DASHBOARD_TOKEN``, never from the command line.
    """
    token = read_token(token_file, dict(os.environ))
    server, lines = make_dashboard_server(
        storage_url, artifacts, host, port, warm_up=True, read_only=read_only, token=token, allowed_hosts=allowed_hosts
    )
    for line in lines:
        if line.startswith("warning:"):
            print(line, file=sys.stderr, flush=True)
        else:
            console.print(line)
    try:  # from here on, Ctrl-C at any moment stops it the same way
        console.print("press Ctrl-C to stop")
        sys.stdout.flush()
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("dashboard stopped")
    finally:
        server.server_close()
