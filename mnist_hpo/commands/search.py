"""`mnist-hpo search`, `mnist-hpo worker` and `mnist-hpo study create`: every study runs the same engine.

`search` creates a study with its budget (or extends one), then runs one worker in this process,
or K worker processes with --workers/--gpus. `worker` joins an existing study. The dashboard's
pictures and notes are wired in here, as the objective's "trial finished" hook.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from mnist_hpo import storage as stores
from mnist_hpo.console import console
from mnist_hpo.deadline import NEVER, Deadline
from mnist_hpo.errors import SearchInterrupted, UserError

if TYPE_CHECKING:
    from mnist_hpo.data import Splits
from mnist_hpo.tuning import (
    STOPPED_ATTR,
    STUDY_DEFINING,
    Faults,
    MlflowTracker,
    SearchRequest,
    StudySettings,
    check_same_study,
    create_budget,
    ensure_budget_study,
    get_profile,
    in_process,
    is_half_made,
    launch_workers,
    new_settings,
    open_for_workers,
    plan_slots,
    print_outcome,
    quiet_optuna,
    refuse_shared_sqlite,
    resolve_profile,
    rules_given,
    search_budget,
    set_stop_rules,
    warm_start_source,
    warm_start_trials,
    work,
)


def faults_of(request: SearchRequest) -> Faults:
    return Faults(request.heartbeat_interval, request.grace_period, request.max_retries).validated()


def check_objectives(name: str, stored: StudySettings, asked: StudySettings) -> None:
    if stored.objectives != asked.objectives:
        raise UserError(
            f"study {name!r} optimises {','.join(stored.objectives)}, not {','.join(asked.objectives)}; "
            f"pass --objectives {','.join(stored.objectives)} or a new --study name"
        )


def publisher():
    """The objective's "trial finished" hook: the dashboard's pictures and notes."""
    from mnist_hpo.dashboards import publish_trial

    def on_finish(trial: optuna.Trial, end) -> None:
        result = end.result
        publish_trial(
            trial,
            end.artifacts,
            end.curve,
            stopped=end.stopped,
            epochs=end.epochs,
            val_accuracy=result.val_accuracy if result else None,
            val_images=end.val.images.numpy() if result else None,
            val_labels=end.val.labels.numpy() if result else None,
            predictions=result.val_predictions.numpy() if result else None,
        )

    return on_finish


def stop_noter():
    """The worker's "study stopped early" hook: the study's dashboard note says why."""
    from mnist_hpo.dashboards import note_study_stop

    return lambda study, reason: note_study_stop(study, f"stopped early: {reason}")


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


def apply_stop_rules(study: optuna.Study, settings: StudySettings, request: SearchRequest) -> None:
    """An existing study gets the request's stop rules; a stop it recorded is lifted, and its dashboard note says so."""
    stopped = study.user_attrs.get(STOPPED_ATTR)
    for line in set_stop_rules(study, settings, request.stop_after, request.target, request.terminator):
        console.print(line)
    if stopped:
        from mnist_hpo.dashboards import note_study_stop

        note_study_stop(study, f"lifted the earlier stop ({stopped}); continued by `{request.command or 'mnist-hpo search'}`")


def search(request: SearchRequest) -> optuna.Study:
    """Create or extend a study to its budget, then run its workers (this process, or K processes).

    Progress and trial lines go to the console; the summary with its suggested commands is
    ``show_outcome``'s, which only the command line calls. --timeout (or the profile's) counts from
    here: one deadline bounds waiting for the study's lock or creator, and starting trials.
    """
    started = time.monotonic()
    quiet_optuna()
    request.check_counts()
    faults = faults_of(request)
    profile = resolve_profile(request)
    settings = new_settings(request, profile)  # bad options fail here, before torch is imported
    slots = plan_slots(request.workers, request.gpus, request.trials_per_gpu, request.device)
    url = stores.resolve_url(request.storage)
    refuse_shared_sqlite(url, len(slots))
    name = request.study or f"mnist-{profile.name}"
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
    copies = warm_start_trials(source, settings) if source else ()
    where, paste = _where(name, request.storage, request.artifacts)
    again = f"mnist-hpo search {where}{paste.artifacts}"  # continues the study to its recorded budget, as printed
    budget = search_budget(request, profile)  # an interrupted raise of it names `again`, which does not raise it twice
    study, settings, account = ensure_budget_study(
        storage, name, settings, budget=budget, data_source=splits.describe(), copies=copies, deadline=deadline, finish=again
    )
    console.print(f"{account} in {stores.mask_url(url)}")
    if existed:  # `search` gives the study the stop rules of its command line
        apply_stop_rules(study, settings, request)
    console.print(f"profile {settings.profile}: {get_profile(settings.profile, False).description}")
    workers = f" --workers {len(slots)}" if request.gpus is None and request.trials_per_gpu is None else ""
    if deadline.bounded:
        console.print(
            f"starting trials for up to {deadline.left():.1f} s more (--timeout counts from the command's start); "
            "what is left of the budget stays queued for the next run"
        )
    try:
        run_workers(request, url, name, slots, faults, again, splits=splits, workers_flag=workers, deadline=deadline, tracker=tracker)
    except SearchInterrupted:
        if not in_process(slots, request.gpus, request.trials_per_gpu):
            raise
        raise SearchInterrupted(f"interrupted: the running trial was marked FAIL and re-queued; continue with `{again}`") from None
    return stores.load_study(storage, name)


