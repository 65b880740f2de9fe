"""One budget change at a time per study, whatever the storage: a lock the storage itself provides.

A budget change reads the study's settings and trial counts, then writes a new budget and queues
the trials it lacks. Two commands doing that at once both read the old budget and both queue, so
every process that changes a study's budget (and a worker replacing a failed trial, which changes
the counts the others read) holds this lock meanwhile:

- PostgreSQL: a session advisory lock keyed by the study's name; the server drops it when the
  holder's connection goes, so a killed process never leaves it held.
- SQLite and journal files: ``flock`` on the database or journal file itself; the kernel drops it
  when the holder dies. (SQLite's own locks are POSIX record locks, which ``flock`` does not touch
  on a local filesystem, as long as no descriptor of the file is ever closed: see ``_descriptor``.
  Like SQLite itself, this is not meant for network filesystems.)
- A gRPC proxy offers no lock, so budget changes through one are refused (``tuning._budget.
  refuse_through_proxy``): `study create` and `search` run on the SQL storage behind it; workers only take trials.

With a ``deadline`` (a command's --timeout) the wait gives up at it with ``StudyLocked``, before
anything is written; without one it waits as long as the holder holds the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator

import sqlalchemy.exc
from optuna.storages import BaseStorage, JournalStorage, RDBStorage

from mnist_hpo.deadline import NEVER, Deadline
from mnist_hpo.errors import StorageUnavailable, UserError
from mnist_hpo.storage._open import describe
from mnist_hpo.storage._optuna_internals import backend_of

POLL_S = 0.1  # how often a wait with a deadline asks for the lock again


class StudyLocked(UserError):
    """Another process held the study's lock until the waiter's deadline; the waiter changed nothing."""


@contextlib.contextmanager
def study_lock(storage: BaseStorage, study_name: str, required: bool = True, deadline: Deadline = NEVER) -> Iterator[None]:
    """Hold the study's budget lock for the ``with`` block (see the module docstring).

    ``required=False``: a worker failing its trial while the server is unreachable goes on without
    the lock (its writes ride out the outage; a lost race costs at most one extra queued trial).
    ``deadline``: raise ``StudyLocked`` if the lock is still held by another process then.
    ``storage`` may be a study's own (Optuna's cache around an RDBStorage): the lock is its database's.
    """
    storage = backend_of(storage)
    if isinstance(storage, RDBStorage) and storage.engine.url.get_backend_name() == "postgresql":
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(_advisory_lock(storage, study_name, deadline))
            except (sqlalchemy.exc.DBAPIError, StorageUnavailable):
                if required:
                    raise
            yield
        return
    path = _file_of(storage)
    if path is None:
        yield
        return
    descriptor = _descriptor(path)
    threads = _in_process[descriptor]
    if not threads.acquire(timeout=deadline.lock_timeout()):
        raise _locked(study_name)
    try:
        if deadline.bounded:
            _wait(lambda: _try_flock(descriptor), study_name, deadline)
        else:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        threads.release()


def _wait(take: Callable[[], bool], study_name: str, deadline: Deadline) -> None:
    """Try ``take`` (one try that never blocks) every POLL_S until it succeeds; ``StudyLocked`` once ``deadline`` has passed.

    The first try comes before the deadline is looked at: a lock nobody holds is taken even by a late command.
    """
    while not take():
        if deadline.passed:
            raise _locked(study_name)
        time.sleep(min(POLL_S, deadline.left()))


def _try_flock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _locked(study_name: str) -> StudyLocked:
    return StudyLocked(
        f"study {study_name!r} is locked by another command that is changing its budget; gave up at --timeout and "
        "changed nothing: run this command again when that one finishes"
    )


#: One descriptor per file for the life of the process, never closed: closing any descriptor of a file
#: drops every POSIX lock this process holds on it, SQLite's own included (a database could be corrupted).
_descriptors: dict[str, int] = {}
_in_process: dict[int, threading.Lock] = {}
_opening = threading.Lock()


def _descriptor(path: str) -> int:
    key = os.path.realpath(path)
    with _opening:
        if key not in _descriptors or os.fstat(_descriptors[key]).st_ino != os.stat(key).st_ino:  # new, or replaced
            _descriptors[key] = os.open(key, os.O_RDONLY | os.O_CLOEXEC)
            _in_process[_descriptors[key]] = threading.Lock()  # flock does not exclude threads sharing a descriptor
        return _descriptors[key]


@contextlib.contextmanager
def _advisory_lock(storage: RDBStorage, study_name: str, deadline: Deadline) -> Iterator[None]:
    key = int.from_bytes(hashlib.sha256(f"mnist-hpo budget {study_name}".encode()).digest()[:8], "big", signed=True)
    with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if deadline.bounded:
            _wait(
                lambda: bool(connection.exec_driver_sql("SELECT pg_try_advisory_lock(%(key)s)", {"key": key}).scalar()),
                study_name,
                deadline,
            )
        else:
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
