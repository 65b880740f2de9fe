"""Warm starts: a new study's sampler seeded with an earlier study's finished trials, and a study's own trials.

``search --warm-start OTHER`` copies OTHER's finished trials (COMPLETE and PRUNED, with their
parameters, values and learning curves) into the new study with Optuna's ``study.add_trials``,
each labelled with the user attribute ``copied_from`` = {"study", "trial"}. The sampler sees them
as history; nothing that counts or ranks trials does: the budget, the best trial, the Pareto
front, stop rules, status, export, ensembles, notes and the report all go through ``own_trials``.
The study user attribute ``warm_start`` records the source and how many trials of each state were
copied (so the budget's one-query state count can leave them out).

OTHER must be in the same storage, made by mnist-hpo, and compatible: the same objectives, the
same search space parameter by parameter, the same data (digest). Anything else is refused with
a one-line reason before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState, create_trial

from mnist_hpo import storage as stores
from mnist_hpo.errors import UserError
from mnist_hpo.tuning.attrs import COPIED_ATTR, DATA_SOURCE_ATTR, PUBLISHED_BASELINE_ATTR, SETTINGS_ATTR, WARM_START_ATTR
from mnist_hpo.tuning.mo_asha import Point, pareto_fronts
from mnist_hpo.tuning.settings import StudySettings
from mnist_hpo.tuning.space import Param

COPIED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
_NOT_COPIED = (PUBLISHED_BASELINE_ATTR,)  # a copy is not this study's baseline


def is_copied(trial: FrozenTrial) -> bool:
    return COPIED_ATTR in trial.user_attrs


def own_trials(trials: optuna.Study | Iterable[FrozenTrial], states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
    """This study's own trials (in ``states``, if given): every trial that was not copied from another study."""
    if isinstance(trials, optuna.Study):
        trials = trials.get_trials(deepcopy=False, states=states)
    elif states is not None:
        trials = [t for t in trials if t.state in states]
    return [t for t in trials if not is_copied(t)]


def own_study(study: optuna.Study, states: Sequence[TrialState] = COPIED_STATES) -> optuna.Study:
    """An in-memory study of ``study``'s own finished trials, for tools that read a whole study (plots, the Terminator)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "a new study created in memory" line
    try:
        view = optuna.create_study(directions=study.directions, study_name=study.study_name)
    finally:
        optuna.logging.set_verbosity(verbosity)
    view.add_trials(own_trials(study, states=states))
    return view


def own_pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto front (validation accuracy up, parameters down) of the study's own completed trials."""
    complete = own_trials(study, states=(TrialState.COMPLETE,))
    points = [Point(t.number, t.values[0], t.values[1]) for t in complete]
    front = {p.number for p in pareto_fronts(points)[0]} if points else set()
    return [t for t in complete if t.number in front]


def copied_counts(user_attrs: dict[str, Any]) -> dict[str, int]:
    """Copied trials per state name, from a study's user attributes ({} when it was not warm-started)."""
    return dict((user_attrs.get(WARM_START_ATTR) or {}).get("copied") or {})


def warm_start_source(storage: BaseStorage, name: str, source: str, settings: StudySettings, half_made: bool = False) -> optuna.Study:
    """The study to warm-start the new study ``name`` from; a UserError if it cannot be (the data are checked later).

    ``half_made``: a study ``name`` that exists is one whose creator stopped half way (no settings
    yet): the same command finishes it, copying what its creator had not copied yet.
    """
    if not half_made and name in stores.list_study_names(storage):
        raise UserError(
            f"study {name!r} exists; --warm-start seeds a new study only: pick a new --study name, or leave --warm-start out to continue it"
        )
    if source == name:
        raise UserError("a study cannot warm-start from itself; name an earlier study with --warm-start")
    other = stores.load_study(storage, source)
    if not other.user_attrs.get(SETTINGS_ATTR):
        raise UserError(
            f"study {source!r} was not made by mnist-hpo (no settings recorded), so its space cannot be compared; warm-start from an mnist-hpo study"
        )
    check_compatible(StudySettings.load(other), settings, source)
    if not own_trials(other, states=COPIED_STATES):
        raise UserError(f"study {source!r} has no finished trial to copy; run it first or warm-start from another study")
    return other


