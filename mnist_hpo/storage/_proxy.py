"""`mnist-hpo storage-proxy`: Optuna's gRPC storage proxy in front of an SQL storage.

Hundreds of workers each holding their own PostgreSQL connections hit the server's connection
limit and repeat the same queries; the proxy holds one small pool and one trial cache for all of
them. Workers then use --storage grpc://HOST:PORT. The proxy has no authentication: keep it on a
private network (a ClusterIP Service, a cluster's internal interface).
"""

from __future__ import annotations

import errno
import importlib.util
import socket
import warnings
from concurrent.futures import ThreadPoolExecutor

from optuna.exceptions import ExperimentalWarning
from optuna.storages import get_storage, run_grpc_proxy_server

from mnist_hpo.errors import UserError
from mnist_hpo.signals import Interrupts
from mnist_hpo.storage._open import open_storage
from mnist_hpo.storage._sql import is_sql_url
from mnist_hpo.storage._urls import mask_url, resolve_url

PROXY_THREADS = 16


def run_storage_proxy(url: str | None, host: str, port: int) -> None:
    """Serve the SQL storage ``url`` on grpc://host:port until SIGTERM or Ctrl-C."""
    url = resolve_url(url)
    if not is_sql_url(url):
        raise UserError(f"the gRPC proxy serves an SQL storage (sqlite:// or postgresql://), not {mask_url(url)}")
    if not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    if importlib.util.find_spec("grpc") is None:
        raise UserError("the gRPC proxy needs grpcio and protobuf: pip install 'mnist-hpo[grpc]'")
    _check_port_free(host, port)
    storage = get_storage(open_storage(url))  # the cached storage, as Optuna recommends for the proxy
    print(f"serving {mask_url(url)} on grpc://{host}:{port}; workers use --storage grpc://{host}:{port}", flush=True)
    with Interrupts().installed(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        try:
            run_grpc_proxy_server(storage, host=host, port=port, thread_pool=ThreadPoolExecutor(max_workers=PROXY_THREADS))
        except KeyboardInterrupt:
            pass
        except RuntimeError as exc:  # grpc could not bind after all (lost a race for the port)
            raise UserError(f"cannot listen on {host}:{port} ({exc}); pick another --port or --host") from None
    print("storage proxy stopped", flush=True)


def _check_port_free(host: str, port: int) -> None:
    """A port in use is a one-line error before the server starts (gRPC would only log it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on --host {host}: {exc.strerror or exc}; use an IP address such as 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is already in use; pick another --port") from None
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or --host") from None
