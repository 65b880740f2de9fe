"""Open an Optuna storage from a URL, turning every fixable failure into a one-line UserError."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import optuna
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, GrpcStorageProxy, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.engine import URL, make_url

from mnist_hpo.errors import UserError
from mnist_hpo.storage._urls import ACCEPTED_FORMS, mask_url, resolve_url

SQLITE_BUSY_TIMEOUT_S = 60
PG_CONNECT_TIMEOUT_S = 10
GRPC_CONNECT_TIMEOUT_S = 10

_SQLITE_DRIVERS = ("sqlite", "sqlite+pysqlite")
_PG_DRIVERS = ("postgresql", "postgres", "postgresql+psycopg")
_OUTDATED_SCHEMA = "no longer compatible with the table schema"


@dataclass
class _RDBTarget:
    url: str  # with the password, for SQLAlchemy only
    shown: str  # masked, for messages
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    sqlite_path: str | None = None
    password: str | None = None


def open_storage(
    url: str | None = None,
    *,
    must_exist: bool = False,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    failed_trial_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> BaseStorage:
    """The Optuna storage behind `url` (see resolve_url); heartbeat arguments apply to SQL storages only."""
    url = resolve_url(url)
    if url.startswith("journal:"):
        return _open_journal(url, must_exist)
    if url.startswith("grpc://"):
        return _open_grpc(url)
    target = _rdb_target(url, must_exist)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat_interval is "experimental"
            storage = RDBStorage(
                _escape_format(target.url),
                engine_kwargs=target.engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                # Optuna 4.9 renamed failed_trial_callback; the old name warns (FutureWarning).
                heartbeat_stale_trial_callback=failed_trial_callback,
            )
    except RuntimeError as exc:
        if _OUTDATED_SCHEMA not in str(exc):
            raise
        if "pip install -U optuna" in str(exc):
            raise UserError(
                f"{target.shown} was written by a newer Optuna than the installed {optuna.__version__}; "
                "upgrade optuna (pip install -U optuna)"
            ) from None
        raise UserError(
            f"{target.shown} uses an older Optuna database schema; back it up, then run "
            "`mnist-hpo storage upgrade` with the same --storage"
        ) from None
    except (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.ArgumentError, sqlite3.Error) as exc:
        raise _connect_error(target, exc) from None
    return storage


def upgrade_storage(url: str | None = None) -> str:
    """Bring an existing SQL storage's schema up to this Optuna's; returns a one-line summary."""
    url = resolve_url(url)
    if url.startswith(("journal:", "grpc://")):
        open_storage(url, must_exist=True)  # still reports a missing journal file
        return f"{mask_url(url)}: journal and gRPC storages have no schema to upgrade"
    target = _rdb_target(url, must_exist=True)
    try:
        storage = RDBStorage(
            _escape_format(target.url),
            engine_kwargs=target.engine_kwargs,
            skip_compatibility_check=True,
            skip_table_creation=True,
        )
    except (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.ArgumentError, sqlite3.Error) as exc:
        raise _connect_error(target, exc) from None
    try:
        current, head = storage.get_current_version(), storage.get_head_version()
        if current == head:
            return f"{target.shown}: schema already up to date ({head})"
        if current not in storage.get_all_versions():
            raise UserError(
                f"{target.shown} has schema {current}, newer than Optuna {optuna.__version__} knows; "
                "upgrade optuna (pip install -U optuna) instead"
            )
        with _root_logger_handler():
            storage.upgrade()
        return f"{target.shown}: schema upgraded from {current} to {head}"
    except (sqlalchemy.exc.DBAPIError, sqlite3.Error) as exc:
        raise _connect_error(target, exc) from None
    finally:
        storage.engine.dispose()


@contextlib.contextmanager
def _root_logger_handler() -> Iterator[None]:
    # Optuna's alembic env.py calls logging.config.fileConfig() when the root logger has no
    # handler, which disables every logger that already exists; give it one for the duration.
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


# --- SQL ------------------------------------------------------------------------------------


def _unsupported(url: str, why: str = "unsupported storage URL") -> UserError:
    return UserError(f"{why} {mask_url(url)!r}; use {ACCEPTED_FORMS}")


def _rdb_target(url: str, must_exist: bool) -> _RDBTarget:
    try:
        parsed = make_url(url)
    except Exception:
        raise _unsupported(url) from None
    if parsed.drivername in _SQLITE_DRIVERS:
        return _sqlite_target(url, parsed, must_exist)
    if parsed.drivername in _PG_DRIVERS:
        parsed = parsed.set(drivername="postgresql+psycopg")  # SQLAlchemy's plain default is psycopg2
        if importlib.util.find_spec("psycopg") is None:
            raise UserError("postgresql:// storages need psycopg 3; run pip install 'psycopg[binary]'")
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        target = _RDBTarget(
            url=parsed.render_as_string(hide_password=False),
            shown=mask_url(url),
            engine_kwargs={
                "pool_pre_ping": True,
                "pool_size": 2,
                "max_overflow": 4,
                "connect_args": connect_args,
            },
            password=parsed.password,
        )
        if must_exist:
            _check_pg_has_tables(target)
        return target
    raise _unsupported(url)


def _sqlite_target(url: str, parsed: URL, must_exist: bool) -> _RDBTarget:
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise _unsupported(url, "need a file path in SQLite URL")
    path = os.path.expanduser(database)
    if path != database:
        parsed = parsed.set(database=path)
    shown = mask_url(url)
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory, not a study database; pass --storage sqlite:///FILE.db")
    if must_exist and not os.path.isfile(path):
        raise UserError(f"no study database at {path}; run `mnist-hpo search` first or pass --storage")
    if not os.path.isdir(parent):
        raise UserError(f"directory {parent} does not exist (storage {shown}); create it or pass another --storage")
    connect_args: dict[str, Any] = {}
    if "timeout" not in parsed.query:
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_S
    target = _RDBTarget(
        url=parsed.render_as_string(hide_password=False),
        shown=shown,
        engine_kwargs={"connect_args": connect_args},
        sqlite_path=path,
    )
    _set_wal(target)  # before Optuna creates its tables, so they are created in WAL mode
    return target


def _set_wal(target: _RDBTarget) -> None:
    """Switch the file to write-ahead logging (persistent; readers then never block the writer)."""
    assert target.sqlite_path is not None
    try:
        connection = sqlite3.connect(target.sqlite_path, timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            connection.execute("PRAGMA journal_mode=WAL").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise _connect_error(target, exc) from None


def _check_pg_has_tables(target: _RDBTarget) -> None:
    engine = sqlalchemy.create_engine(target.url, **target.engine_kwargs)
    try:
        with engine.connect() as connection:
            has_tables = sqlalchemy.inspect(connection).has_table("studies")
    except (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.ArgumentError) as exc:
        raise _connect_error(target, exc) from None
    finally:
        engine.dispose()
    if not has_tables:
        raise UserError(f"{target.shown} holds no Optuna studies; run `mnist-hpo search` first or pass --storage")


def _connect_error(target: _RDBTarget, exc: BaseException) -> UserError:
    reason = _short_reason(exc, target.password)
    if target.sqlite_path is not None:
        return UserError(f"cannot use SQLite database {target.sqlite_path}: {reason}")
    return UserError(f"cannot connect to {target.shown}: {reason}; check the URL, the server and the credentials")


def _short_reason(exc: BaseException, password: str | None = None) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    reason = re.sub(r"\s+", " ", lines[0]) if lines else type(orig).__name__
    if password and len(password) >= 3:
        reason = reason.replace(password, "***")
    return reason.removeprefix("connection failed: ")


def _escape_format(url: str) -> str:
    # RDBStorage runs url.format(SCHEMA_VERSION=...); keep literal braces (paths, names) intact.
    return url.replace("{", "{{").replace("}", "}}")


# --- journal and gRPC -----------------------------------------------------------------------


def _open_journal(url: str, must_exist: bool) -> BaseStorage:
    path = os.path.expanduser(url.removeprefix("journal:"))
    if not path:
        raise _unsupported(url, "need a file path in journal URL")
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory, not a journal file; pass --storage journal:FILE.log")
    if must_exist and not os.path.isfile(path):
        raise UserError(f"no study journal at {path}; run `mnist-hpo search` first or pass --storage")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"directory {parent} does not exist (storage {url}); create it or pass another --storage")
    try:
        return JournalStorage(JournalFileBackend(path))
    except OSError as exc:
        raise UserError(f"cannot use journal file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a line that is not JSON
        raise UserError(f"{path} is not an Optuna journal ({exc}); pass another --storage") from None


def _open_grpc(url: str) -> BaseStorage:
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number
        host = port = None
    if not host or port is None or parts.path not in ("", "/"):
        raise _unsupported(url, "need grpc://HOST:PORT, got")
    if importlib.util.find_spec("grpc") is None:
        raise UserError(
            "grpc:// storages need the grpcio and protobuf packages; run pip install grpcio protobuf, "
            "or use a sqlite:// or postgresql:// storage"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        proxy = GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=GRPC_CONNECT_TIMEOUT_S)
    except ConnectionError:
        proxy.close()
        raise UserError(
            f"no Optuna gRPC proxy answers at {host}:{port} within {GRPC_CONNECT_TIMEOUT_S} s; "
            "start it or pass another --storage"
        ) from None
    return proxy
