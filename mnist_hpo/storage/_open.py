"""Open an Optuna storage from a URL, turning every fixable failure into a one-line UserError."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sqlite3
import sys
import threading
import time
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

from mnist_hpo.errors import StorageUnavailable, UserError
from mnist_hpo.storage._urls import ACCEPTED_FORMS, mask_url, resolve_url

SQLITE_BUSY_TIMEOUT_S = 60
PG_CONNECT_TIMEOUT_S = 10
GRPC_CONNECT_TIMEOUT_S = 10
RECONNECT_ENV = "MNIST_HPO_RECONNECT_S"
RECONNECT_S = 60.0  # how long a lost PostgreSQL connection is retried before a worker gives up

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
    reconnect_s: float | None = None,
) -> BaseStorage:
    """The Optuna storage behind `url` (see resolve_url); heartbeat arguments apply to SQL storages only.

    A PostgreSQL storage survives a lost connection (a server restart, a failover): every storage
    call is retried with backoff for `reconnect_s` seconds (default $MNIST_HPO_RECONNECT_S or 60),
    then raises StorageUnavailable, a one-line UserError. Transactions that failed were rolled back,
    so nothing half-written is left behind.
    """
    url = resolve_url(url)
    if url.startswith("journal:"):
        return _open_journal(url, must_exist)
    if url.startswith("grpc://"):
        return _open_grpc(url)
    target = _rdb_target(url, must_exist)
    reconnect = None if target.sqlite_path is not None else _reconnect_seconds(reconnect_s)
    storage_class = _rdb_class(target.shown, target.password, reconnect)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat_interval is "experimental"
            storage = storage_class(
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


# --- lost PostgreSQL connections -----------------------------------------------------------

# Every storage call a worker makes, by name; _CachedStorage calls the private ones.
_RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
    "get_study_system_attrs", "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies",
    "create_new_trial", "_create_new_trial", "set_trial_param", "_set_trial_param", "get_trial_param",
    "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "_get_trials", "get_n_trials",
    "get_best_trial", "_get_best_trial_id", "record_heartbeat", "_get_stale_trial_ids",
    "count_trial_states", "waiting_trial_ids", "take_waiting_trial",
)
_retrying = threading.local()  # the outermost storage call retries; the calls it makes do not


def _reconnect_seconds(value: float | None) -> float:
    if value is None:
        raw = os.environ.get(RECONNECT_ENV, "").strip()
        if not raw:
            return RECONNECT_S
        try:
            value = float(raw)
        except ValueError:
            raise UserError(f"${RECONNECT_ENV} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise UserError(f"the reconnect time must be 0 or more seconds, got {value}")
    return value


def is_connection_error(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) means the database connection was lost or refused."""
    import psycopg

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, psycopg.OperationalError)):
            return True
        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _rdb_class(shown: str, password: str | None, seconds: float | None) -> type[RDBStorage]:
    """RDBStorage plus two cheap queries for workers; with `seconds`, its calls ride out a lost connection that long."""

    def wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
            if getattr(_retrying, "active", False):
                return method(self, *args, **kwargs)
            _retrying.active = True
            try:
                return _retry(self, name, method, args, kwargs)
            finally:
                _retrying.active = False

        call.__name__ = call.__qualname__ = name
        call.__doc__ = method.__doc__
        return call

    def _retry(self: RDBStorage, name: str, method: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        lost_at: float | None = None
        delay = 0.25
        while True:
            try:
                result = method(self, *args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                # A state change whose commit went through just before the connection dropped.
                if lost_at is not None and name == "set_trial_state_values":
                    state = kwargs.get("state", args[1] if len(args) > 1 else None)
                    if RDBStorage.get_trial(self, args[0] if args else kwargs["trial_id"]).state == state:
                        return True
                raise
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                now = time.monotonic()
                if lost_at is None:
                    lost_at = now
                    _say(f"lost the connection to {shown} ({_short_reason(exc, password)}); retrying for up to {seconds:.0f} s")
                if now - lost_at >= seconds:
                    raise StorageUnavailable(
                        f"lost the connection to {shown} and could not reconnect within {seconds:.0f} s "
                        f"({_short_reason(exc, password)}); nothing half-written was kept: a running trial is "
                        "retried by another worker once its heartbeat is stale"
                    ) from None
                time.sleep(min(delay, max(0.0, seconds - (now - lost_at))))
                delay = min(delay * 2, 5.0)
                continue
            if lost_at is not None:
                _say(f"reconnected to {shown} after {time.monotonic() - lost_at:.1f} s")
            return result

    def stale_trial_ids(self: RDBStorage, study_id: int) -> list[int]:
        """Optuna's stale trials, plus RUNNING ones seen without any heartbeat for longer than the grace period.

        Those are trials whose worker died between taking the trial and its first heartbeat, or whose
        "take" committed while the connection dropped (so the worker believes it lost the race). The
        silence is timed here, on this process's monotonic clock: no two machines' clocks are compared.
        """
        from optuna.storages._rdb import models

        stale = RDBStorage._get_stale_trial_ids(self, study_id)
        grace = self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 0)
        session = self.scoped_session()
        try:
            silent = {
                trial_id
                for (trial_id,) in session.query(models.TrialModel.trial_id)
                .filter(models.TrialModel.study_id == study_id, models.TrialModel.state == optuna.trial.TrialState.RUNNING)
                .filter(~models.TrialModel.heartbeats.any())
            }
            session.commit()
        except Exception:
            session.rollback()
            raise
        finally:
            session.close()
        now = time.monotonic()
        seen = self.__dict__.setdefault("_silent_since", {})
        for trial_id in list(seen):
            if trial_id not in silent:
                del seen[trial_id]
        late = []
        for trial_id in silent:
            since = seen.setdefault(trial_id, now)
            if now - since > grace and trial_id not in stale:
                late.append(trial_id)
        return stale + late

    methods: dict[str, Callable[..., Any]] = {name: getattr(RDBStorage, name) for name in _RETRIED if hasattr(RDBStorage, name)}
    added = {"_get_stale_trial_ids": stale_trial_ids, "count_trial_states": _count_trial_states,
             "waiting_trial_ids": _waiting_trial_ids, "take_waiting_trial": _take_waiting_trial}
    methods.update(added)
    if seconds is None:
        namespace: dict[str, Any] = dict(added)
    else:
        namespace = {name: wrap(name, method) for name, method in methods.items()}
    namespace["__module__"] = __name__
    namespace["__doc__"] = "An RDBStorage for workers (see open_storage): state counts, the waiting queue, reconnects."
    return type("ReconnectingRDBStorage" if seconds is not None else "WorkerRDBStorage", (RDBStorage,), namespace)


def _session_query(storage: RDBStorage, build: Callable[[Any], Any]) -> list[Any]:
    session = storage.scoped_session()
    try:
        rows = build(session).all()
        session.commit()
        return rows
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


def _count_trial_states(self: RDBStorage, study_id: int) -> dict[optuna.trial.TrialState, int]:
    """Trials of the study per state, in one GROUP BY (get_all_trials would load every unfinished trial)."""
    from optuna.storages._rdb import models

    rows = _session_query(self, lambda session: session.query(models.TrialModel.state, sqlalchemy.func.count(models.TrialModel.trial_id))
                          .filter(models.TrialModel.study_id == study_id).group_by(models.TrialModel.state))
    return {state: count for state, count in rows}


def _take_waiting_trial(self: RDBStorage, study_id: int) -> tuple[int, int] | None:
    """Atomically turn one WAITING trial RUNNING (retries first, then by number); its (id, number), or None.

    One statement: UPDATE ... WHERE trial_id = (SELECT ... FOR UPDATE SKIP LOCKED) AND state = 'WAITING'.
    On PostgreSQL concurrent workers skip each other's rows instead of waiting on them; on SQLite the
    state condition inside the one UPDATE (under its write lock) keeps two workers from taking one trial.
    """
    from datetime import datetime

    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    attrs = models.TrialSystemAttributeModel.__table__
    waiting = trials.alias("waiting")
    is_retry = sqlalchemy.exists().where(attrs.c.trial_id == waiting.c.trial_id, attrs.c.key == "retry_history")
    candidate = (
        sqlalchemy.select(waiting.c.trial_id)
        .where(waiting.c.study_id == study_id, waiting.c.state == optuna.trial.TrialState.WAITING)
        .order_by(is_retry.desc(), waiting.c.number)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    statement = (
        sqlalchemy.update(trials)
        .where(trials.c.trial_id == candidate.scalar_subquery(), trials.c.state == optuna.trial.TrialState.WAITING)
        .values(state=optuna.trial.TrialState.RUNNING, datetime_start=datetime.now())
        .returning(trials.c.trial_id, trials.c.number)
    )
    session = self.scoped_session()
    try:
        row = session.execute(statement).first()
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()
    return (row[0], row[1]) if row else None


def _waiting_trial_ids(self: RDBStorage, study_id: int, limit: int = 64) -> list[tuple[int, int, bool]]:
    """(trial id, number, is a retry) of up to `limit` WAITING trials: retries first, then by number."""
    from optuna.storages._rdb import models

    attrs = models.TrialSystemAttributeModel
    trials = models.TrialModel

    def build(session: Any) -> Any:
        retry = (
            session.query(attrs.trial_id).filter(attrs.trial_id == trials.trial_id, attrs.key == "retry_history").exists()
        )
        return (
            session.query(trials.trial_id, trials.number, retry)
            .filter(trials.study_id == study_id, trials.state == optuna.trial.TrialState.WAITING)
            .order_by(retry.desc(), trials.number)
            .limit(limit)
        )

    return [(trial_id, number, bool(is_retry)) for trial_id, number, is_retry in _session_query(self, build)]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
