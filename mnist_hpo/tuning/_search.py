"""A search, from its request to its finished study, on one path: ``prepare`` then ``run``.

``prepare`` checks every option, opens the storage, resolves the device, the MLflow server and the
data, once, and writes nothing. ``run`` sets the study's budget (``ensure_budget_study``) and runs
its workers: this process, or K worker processes. `mnist-hpo search` and ``mnist_hpo.search`` both
call the two, so the command line and the API give the same study; `worker` joins with ``join``,
and `study create` makes a study for workers with ``create``.
What the layers above add (the dashboard's pictures and notes) comes in as ``SearchHooks``.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import optuna

from mnist_hpo import storage as stores
from mnist_hpo.console import console
from mnist_hpo.deadline import Deadline
from mnist_hpo.errors import SearchInterrupted, UserError
from mnist_hpo.tuning._budget import check_objectives, ensure_budget_study, is_half_made, refuse_through_proxy
from mnist_hpo.tuning._launcher import Slot, in_process, launch_workers, plan_slots, refuse_shared_sqlite
from mnist_hpo.tuning._prepare import (
    STUDY_DEFINING,
    SearchRequest,
    check_same_study,
    create_budget,
    new_settings,
    resolve_profile,
    search_budget,
)
from mnist_hpo.tuning._retries import Faults
from mnist_hpo.tuning._run import open_for_workers, quiet_optuna, work
from mnist_hpo.tuning._spec import WorkerSpec
from mnist_hpo.tuning.attrs import STOPPED_ATTR
from mnist_hpo.tuning.copies import warm_start_source, warm_start_trials
from mnist_hpo.tuning.profiles import Profile, get_profile
from mnist_hpo.tuning.settings import StudySettings
from mnist_hpo.tuning.stopping import rules_given, set_stop_rules
from mnist_hpo.tuning.tracking import MlflowTracker

if TYPE_CHECKING:
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

    from mnist_hpo.data import Splits


@dataclass(frozen=True)
class SearchHooks:
    """What the layers above wire into a search (the tuning layer never imports the dashboards)."""

    on_finish: Callable | None = None  # the objective's "trial finished" hook: (trial, TrialEnd)
    note: Callable[[optuna.Study, str], None] | None = None  # a line for the study's own note (a stop, a stop lifted)


@dataclass
class Prepared:
    """A search checked and resolved, nothing written yet: what ``run`` needs, read once."""

    request: SearchRequest
    profile: Profile
    name: str
    url: str
    storage: BaseStorage
    settings: StudySettings  # the study's own when it exists (its profile, space and data), else the new study's
    existed: bool
    slots: list[Slot]
    spec: WorkerSpec  # its ``again`` is the command that continues the study to its recorded budget, as printed
    splits: Splits
    copies: Sequence[FrozenTrial]  # a new study's warm start
    tracker: MlflowTracker | None


def faults_of(request: SearchRequest) -> Faults:
    return Faults(request.heartbeat_interval, request.grace_period, request.max_retries).validated()


def prepare(request: SearchRequest) -> Prepared:
    """Check every option and open what the search needs; bad input is a one-line UserError, and nothing is written.

    --timeout (or the profile's) counts from here: one deadline bounds waiting for the study's lock or
    creator, and starting trials.
    """
    started = time.monotonic()
    quiet_optuna()
    request.check_counts()
    faults = faults_of(request)
    profile = resolve_profile(request)
    settings = new_settings(request, profile)
    slots = plan_slots(request.workers, request.gpus, request.trials_per_gpu, request.device)
    url = stores.resolve_url(request.storage)
    refuse_shared_sqlite(url, len(slots))
    name = request.study or f"mnist-{profile.name}"
    refuse_through_proxy(url, name)  # before anything is written, here or in MLflow
    tracker = mlflow_tracker(request, name)  # --mlflow: mlflow installed, the server reached, before anything is written
    from mnist_hpo.data import load_splits
    from mnist_hpo.trainer import resolve_device

    resolve_device(request.device)  # `--device cuda` without a GPU fails before anything is written
    stores.check_artifacts(request.artifacts)  # a wrong folder, bucket or credentials fails before the study is written
    storage = open_for_workers(url, faults, must_exist=request.warm_start is not None)
    # a half-made study (its creator was interrupted) is created again, to its end
    existed = name in stores.list_study_names(storage) and not is_half_made(storage, storage.get_study_id_from_name(name))
    source = warm_start_source(storage, name, request.warm_start, settings, half_made=not existed) if request.warm_start else None
    if existed:  # the study's own data, profile and space, not the command line's
        stored = StudySettings.load(stores.load_study(storage, name))
        check_objectives(name, stored, settings)
        check_same_study(request, stored, settings, STUDY_DEFINING)
        settings = stored
    deadline = Deadline.after(search_timeout(request, settings), start=started)
    splits = load_splits(settings.data, subset=settings.train_subset, log=console.print)  # once, before any worker
    if not settings.data_digest:
        settings.data_digest = splits.digest
    paste = stores.pasteable(request.storage, request.artifacts)
    again = f"mnist-hpo search --study {shlex.quote(name)}{paste.storage}{paste.artifacts}"  # continues it, as printed
    spec = worker_spec(request, faults, deadline, again)
    copies = warm_start_trials(source, settings) if source else ()
    return Prepared(request, profile, name, url, storage, settings, existed, slots, spec, splits, copies, tracker)


def run(prepared: Prepared, hooks: SearchHooks = SearchHooks()) -> optuna.Study:
    """Create or extend the prepared study to its budget, then run its workers; returns the study.

    An interrupted raise names ``spec.again``, which continues the study without raising its budget twice.
    """
    p, request = prepared, prepared.request
    again = p.spec.continue_command(p.name)
    study, settings, account = ensure_budget_study(
        p.storage,
        p.name,
        p.settings,
        budget=search_budget(request, p.profile, p.settings),
        data_source=p.splits.describe(),
        copies=p.copies,
        deadline=p.spec.deadline,
        finish=again,
    )
    try:  # from here the budget is queued: an interrupt names the command that continues it, never the same one again
        console.print(f"{account} in {stores.mask_url(p.url)}")
        if p.existed:  # `search` gives the study the stop rules of its command line
            apply_stop_rules(study, settings, request, hooks.note)
        console.print(f"profile {settings.profile}: {get_profile(settings.profile, False).description}")
        if p.spec.deadline.bounded:
            console.print(
                f"starting trials for up to {p.spec.deadline.left():.1f} s more (--timeout counts from the command's start); "
                "what is left of the budget stays queued for the next run"
            )
        workers = f" --workers {len(p.slots)}" if request.gpus is None and request.trials_per_gpu is None else ""
        run_workers(request, p.url, p.name, p.slots, p.spec, hooks, splits=p.splits, workers_flag=workers, tracker=p.tracker)
    except KeyboardInterrupt:  # before this process's worker took a trial (it turns its own into SearchInterrupted)
        raise SearchInterrupted(f"interrupted with study {p.name!r}'s budget queued; continue with `{again}`") from None
    except SearchInterrupted:
        if not in_process(p.slots, request.gpus, request.trials_per_gpu):
            raise
        raise SearchInterrupted(f"interrupted: the running trial was marked FAIL and re-queued; continue with `{again}`") from None
    return stores.load_study(p.storage, p.name)


def join(request: SearchRequest, hooks: SearchHooks = SearchHooks()) -> None:
    """`mnist-hpo worker`: join an existing study; with --workers/--gpus, start that many worker processes.

    --timeout counts from here; a worker started by `search --workers K` also inherits that command's deadline.
    """
    deadline = Deadline.after(request.timeout).earlier(Deadline.inherited())
    if not request.study:
        raise UserError("--study NAME is required: the study to join")
    quiet_optuna()
    request.check_counts()
    faults = faults_of(request)
    slots = plan_slots(request.workers, request.gpus, request.trials_per_gpu, request.device)
    url = stores.resolve_url(request.storage)
    refuse_shared_sqlite(url, len(slots))
    tracker = mlflow_tracker(request, request.study)
    paste = stores.pasteable(request.storage, request.artifacts)
    again = f"mnist-hpo worker --study {shlex.quote(request.study)}{paste.storage}{paste.artifacts}"
    spec = worker_spec(request, faults, deadline, again)
    run_workers(request, url, request.study, slots, spec, hooks, tracker=tracker)


def create(request: SearchRequest, note: Callable[[optuna.Study, str], None] | None = None) -> tuple[optuna.Study, StudySettings]:
    """`study create`: make a study for workers with its budget queued, or check and raise an existing one (idempotent).

    Runs no trial. Stop rules given for an existing study replace its own (``note`` says a lifted stop).
    """
    quiet_optuna()
    request.check_counts()
    if not request.study:
        raise UserError("--study NAME is required")
    profile = resolve_profile(request)
    settings = new_settings(request, profile)
    url = stores.resolve_url(request.storage)
    storage = stores.open_storage(url)
    existed = request.study in stores.list_study_names(storage)
    study, settings, account = ensure_budget_study(storage, request.study, settings, budget=create_budget(request, profile, settings))
    console.print(f"{account} in {stores.mask_url(url)}")
    if existed and rules_given(request.stop_after, request.target, request.terminator):  # given: they replace the stored ones
        apply_stop_rules(study, settings, request, note)
    return study, settings


def run_workers(
    request: SearchRequest,
    url: str,
    name: str,
    slots: list[Slot],
    spec: WorkerSpec,
    hooks: SearchHooks,
    *,
    splits: Splits | None = None,
    workers_flag: str = "",
    tracker: MlflowTracker | None = None,
) -> None:
    """This process as the one worker, or one `mnist-hpo worker` process per slot (each gets what is left of the deadline).

    With --mlflow, this process's worker logs its trials through ``tracker``; worker processes get the URI.
    """
    if in_process(slots, request.gpus, request.trials_per_gpu):
        on_stop = (lambda study, reason: hooks.note(study, f"stopped early: {reason}")) if hooks.note else None
        work(url, name, spec, splits=splits, on_finish=hooks.on_finish, on_stop=on_stop, on_trial=tracker)
        return
    storage = stores.open_storage(url, must_exist=True)
    launch_workers(url, storage, stores.load_study(storage, name), slots, replace(spec, again=spec.continue_command(name) + workers_flag))


def worker_spec(request: SearchRequest, faults: Faults, deadline: Deadline, again: str) -> WorkerSpec:
    """The request's options every worker runs with, and the command that continues the study."""
    return WorkerSpec(
        faults=faults,
        device=request.device,
        artifacts=request.artifacts,
        seed=request.seed,
        deadline=deadline,
        threads=request.threads,
        mlflow=request.mlflow,
        again=again,
    )


def search_timeout(request: SearchRequest, settings: StudySettings) -> float | None:
    """--timeout, else the profile's (the quick profile: 600 s) unless --n-trials asks for a trial count."""
    if request.timeout is not None or settings.pbt:  # a population trains to its end
        return request.timeout
    return get_profile(settings.profile, False).timeout if request.n_trials is None else None


def mlflow_tracker(request: SearchRequest, experiment: str) -> MlflowTracker | None:
    """--mlflow: the "trial finished" hook logging to MLflow, its server reached and its experiment made; else None."""
    if request.mlflow is None:
        return None
    if not request.mlflow.strip():
        raise UserError("--mlflow needs a tracking URI, e.g. http://127.0.0.1:5000")
    tracker = MlflowTracker(request.mlflow)  # a one-line error without the `mlflow` extra
    experiment_id = tracker.check(experiment)
    console.print(f"logging finished trials to MLflow at {tracker.shown}, experiment {experiment!r} (id {experiment_id})")
    return tracker


def apply_stop_rules(
    study: optuna.Study, settings: StudySettings, request: SearchRequest, note: Callable[[optuna.Study, str], None] | None
) -> None:
    """An existing study gets the request's stop rules; a stop it recorded is lifted, and ``note`` says so."""
    stopped = study.user_attrs.get(STOPPED_ATTR)
    for line in set_stop_rules(study, settings, request.stop_after, request.target, request.terminator):
        console.print(line)
    if stopped and note is not None:
        note(study, f"lifted the earlier stop ({stopped}); continued by `{request.command or 'mnist-hpo search'}`")
