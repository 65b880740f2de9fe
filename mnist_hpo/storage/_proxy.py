"""`mnist-hpo storage-proxy`: Optuna's gRPC storage proxy in front of an SQL storage.

Hundreds of workers each holding their own PostgreSQL connections hit the server's connection
limit and repeat the same queries; the proxy holds one small pool and one trial cache for all of
them. Workers then use --storage grpc://HOST:PORT. The proxy has no authentication: keep it on a
private network (a ClusterIP Service, a cluster's internal interface).
"""

from __future__ import annotations

import importlib.util
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

from optuna.exceptions import ExperimentalWarning
from optuna.storages import get_storage

from mnist_hpo.errors import UserError
from mnist_hpo.signals import sigterm_as_interrupt
from mnist_hpo.storage._open import open_storage
from mnist_hpo.storage._urls import mask_url, resolve_url

PROXY_THREADS = 16


def run_storage_proxy(url: str | None, host: str, port: int, ready: threading.Event | None = None) -> None:
    """Serve the SQL storage `url` on grpc://host:port until SIGTERM or Ctrl-C."""
    url = resolve_url(url)
    if url.startswith(("journal:", "grpc://")):
        raise UserError(f"the gRPC proxy serves an SQL storage (sqlite:// or postgresql://), not {mask_url(url)}")
    if not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    if importlib.util.find_spec("grpc") is None:
        raise UserError("the gRPC proxy needs grpcio and protobuf: pip install 'mnist-hpo[grpc]'")
    from optuna.storages._grpc.server import make_server

    storage = get_storage(open_storage(url))  # the cached storage, as Optuna recommends for the proxy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        try:
            server = make_server(storage, host, port, ThreadPoolExecutor(max_workers=PROXY_THREADS))
        except RuntimeError as exc:
            raise UserError(f"cannot listen on {host}:{port} ({exc}); pick another --port or --host") from None
    server.start()
    print(f"serving {mask_url(url)} on grpc://{host}:{port}; workers use --storage grpc://{host}:{port}", flush=True)
    if ready is not None:
        ready.set()
    with sigterm_as_interrupt():
        try:
            server.wait_for_termination()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop(grace=5).wait()
    print("storage proxy stopped", flush=True)
