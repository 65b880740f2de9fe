"""Studies in a storage: list, load with a helpful error, summarise for `mnist-hpo status`."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from mnist_hpo.errors import UserError
from mnist_hpo.storage._open import describe, open_storage

StorageLike = BaseStorage | str | None  # a storage, or a URL for open_storage(must_exist=True)

_MAX_LISTED = 20


def _storage(storage: StorageLike) -> BaseStorage:
    return storage if isinstance(storage, BaseStorage) else open_storage(storage, must_exist=True)


def list_study_names(storage: StorageLike) -> list[str]:
    """Names of all studies in ``storage``, oldest first."""
    return optuna.get_all_study_names(storage=_storage(storage))


def load_study(storage: StorageLike, name: str, sampler: BaseSampler | None = None, pruner: BasePruner | None = None) -> optuna.Study:
    """The existing study ``name``; a UserError naming the studies that do exist when it is missing."""
    storage = _storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        names = list_study_names(storage)
    if not names:
        existing = "the storage holds no studies"
    else:
        shown = ", ".join(names[:_MAX_LISTED])
        more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
        existing = f"existing studies: {shown}{more}"
    raise UserError(f"no study {name!r} in {describe(storage)}; {existing}")


def study_summary(storage: StorageLike, name: str) -> dict[str, Any]:
    """Trial counts per state, directions, best value per objective and the best trial(s) of study ``name``.

    Keys: name, directions ("minimize"/"maximize"), n_trials, counts ({"COMPLETE": n, ...}, every
    TrialState), best_values (per objective, the best over completed trials; None without any) and
    best_trials ([{"number", "values", "params"}]: the best trial, or the Pareto front by number).
    """
    study = load_study(storage, name)
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    directions = study.directions
    if not complete:
        best_trials, best_values = [], None
    else:
        pick = {StudyDirection.MINIMIZE: min, StudyDirection.MAXIMIZE: max}
        best_values = [pick[d](t.values[i] for t in complete) for i, d in enumerate(directions)]
        best_trials = [study.best_trial] if len(directions) == 1 else sorted(study.best_trials, key=lambda t: t.number)
    return {
        "name": study.study_name,
        "directions": [d.name.lower() for d in directions],
        "n_trials": len(trials),
        "counts": counts,
        "best_values": best_values,
        "best_trials": [{"number": t.number, "values": list(t.values), "params": dict(t.params)} for t in best_trials],
    }
