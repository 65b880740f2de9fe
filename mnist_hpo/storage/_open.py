"""Open an Optuna storage from a URL, turning every fixable failure into a one-line UserError.

What comes back is Optuna's own storage of that kind (RDBStorage, JournalStorage, GrpcStorageProxy),
so it behaves as Optuna's does in every respect, pickling included. Where it was opened from is
remembered (``describe``), so messages name it without reaching into the storage, password masked.
"""

from __future__ import annotations

import importlib.util
import os
import weakref
from collections.abc import Callable
from urllib.parse import urlsplit

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from mnist_hpo.errors import UserError
from mnist_hpo.signals import enter_shield, leave_shield
from mnist_hpo.storage import _sql
from mnist_hpo.storage._optuna_internals import grpc_client
from mnist_hpo.storage._reconnect import reconnect_seconds
from mnist_hpo.storage._urls import mask_url, resolve_url

GRPC_CONNECT_TIMEOUT_S = 10

StaleTrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
_opened_from: weakref.WeakKeyDictionary[BaseStorage, str] = weakref.WeakKeyDictionary()


def open_storage(
    url: str | None = None,
    *,
    must_exist: bool = False,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: StaleTrialCallback | None = None,
    reconnect_s: float | None = None,
    pool: tuple[int, int] | None = None,
) -> BaseStorage:
    """The Optuna storage behind ``url`` (see resolve_url); heartbeat arguments apply to SQL storages only.

    A PostgreSQL storage rides out a lost connection (a restart, a failover) for ``reconnect_s``
    seconds (default $MNIST_HPO_RECONNECT_S or 60), then raises StorageUnavailable, a one-line UserError.
    ``pool``: (connections kept open, more made while all are busy) of a PostgreSQL storage; default
    2 and 4, workers use WORKER_POOL.
    """
    url = resolve_url(url)
    if url.startswith("journal:"):
        storage = _open_journal(url, must_exist)
    elif url.startswith("grpc://"):
        storage = _open_grpc(url, reconnect_s)
    else:
        target = _sql.sql_target(url, must_exist, reconnect_s, pool)
        storage = _sql.open_rdb(target, heartbeat_interval, grace_period, stale_trial_callback)
    _opened_from[storage] = mask_url(url)
    return storage


def describe(storage: BaseStorage) -> str:
    """Where ``storage`` was opened from, for messages: a masked URL, journal:PATH, grpc://HOST:PORT."""
    return _opened_from.get(storage, f"a {type(storage).__name__}")


def upgrade_storage(url: str | None = None) -> str:
    """Bring an existing SQL storage's schema up to this Optuna's; returns a one-line summary."""
    url = resolve_url(url)
    if not _sql.is_sql_url(url):
        open_storage(url, must_exist=True)  # still reports a missing journal file
        return f"{mask_url(url)}: journal and gRPC storages have no schema to upgrade"
    return _sql.upgrade_rdb(_sql.sql_target(url, must_exist=True))


def compact_storage(url: str | None = None) -> str:
    """After secrets were masked: make the storage's files forget the old values; a one-line summary."""
    url = resolve_url(url)
    if not _sql.is_sql_url(url):
        return (
            f"warning: {mask_url(url)} keeps every earlier record: the unmasked values are still in the journal "
            "(or the server behind the proxy); copy the studies to a new storage and delete the old one"
        )
    return _sql.compact_rdb(_sql.sql_target(url, must_exist=True))


class ShieldedLock(JournalFileSymlinkLock):
    """Optuna's journal file lock (its default), with Ctrl-C and SIGTERM held while it is awaited or held.

    A KeyboardInterrupt inside the try of Optuna's ``acquire`` makes it release a lock it does not
    hold: it removes the lock file of another process's write, or raises "RuntimeError: did not
    possess lock" in the interrupt's place (a CI run saw a worker go on after SIGTERM). Shielded,
    the signal waits until the write is done and the lock released.
    """

    def acquire(self) -> bool:
        enter_shield()
        try:
            return super().acquire()
        except BaseException:
            leave_shield()
            raise

    def release(self) -> None:
        try:
            super().release()
        finally:
            leave_shield()


def _open_journal(url: str, must_exist: bool) -> BaseStorage:
    path = os.path.expanduser(url.removeprefix("journal:"))
    if not path:
        raise _sql.unsupported(url, "need a file path in journal URL")
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory, not a journal file; pass --storage journal:FILE.log")
    if must_exist and not os.path.isfile(path):
        raise UserError(f"no study journal at {path}; run `mnist-hpo search` first or pass --storage")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"directory {parent} does not exist (storage {url}); create it or pass another --storage")
    try:
        return JournalStorage(JournalFileBackend(path, lock_obj=ShieldedLock(path)))
    except OSError as exc:
        raise UserError(f"cannot use journal file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a line that is not JSON
        raise UserError(f"{path} is not an Optuna journal ({exc}); pass another --storage") from None


def _open_grpc(url: str, reconnect_s: float | None) -> BaseStorage:
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number
        host = port = None
    if not host or port is None or parts.path not in ("", "/"):
        raise _sql.unsupported(url, "need grpc://HOST:PORT, got")
    if importlib.util.find_spec("grpc") is None:
        raise UserError(
            "grpc:// storages need the grpcio and protobuf packages; run pip install 'mnist-hpo[grpc]', "
            "or use a sqlite:// or postgresql:// storage"
        )
    proxy = grpc_client(host, port, wait_s=reconnect_seconds(reconnect_s))
    try:
        proxy.wait_server_ready(timeout=GRPC_CONNECT_TIMEOUT_S)
    except ConnectionError:
        proxy.close()
        raise UserError(
            f"no Optuna gRPC proxy answers at {host}:{port} within {GRPC_CONNECT_TIMEOUT_S} s; start it or pass another --storage"
        ) from None
    return proxy