def warm_start_trials(other: optuna.Study, settings: StudySettings) -> list[FrozenTrial]:
    """``other``'s own finished trials, once its data are known to be this study's (``settings.data_digest``)."""
    digest = _digest(other)
    prefix = f"cannot warm-start from {other.study_name!r}"
    if not digest:
        raise UserError(f"{prefix}: it recorded no data digest (none of its workers has loaded data yet), so its data cannot be compared")
    if digest != settings.data_digest:
        theirs = StudySettings.load(other)
        raise UserError(
            f"{prefix}: its data differ (data digest {digest} there, {settings.data_digest} here; "
            f"{theirs.data} with {theirs.train_subset or 'all'} training images there); use the same --profile and data"
        )
    return own_trials(other, states=COPIED_STATES)


def _digest(study: optuna.Study) -> str:
    """The data digest a study recorded: in its settings, or (a study made by `study create`) in its data source line."""
    recorded = StudySettings.load(study).data_digest
    found = re.search(r"sha256 ([0-9a-f]+)", str(study.user_attrs.get(DATA_SOURCE_ATTR, "")))
    return recorded or (found.group(1) if found else "")


def check_compatible(other: StudySettings, ours: StudySettings, source: str) -> None:
    """Same objectives, same space parameter by parameter; else a one-line reason naming the difference."""
    prefix = f"cannot warm-start from {source!r}"
    if other.objectives != ours.objectives:
        raise UserError(
            f"{prefix}: it optimises {','.join(other.objectives)}, this study {','.join(ours.objectives)}; pass --objectives {','.join(other.objectives)}"
        )
    differ = [p for p in sorted(set(other.space) | set(ours.space)) if other.space.get(p) != ours.space.get(p)]
    if differ:
        first = differ[0]
        more = f" (and {len(differ) - 1} more: {', '.join(differ[1:])})" if len(differ) > 1 else ""
        raise UserError(
            f"{prefix}: parameter {first} differs ({_describe(ours.space.get(first))} here, {_describe(other.space.get(first))} "
            f"there){more}; use the same --profile and --space as that study"
        )


def _describe(fields: dict[str, Any] | None) -> str:
    if fields is None:
        return "absent"
    return Param(**{**fields, "choices": tuple(fields["choices"])}).describe()


def copy_trials(study: optuna.Study, source: str, trials: Sequence[FrozenTrial]) -> int:
    """Add ``trials`` of ``source`` to ``study`` as labelled copies (those not copied yet); returns how many were added.

    Repeatable: a creator that died half way is finished by the next process without duplicates
    (each copy is one write of the storage: a copy is there whole, or not at all).
    """
    present = {t.user_attrs[COPIED_ATTR]["trial"] for t in study.get_trials(deepcopy=False) if is_copied(t)}
    missing = [t for t in trials if t.number not in present]
    study.add_trials([_copy(t, source) for t in missing])
    recount_copies(study)
    return len(missing)


def recount_copies(study: optuna.Study) -> str | None:
    """Record how many trials of each state were copied (what the budget leaves out); returns their source, if any."""
    copies = [t for t in study.get_trials(deepcopy=False) if is_copied(t)]
    if not copies:
        return None
    counts = {state.name: sum(t.state == state for t in copies) for state in COPIED_STATES}
    source = copies[0].user_attrs[COPIED_ATTR]["study"]
    study.set_user_attr(WARM_START_ATTR, {"study": source, "copied": counts})
    return source


def _copy(trial: FrozenTrial, source: str) -> FrozenTrial:
    """The trial as a new finished trial: parameters, values, learning curve and user attributes, labelled as a copy."""
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in _NOT_COPIED}
    user_attrs[COPIED_ATTR] = {"study": source, "trial": trial.number}
    return create_trial(
        state=trial.state,
        values=trial.values if trial.state == TrialState.COMPLETE else None,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=user_attrs,
        intermediate_values=trial.intermediate_values,
    )
