"""Riding out a lost PostgreSQL server (a restart, a failover): the one place reconnects happen.

A SQLAlchemy engine plugin, named in the storage's ``engine_kwargs`` (so Optuna's own RDBStorage
carries it, pickled or not). Pooled connections are checked before use (``pool_pre_ping``); once a
connection has been lost, every new one is made through a tenacity retry with exponential backoff
for up to ``$MNIST_HPO_RECONNECT_S`` seconds (default 60), then ``StorageUnavailable`` says so in one
line. A transaction that failed was rolled back by Optuna, so nothing half-written remains. The
first connection of a storage is not retried: a wrong host or password is reported at once.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity
from sqlalchemy import event
from sqlalchemy.engine import URL, CreateEnginePlugin, Engine, ExceptionContext

from mnist_hpo.errors import StorageUnavailable, UserError

PLUGIN = "mnist_hpo_reconnect"  # registered in pyproject.toml under [project.entry-points."sqlalchemy.plugins"]
SECONDS_KWARG = "mnist_hpo_reconnect_s"
RECONNECT_ENV = "MNIST_HPO_RECONNECT_S"
RECONNECT_S = 60.0
T = TypeVar("T")


def reconnect_seconds(value: float | None = None) -> float:
    """How long a lost connection is retried: ``value``, else $MNIST_HPO_RECONNECT_S, else 60 s."""
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
    return float(value)


class ReconnectPlugin(CreateEnginePlugin):
    """Reconnects with backoff after a lost connection, and says so on stderr (password masked)."""

    def __init__(self, url: URL, kwargs: dict[str, Any]) -> None:
        self.seconds = reconnect_seconds(kwargs.pop(SECONDS_KWARG, None))
        self.shown = url.render_as_string(hide_password=True)
        self.password = url.password
        self.connected_once = False
        self.lost_at: float | None = None
        self._lock = threading.Lock()

    def update_url(self, url: URL) -> URL:
        return url  # configured through engine_kwargs, nothing to take out of the URL

    def engine_created(self, engine: Engine) -> None:
        event.listen(engine, "handle_error", self._on_error)
        event.listen(engine, "do_connect", self._connect)

    def _on_error(self, context: ExceptionContext) -> None:
        if context.is_disconnect:
            self._lost(context.original_exception)

    def _lost(self, exc: BaseException) -> None:
        with self._lock:
            if self.lost_at is not None:
                return
            self.lost_at = time.monotonic()
        _say(f"lost the connection to {self.shown} ({_first_line(exc, self.password)}); reconnecting for up to {self.seconds:.0f} s")

    def _connect(self, dialect: Any, conn_rec: Any, cargs: tuple, cparams: dict[str, Any]) -> Any:
        if not self.connected_once:
            connection = dialect.connect(*cargs, **cparams)
            self.connected_once = True
            return connection
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(dialect.loaded_dbapi.OperationalError),
            stop=tenacity.stop_after_delay(self.seconds),
            wait=tenacity.wait_exponential(multiplier=0.25, max=5),
            before_sleep=lambda state: self._lost(state.outcome.exception()),
            reraise=False,
        )
        try:
            connection = retrying(dialect.connect, *cargs, **cparams)
        except tenacity.RetryError as exc:
            reason = _first_line(exc.last_attempt.exception(), self.password)
            raise StorageUnavailable(
                f"lost the connection to {self.shown} and could not reconnect within {self.seconds:.0f} s ({reason}); "
                "nothing half-written was kept: a running trial is retried by another worker once its heartbeat is stale"
            ) from None
        with self._lock:
            lost_at, self.lost_at = self.lost_at, None
        if lost_at is not None:
            _say(f"reconnected to {self.shown} after {time.monotonic() - lost_at:.1f} s")
        return connection


def _first_line(exc: BaseException | None, password: str | None) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = (lines[0] if lines else type(exc).__name__).removeprefix("connection failed: ")[:200]
    return line.replace(password, "***") if password and len(password) >= 3 else line


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def is_connection_lost(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) means the PostgreSQL connection was lost or refused."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__module__.startswith("psycopg") and isinstance(exc, _psycopg_operational_error()):
            return True
        if getattr(exc, "connection_invalidated", False):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _psycopg_operational_error() -> type[BaseException]:
    try:
        import psycopg
    except ImportError:  # no PostgreSQL driver: no PostgreSQL connection to lose
        return type("NoPsycopg", (Exception,), {})
    return psycopg.OperationalError


def ride_out(step: Callable[..., T], *args: Any, seconds: float | None = None, **kwargs: Any) -> T:
    """Run one storage step (a transaction, or a few that may be repeated), again if the connection dropped under it.

    Optuna rolls a failed transaction back, so repeating the step is safe; the engine plugin
    above makes each new attempt wait for the server. Steps repeated this way are written so that
    running them twice is harmless (attributes are overwritten, a finished trial is not told twice).
    """
    limit = reconnect_seconds(seconds)
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_connection_lost),
        stop=tenacity.stop_after_delay(limit),
        wait=tenacity.wait_exponential(multiplier=0.25, max=5),
        reraise=False,
    )
    try:
        return retrying(step, *args, **kwargs)
    except tenacity.RetryError as exc:
        reason = _first_line(exc.last_attempt.exception(), None)
        raise StorageUnavailable(
            f"lost the storage connection and could not get it back within {limit:.0f} s ({reason}); "
            "nothing half-written was kept: a running trial is retried by another worker once its heartbeat is stale"
        ) from None
