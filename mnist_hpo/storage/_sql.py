"""SQL storages (SQLite, PostgreSQL): from a URL to a plain ``optuna.storages.RDBStorage``, with one-line errors.

The storage returned is Optuna's own class, configured only through ``engine_kwargs``: it behaves
as Optuna's RDBStorage in every respect (pickling included). SQLite files are put in WAL mode with
a busy timeout, so a dashboard reading a study never makes a writing trial fail with "database is
locked". PostgreSQL connections ride out a lost server through the engine plugin in
``_reconnect`` (named in ``engine_kwargs``, so a pickled storage keeps it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc
import tenacity
from optuna.storages import RDBStorage
from sqlalchemy.engine import URL, make_url

from mnist_hpo.errors import UserError
from mnist_hpo.storage._reconnect import PLUGIN, SECONDS_KWARG, reconnect_seconds
from mnist_hpo.storage._urls import ACCEPTED_FORMS, mask_url

SQLITE_BUSY_TIMEOUT_S = 60
PG_CONNECT_TIMEOUT_S = 10
# A network partition must never hang a worker for minutes (Linux retransmits unacknowledged data for
# ~15 min, and notices a silent idle peer after 2 h): libpq gives up on unacknowledged data after
# 20 s (tcp_user_timeout) and probes an idle connection after 10 s, 3 times 5 s apart (keepalives);
# the reconnect plugin then takes over. The session options make the server do the same for a worker
# cut off from it, so a cut-off worker's locks (a transaction it had open) and its connection slot
# are freed for the others within ~25 s. (No idle_in_transaction_session_timeout: on 64 workers over
# 2 cores a healthy worker's transaction sat idle for over 60 s waiting for a core, and was killed.)
# Any of these given in the URL's query wins.
PG_TCP_ARGS: dict[str, Any] = {
    "connect_timeout": PG_CONNECT_TIMEOUT_S,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20_000,  # ms
    "options": "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3 -c tcp_user_timeout=20000",
}
# Pools: a worker keeps ONE connection open; a second is opened only while its heartbeat thread and
# its trial are in a transaction at the same moment (Optuna's schema check also holds two), and is
# closed at once. benchmarks/scale.py: with a kept pool of 2 (+4 overflow), 64 workers on PostgreSQL's
# default max_connections of 100 held every slot and 20 of them died on "too many clients"; with one
# kept connection the extra ones come and go, and a moment over the limit is ridden out by the
# reconnect plugin. Other users of a storage (the proxy, the dashboard) serve many threads at once
# and keep the larger default pool. Past max_connections / 2 workers, use the proxy.
PG_POOL_SIZE, PG_MAX_OVERFLOW = 2, 4
WORKER_POOL = (1, 1)

_SQLITE_DRIVERS = ("sqlite", "sqlite+pysqlite")
_PG_DRIVERS = ("postgresql", "postgres", "postgresql+psycopg")
_OUTDATED_SCHEMA = "no longer compatible with the table schema"


@dataclass
class SQLTarget:
    url: str  # with the password, for SQLAlchemy only
    shown: str  # masked, for messages
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    sqlite_path: str | None = None
    password: str | None = None


def is_sql_url(url: str) -> bool:
    return not url.startswith(("journal:", "grpc://"))


def sql_target(url: str, must_exist: bool, reconnect_s: float | None = None, pool: tuple[int, int] | None = None) -> SQLTarget:
    """Check a SQL URL and work out how to open it; every fixable problem is a one-line UserError."""
    try:
        parsed = make_url(url)
    except Exception:
        raise unsupported(url) from None
    if parsed.drivername in _SQLITE_DRIVERS:
        return _sqlite_target(url, parsed, must_exist)
    if parsed.drivername in _PG_DRIVERS:
        return _pg_target(url, parsed, must_exist, reconnect_s, pool or (PG_POOL_SIZE, PG_MAX_OVERFLOW))
    raise unsupported(url)


def open_rdb(
    target: SQLTarget,
    heartbeat_interval: int | None,
    grace_period: int | None,
    stale_trial_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None,
) -> RDBStorage:
    try:  # Optuna's ExperimentalWarning for heartbeats stays as Optuna's storage gives it; the commands silence it
        opening = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_lost_schema_race),
            stop=tenacity.stop_after_attempt(5),
            wait=tenacity.wait_random(0.05, 0.5),
            reraise=True,
        )
        return opening(
            RDBStorage,
            _escape_format(target.url),
            engine_kwargs=target.engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=stale_trial_callback,
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
            f"{target.shown} uses an older Optuna database schema; back it up, then run `mnist-hpo storage upgrade` with the same --storage"
        ) from None
    except (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.ArgumentError, sqlite3.Error) as exc:
        raise connect_error(target, exc) from None


def _lost_schema_race(exc: BaseException) -> bool:
    """Several processes opened an empty PostgreSQL database at once and another created a table first: open again."""
    text = str(getattr(exc, "orig", None) or exc)
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and ("duplicate key value" in text or "already exists" in text)


def upgrade_rdb(target: SQLTarget) -> str:
    """Bring an existing SQL storage's schema up to this Optuna's; returns a one-line summary."""
    try:
        storage = RDBStorage(
            _escape_format(target.url), engine_kwargs=target.engine_kwargs, skip_compatibility_check=True, skip_table_creation=True
        )
    except (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.ArgumentError, sqlite3.Error) as exc:
        raise connect_error(target, exc) from None
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
        raise connect_error(target, exc) from None
    finally:
        storage.engine.dispose()


def compact_rdb(target: SQLTarget) -> str:
    """Rewrite the database so that values replaced by a scrub are gone from its files too; one line."""
    engine = sqlalchemy.create_engine(_escape_format(target.url), **target.engine_kwargs)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            if target.sqlite_path is not None:
                connection.exec_driver_sql("VACUUM")
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                return f"{target.shown}: rewritten (VACUUM): the replaced values are gone from the file"
            for table in ("study_user_attributes", "study_system_attributes"):
                connection.exec_driver_sql(f"VACUUM FULL {table}")
            return f"{target.shown}: study attribute tables rewritten (VACUUM FULL); backups and replicas still hold the old values"
    except (sqlalchemy.exc.DBAPIError, sqlite3.Error) as exc:
        raise connect_error(target, exc) from None
    finally:
        engine.dispose()


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


def unsupported(url: str, why: str = "unsupported storage URL") -> UserError:
    return UserError(f"{why} {mask_url(url)!r}; use {ACCEPTED_FORMS}")


def _pg_target(url: str, parsed: URL, must_exist: bool, reconnect_s: float | None, pool: tuple[int, int]) -> SQLTarget:
    if url.split("?", 1)[0].count("@") > 1:  # the host would be the password's tail, looked up in the DNS and echoed
        raise UserError(
            f"the storage URL {mask_url(url)!r} holds more than one '@': write an '@' inside the password as %40 "
            "(and ':' '/' '?' '#' as %3A %2F %3F %23), or pass the URL in $MNIST_HPO_STORAGE"
        )
    parsed = parsed.set(drivername="postgresql+psycopg")  # SQLAlchemy's plain default is psycopg2
    if importlib.util.find_spec("psycopg") is None:
        raise UserError("postgresql:// storages need psycopg 3; run pip install 'psycopg[binary]'")
    connect_args = {key: value for key, value in PG_TCP_ARGS.items() if key not in parsed.query}
    target = SQLTarget(
        url=parsed.render_as_string(hide_password=False),
        shown=mask_url(url),
        engine_kwargs={
            "pool_pre_ping": True,  # a connection the server dropped is noticed before it is used
            "pool_size": pool[0],
            "max_overflow": pool[1],
            "connect_args": connect_args,
            "plugins": [PLUGIN],
            SECONDS_KWARG: reconnect_seconds(reconnect_s),
        },
        password=parsed.password,
    )
    if must_exist:
        _check_pg_has_tables(target)
    return target


def _sqlite_target(url: str, parsed: URL, must_exist: bool) -> SQLTarget:
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise unsupported(url, "need a file path in SQLite URL")
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
    target = SQLTarget(
        url=parsed.render_as_string(hide_password=False), shown=shown, engine_kwargs={"connect_args": connect_args}, sqlite_path=path
    )
    _check_sqlite_file(target)
    return target


def _check_sqlite_file(target: SQLTarget) -> None:
    """Refuse a file that is not SQLite, then switch it to write-ahead logging (persistent; readers never block the writer).

    WAL is set before Optuna creates its tables, so a new database is created in WAL mode.
    """
    assert target.sqlite_path is not None
    try:
        connection = sqlite3.connect(target.sqlite_path, timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            connection.execute("PRAGMA journal_mode=WAL").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise connect_error(target, exc) from None


def _check_pg_has_tables(target: SQLTarget) -> None:
    kwargs = {k: v for k, v in target.engine_kwargs.items() if k not in ("plugins", SECONDS_KWARG)}
    engine = sqlalchemy.create_engine(target.url, **kwargs)
    try:
        with engine.connect() as connection:
            has_tables = sqlalchemy.inspect(connection).has_table("studies")
    except (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.ArgumentError) as exc:
        raise connect_error(target, exc) from None
    finally:
        engine.dispose()
    if not has_tables:
        raise UserError(f"{target.shown} holds no Optuna studies; run `mnist-hpo search` first or pass --storage")


def connect_error(target: SQLTarget, exc: BaseException) -> UserError:
    reason = short_reason(exc, target.password)
    if target.sqlite_path is not None:
        return UserError(f"cannot use SQLite database {target.sqlite_path}: {reason}")
    return UserError(f"cannot connect to {target.shown}: {reason}; check the URL, the server and the credentials")


def short_reason(exc: BaseException, password: str | None = None) -> str:
    """The first line of a driver's error, with the password masked if the driver echoed it."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    reason = re.sub(r"\s+", " ", lines[0]) if lines else type(orig).__name__
    if password and len(password) >= 3:
        reason = reason.replace(password, "***")
    return reason.removeprefix("connection failed: ")


def _escape_format(url: str) -> str:
    # RDBStorage runs url.format(SCHEMA_VERSION=...); keep literal braces (paths, names) intact.
    return url.replace("{", "{{").replace("}", "}}")