def show_outcome(study: optuna.Study, storage: str | None, artifacts: str | Path | None) -> None:
    """The summary of a finished search and the commands that come next, each runnable as printed."""
    where, paste = _where(study.study_name, storage, artifacts)
    print_outcome(study, StudySettings.load(study), where, paste)


def _where(name: str, storage: str | None, artifacts: str | Path | None) -> tuple[str, stores.Pasteable]:
    """``--study NAME --storage URL`` as a user can paste it (no password in it), and the pasteable parts."""
    paste = stores.pasteable(storage, artifacts)
    return f"--study {shlex.quote(name)}{paste.storage}", paste


def worker(request: SearchRequest) -> None:
    """`mnist-hpo worker`: join an existing study; with --workers/--gpus, start that many worker processes.

    --timeout counts from here; a worker started by `search --workers K` also inherits that command's deadline.
    """
    deadline = Deadline.after(request.timeout).earlier(Deadline.inherited())
    quiet_optuna()
    request.check_counts()
    faults = faults_of(request)
    slots = plan_slots(request.workers, request.gpus, request.trials_per_gpu, request.device)
    url = stores.resolve_url(request.storage)
    refuse_shared_sqlite(url, len(slots))
    tracker = mlflow_tracker(request, request.study)
    paste = stores.pasteable(request.storage, request.artifacts)
    again = f"mnist-hpo worker --study {shlex.quote(request.study)}{paste.storage}{paste.artifacts}"
    run_workers(request, url, request.study, slots, faults, again, deadline=deadline, tracker=tracker)


def search_timeout(request: SearchRequest, settings: StudySettings) -> float | None:
    """--timeout, else the profile's (the quick profile: 600 s) unless --n-trials asks for a trial count."""
    if request.timeout is not None:
        return request.timeout
    return get_profile(settings.profile, False).timeout if request.n_trials is None else None


def run_workers(
    request: SearchRequest,
    url: str,
    name: str,
    slots: list,
    faults: Faults,
    again: str,
    *,
    splits: Splits | None = None,
    workers_flag: str = "",
    deadline: Deadline = NEVER,
    tracker: MlflowTracker | None = None,
) -> None:
    """This process as the one worker, or one `mnist-hpo worker` process per slot; `again` says how to continue.

    With --mlflow, this process's worker logs its trials through ``tracker``; worker processes get the URI.
    ``deadline``: the command's, taken when it started; workers get what is left of it, never --timeout again.
    """
    options = {
        "device": request.device,
        "artifacts": request.artifacts,
        "seed": request.seed,
        "deadline": deadline,
        "threads": request.threads,
    }
    if in_process(slots, request.gpus, request.trials_per_gpu):
        work(url, name, faults, splits=splits, on_finish=publisher(), on_stop=stop_noter(), on_trial=tracker, again=again, **options)
        return
    storage = stores.open_storage(url, must_exist=True)
    study = stores.load_study(storage, name)
    launch_workers(url, storage, study, slots, faults, again=again + workers_flag, mlflow=request.mlflow, **options)


def study_create(request: SearchRequest) -> optuna.Study:
    """`mnist-hpo study create`: make a study for workers, or check and keep an existing one (idempotent)."""
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
    shown = stores.mask_url(url)
    console.print(f"{account} in {shown}")
    if existed and rules_given(request.stop_after, request.target, request.terminator):  # given: they replace the stored ones
        apply_stop_rules(study, settings, request)
    console.print(f"profile {settings.profile}, objectives {','.join(settings.objectives)}, {settings.epochs} epochs max")
    paste = stores.pasteable(request.storage, None)
    if paste.secret_note:
        console.print(paste.secret_note)
    console.print(f"workers join with: mnist-hpo worker --study {shlex.quote(request.study)}{paste.storage}")
    return study
