"""What Optuna has no public API for, in one place: the only module that touches Optuna's internals.

- ``take_waiting_trial``: one WAITING trial turned RUNNING atomically. ``study.ask()`` pops waiting
  trials too, but creates a new trial when none is waiting, which would break an exact budget. On
  SQL storages the take is one conditional UPDATE that also records the trial's first heartbeat in
  the same transaction (Optuna's stale-trial check skips RUNNING trials that never beat, so a
  worker killed between the take and its first beat would otherwise leave the trial RUNNING forever),
  and, in the same transaction, who took it (a system attribute), so no extra commit is spent on that.
- ``count_states``: a study's trials per state in one GROUP BY instead of loading the whole queue.
- ``running_without_heartbeat``: RUNNING trials that never beat, which Optuna's stale check skips.
- ``running_attrs``: one system attribute of every RUNNING trial (who runs it), in one query.
- ``trial_handle``: an ``optuna.Trial`` for a trial taken that way, known to the study's cache.
- ``trial_id_of``: a frozen trial's storage id, without a round trip to ask the storage for it.
- ``grpc_client``: Optuna's gRPC client whose calls wait for a restarted proxy instead of failing.

``check_optuna()`` fails loudly when the installed Optuna lacks what these rely on, and warns once
on a version they were not tested with; tests/storage/test_optuna_internals.py checks the same.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections import Counter
from datetime import datetime
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from mnist_hpo.errors import UserError

TESTED_OPTUNA = ((5, 0), (5, 1))  # [from, to): the versions this module was tested with
_warned = False


class OptunaInternalsChanged(UserError):
    """The installed Optuna lacks an internal this module relies on."""


def check_optuna(storage: BaseStorage | None = None) -> None:
    """Raise OptunaInternalsChanged if a needed internal is missing; warn once on an untested version.

    Optuna's SQL schema is checked only for a SQL ``storage`` (or none given): importing it loads
    SQLAlchemy's ORM, 0.1-0.3 s that a journal or gRPC worker never needs.
    """
    global _warned
    try:
        from optuna.storages import _cached_storage

        if storage is None or is_sql(storage):
            from optuna.storages._rdb import models

            for table, columns in (
                (models.TrialModel, ("trial_id", "number", "study_id", "state", "datetime_start")),
                (models.TrialHeartbeatModel, ("trial_id", "heartbeat")),
                (models.TrialSystemAttributeModel, ("trial_id", "key", "value_json")),
            ):
                for column in columns:
                    table.__table__.c[column]  # a KeyError here means Optuna changed its schema
        _cached_storage._StudyInfo, optuna.storages._CachedStorage._add_trials_to_cache  # noqa: B018 - they must exist
        optuna.storages.GrpcStorageProxy._setup  # noqa: B018
    except (ImportError, AttributeError, KeyError) as exc:
        raise _changed(exc) from None
    version = tuple(int(part) for part in optuna.__version__.split(".")[:2] if part.isdigit())
    if not TESTED_OPTUNA[0] <= version < TESTED_OPTUNA[1] and not _warned:
        _warned = True
        print(f"warning: mnist-hpo was tested with optuna {_dotted(TESTED_OPTUNA[0])}.x, not {optuna.__version__}", file=sys.stderr)


def _changed(exc: BaseException) -> OptunaInternalsChanged:
    return OptunaInternalsChanged(
        f"optuna {optuna.__version__} lacks an internal mnist-hpo relies on ({type(exc).__name__}: {exc}); "
        f"install a tested version: pip install 'optuna>={_dotted(TESTED_OPTUNA[0])},<{_dotted(TESTED_OPTUNA[1])}'"
    )


def _dotted(version: tuple[int, int]) -> str:
    return ".".join(map(str, version))


def backend_of(storage: BaseStorage) -> BaseStorage:
    """The storage behind Optuna's cache: ``study._storage`` (what a trial writes through) wraps an RDBStorage in a cache."""
    try:
        return storage._backend if isinstance(storage, optuna.storages._CachedStorage) else storage
    except AttributeError as exc:
        raise _changed(exc) from None


def is_sql(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage)


