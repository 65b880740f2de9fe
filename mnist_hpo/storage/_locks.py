"""One budget change at a time per study, whatever the storage: a lock the storage itself provides.

A budget change reads the study's settings and trial counts, then writes a new budget and queues
the trials it lacks. Two commands doing that at once both read the old budget and both queue, so
every process that changes a study's budget (and a worker replacing a failed trial, which changes
the counts the others read) holds this lock meanwhile:

- PostgreSQL: a session advisory lock keyed by the study's name; the server drops it when the
  holder's connection goes, so a killed process never leaves it held.
- SQLite and journal files: ``flock`` on the database or journal file itself; the kernel drops it
  when the holder dies. (SQLite's own locks are POSIX record locks, which ``flock`` does not touch
  on a local filesystem; like SQLite itself, this is not meant for network filesystems.)
- A gRPC proxy offers no lock: concurrent budget changes through one are not serialised (use the
  SQL storage behind it for `study create` and `search`; workers only take trials).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator

import sqlalchemy.exc
from optuna.storages import BaseStorage, JournalStorage, RDBStorage

from mnist_hpo.errors import StorageUnavailable
from mnist_hpo.storage._open import describe


@contextlib.contextmanager
def study_lock(storage: BaseStorage, study_name: str, required: bool = True) -> Iterator[None]:
    """Hold the study's budget lock for the ``with`` block (see the module docstring).

    ``required=False``: a worker failing its trial while the server is unreachable goes on without
    the lock (its writes ride out the outage; a lost race costs at most one extra queued trial).
    """
    if isinstance(storage, RDBStorage) and storage.engine.url.get_backend_name() == "postgresql":
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(_advisory_lock(storage, study_name))
            except (sqlalchemy.exc.DBAPIError, StorageUnavailable):
                if required:
                    raise
            yield
        return
    path = _file_of(storage)
    if path is None:
        yield
        return
    with open(path, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(storage: RDBStorage, study_name: str) -> Iterator[None]:
    key = int.from_bytes(hashlib.sha256(f"mnist-hpo budget {study_name}".encode()).digest()[:8], "big", signed=True)
    with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("SELECT pg_advisory_lock(%(key)s)", {"key": key})
        try:
            yield
        finally:
            connection.exec_driver_sql("SELECT pg_advisory_unlock(%(key)s)", {"key": key})


def _file_of(storage: BaseStorage) -> str | None:
    """The SQLite database or journal file behind ``storage``; None for a gRPC proxy."""
    if isinstance(storage, RDBStorage):
        return storage.engine.url.database or None
    if isinstance(storage, JournalStorage):
        return os.path.expanduser(describe(storage).removeprefix("journal:"))
    return None