def take_waiting_trial(storage: RDBStorage, study_id: int, first_key: str, mark: tuple[str, Any] | None = None) -> tuple[int, int] | None:
    """(id, number) of one WAITING trial made RUNNING, those with system attribute ``first_key`` first, then by number.

    One statement: UPDATE ... WHERE trial_id = (SELECT ... FOR UPDATE SKIP LOCKED) AND state = 'WAITING'.
    On PostgreSQL concurrent workers skip each other's rows instead of waiting on them; on SQLite the
    state condition inside the one UPDATE (under its write lock) keeps two workers from taking one trial.
    ``mark``: a system attribute (key, JSON value) set on the taken trial in the same transaction.
    """
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    attrs = models.TrialSystemAttributeModel.__table__
    waiting = trials.alias("waiting")
    first = sqlalchemy.exists().where(attrs.c.trial_id == waiting.c.trial_id, attrs.c.key == first_key)
    candidate = (
        sqlalchemy.select(waiting.c.trial_id)
        .where(waiting.c.study_id == study_id, waiting.c.state == TrialState.WAITING)
        .order_by(first.desc(), waiting.c.number)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    take = (
        sqlalchemy.update(trials)
        .where(trials.c.trial_id == candidate.scalar_subquery(), trials.c.state == TrialState.WAITING)
        .values(state=TrialState.RUNNING, datetime_start=datetime.now())
        .returning(trials.c.trial_id, trials.c.number)
    )
    session = storage.scoped_session()
    try:
        row = session.execute(take).first()
        if row is not None and storage.heartbeat_interval:
            session.execute(models.TrialHeartbeatModel.__table__.insert().values(trial_id=row[0]))
        if row is not None and mark is not None:
            session.execute(attrs.insert().values(trial_id=row[0], key=mark[0], value_json=json.dumps(mark[1])))
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()
    return (row[0], row[1]) if row else None


def count_states(storage: BaseStorage, study_id: int) -> Counter[TrialState]:
    """Trials of the study per state; one GROUP BY on SQL storages, a read of every trial elsewhere."""
    if not is_sql(storage):
        return Counter(t.state for t in storage.get_all_trials(study_id, deepcopy=False))
    from optuna.storages._rdb import models

    query = (
        sqlalchemy.select(models.TrialModel.state, sqlalchemy.func.count(models.TrialModel.trial_id))
        .where(models.TrialModel.study_id == study_id)
        .group_by(models.TrialModel.state)
    )
    rows = _read(storage, query)
    return Counter({TrialState(state) if not isinstance(state, TrialState) else state: count for state, count in rows})


def running_without_heartbeat(storage: RDBStorage, study_id: int) -> list[int]:
    """Ids of RUNNING trials with no heartbeat row: Optuna's stale-trial check never fails those.

    A trial taken by ``take_waiting_trial`` has its first heartbeat from the start; these are trials
    made RUNNING some other way (``study.ask()``, another tool, an older mnist-hpo) whose process died.
    """
    from optuna.storages._rdb import models

    trials, beats = models.TrialModel.__table__, models.TrialHeartbeatModel.__table__
    query = (
        sqlalchemy.select(trials.c.trial_id)
        .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING)
        .where(~sqlalchemy.exists().where(beats.c.trial_id == trials.c.trial_id))
    )
    ids = [row[0] for row in _read(storage, query)]
    return ids


def running_attrs(storage: RDBStorage, study_id: int, key: str) -> dict[int, Any]:
    """Trial id -> the value of system attribute ``key``, for the study's RUNNING trials that have it: one small query.

    Asked every poll of an idle worker, so it reads one attribute, not whole trials (``get_all_trials``).
    """
    from optuna.storages._rdb import models

    trials, attrs = models.TrialModel.__table__, models.TrialSystemAttributeModel.__table__
    query = (
        sqlalchemy.select(attrs.c.trial_id, attrs.c.value_json)
        .join(trials, trials.c.trial_id == attrs.c.trial_id)
        .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING, attrs.c.key == key)
    )
    rows = _read(storage, query)
    return {trial_id: json.loads(value) for trial_id, value in rows}


def trial_handle(study: optuna.Study, trial_id: int, number: int) -> optuna.Trial:
    """The ``optuna.Trial`` of a trial this process has just taken, as ``study.ask()`` would return it.

    Optuna's cached SQL storage must know a trial's id and number before parameters can be set on
    it; the public way (``study.get_trials()``) re-reads every unfinished trial, the whole queue.
    The study's per-thread trial cache is cleared, as ``ask()`` does, so the sampler and the pruner
    see the storage as it is now.
    """
    try:
        cached = study._storage
        if isinstance(cached, optuna.storages._CachedStorage):
            frozen = optuna.trial.FrozenTrial(
                number=number,
                state=TrialState.RUNNING,
                value=None,
                datetime_start=None,
                datetime_complete=None,
                params={},
                distributions={},
                user_attrs={},
                system_attrs={},
                intermediate_values={},
                trial_id=trial_id,
            )
            study_id = study._study_id
            with cached._lock:
                if study_id not in cached._studies:
                    cached._studies[study_id] = optuna.storages._cached_storage._StudyInfo()
                cached._add_trials_to_cache(study_id, [frozen])
        study._thread_local.cached_all_trials = None
    except AttributeError as exc:
        raise _changed(exc) from None
    return optuna.trial.Trial(study, trial_id)


def trial_id_of(trial: FrozenTrial) -> int:
    """A frozen trial's storage id, which Optuna keeps private; asking the storage for it is one more round trip."""
    try:
        return trial._trial_id
    except AttributeError as exc:
        raise _changed(exc) from None


def grpc_client(host: str, port: int, wait_s: float) -> optuna.storages.GrpcStorageProxy:
    """Optuna's gRPC client, its calls waiting up to ``wait_s`` for an unreachable proxy (a restart) to come back."""
    return _WaitingGrpcStorageProxy(host=host, port=port, wait_s=wait_s)


class _WaitingGrpcStorageProxy(optuna.storages.GrpcStorageProxy):
    """GrpcStorageProxy over a channel with wait-for-ready calls and retries of UNAVAILABLE (Optuna's has neither)."""

    def __init__(self, *, host: str, port: int, wait_s: float) -> None:
        self._wait_s = wait_s
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(host=host, port=port)

    def _setup(self) -> None:
        import grpc
        from optuna.storages._grpc.auto_generated import api_pb2_grpc
        from optuna.storages._grpc.client import GrpcClientCache

        config = {
            "methodConfig": [
                {
                    "name": [{}],
                    "waitForReady": True,
                    "timeout": f"{max(1.0, self._wait_s):.0f}s",
                    "retryPolicy": {
                        "maxAttempts": 5,
                        "initialBackoff": "0.5s",
                        "maxBackoff": "5s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", -1),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(config)),
        ]
        self._channel = grpc.insecure_channel(f"{self._host}:{self._port}", options=options)
        self._stub = api_pb2_grpc.StorageServiceStub(self._channel)
        self._cache = GrpcClientCache(self._stub)


def _read(storage: RDBStorage, query: Any) -> list[Any]:
    """The rows of a read-only ``query`` in a session of the storage's own, closed (and rolled back on error)."""
    session = storage.scoped_session()
    try:
        rows = session.execute(query).all()
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()
    return rows
