"""`mnist-hpo search`, `mnist-hpo worker` and `mnist-hpo study create`: every study runs the same engine.

`search` creates a study with its budget (or extends one), then runs one worker in this process,
or K worker processes with --workers/--gpus. `worker` joins an existing study. The dashboard's
pictures and notes are wired in here, as the objective's "trial finished" hook.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

import optuna

from mnist_hpo import storage as stores
from mnist_hpo.console import console
from mnist_hpo.errors import SearchInterrupted, UserError

if TYPE_CHECKING:
    from mnist_hpo.data import Splits
from mnist_hpo.search import (
    STOPPED_ATTR,
    STUDY_DEFINING,
    Faults,
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


def apply_stop_rules(study: optuna.Study, settings: StudySettings, request: SearchRequest) -> None:
    """An existing study gets the request's stop rules; a stop it recorded is lifted, and its dashboard note says so."""
    stopped = study.user_attrs.get(STOPPED_ATTR)
    for line in set_stop_rules(study, settings, request.stop_after, request.target, request.terminator):
        console.print(line)
    if stopped:
        from mnist_hpo.dashboards import note_study_stop

        note_study_stop(study, f"lifted the earlier stop ({stopped}); continued by `{request.command or 'mnist-hpo search'}`")


def search(request: SearchRequest) -> optuna.Study:
    """Create or extend a study to its budget, then run its workers (this process, or K processes)."""
    quiet_optuna()
    request.check_counts()
    faults = faults_of(request)
    profile = resolve_profile(request)
    settings = new_settings(request, profile)  # bad options fail here, before torch is imported
    slots = plan_slots(request.workers, request.gpus, request.trials_per_gpu, request.device)
    url = stores.resolve_url(request.storage)
    refuse_shared_sqlite(url, len(slots))
    from mnist_hpo.data import load_splits
    from mnist_hpo.trainer import resolve_device

    resolve_device(request.device)  # `--device cuda` without a GPU fails before anything is written
    name = request.study or f"mnist-{profile.name}"
    stores.check_artifacts(request.artifacts)  # a wrong folder, bucket or credentials fails before the study is written
    storage = open_for_workers(url, faults, must_exist=request.warm_start is not None)
    # a half-made study (its creator was interrupted) is created again, to its end
    existed = name in stores.list_study_names(storage) and not is_half_made(storage, storage.get_study_id_from_name(name))
    source = warm_start_source(storage, name, request.warm_start, settings) if request.warm_start else None
    if existed:  # the study's own data, profile and space, not the command line's
        stored = StudySettings.load(stores.load_study(storage, name))
        check_objectives(name, stored, settings)
        check_same_study(request, stored, settings, STUDY_DEFINING)
        settings = stored
    splits = load_splits(settings.data, subset=settings.train_subset, log=console.print)  # once, before any worker
    if not settings.data_digest:
        settings.data_digest = splits.digest
    copies = warm_start_trials(source, settings) if source else ()
    study, settings, account = ensure_budget_study(
        storage, name, settings, budget=search_budget(request, profile), data_source=splits.describe(), copies=copies
    )
    console.print(f"{account} in {stores.mask_url(url)}")
    if existed:  # `search` gives the study the stop rules of its command line
        apply_stop_rules(study, settings, request)
    console.print(f"profile {settings.profile}: {get_profile(settings.profile, False).description}")
    paste = stores.pasteable(request.storage, request.artifacts)
    where = f"--study {shlex.quote(name)}{paste.storage}"
    again = f"mnist-hpo search {where}{paste.artifacts}"  # the command that continues this study, as printed
    workers = f" --workers {len(slots)}" if request.gpus is None and request.trials_per_gpu is None else ""
    timeout = search_timeout(request, settings)
    if timeout:
        console.print(f"starting trials for up to {timeout:g} s; what is left of the budget stays queued for the next run")
    try:
        run_workers(request, url, name, slots, faults, again, splits=splits, workers_flag=workers, timeout=timeout)
    except SearchInterrupted:
        if not in_process(slots, request.gpus, request.trials_per_gpu):
            raise
        raise SearchInterrupted(f"interrupted: the running trial was marked FAIL and re-queued; continue with `{again}`") from None
    study = stores.load_study(storage, name)
    print_outcome(study, settings, where, paste)
    return study


def worker(request: SearchRequest) -> None:
    """`mnist-hpo worker`: join an existing study; with --workers/--gpus, start that many worker processes."""
    quiet_optuna()
    request.check_counts()
    faults = faults_of(request)
    slots = plan_slots(request.workers, request.gpus, request.trials_per_gpu, request.device)
    url = stores.resolve_url(request.storage)
    refuse_shared_sqlite(url, len(slots))
    paste = stores.pasteable(request.storage, request.artifacts)
    again = f"mnist-hpo worker --study {shlex.quote(request.study)}{paste.storage}{paste.artifacts}"
    run_workers(request, url, request.study, slots, faults, again, timeout=request.timeout)


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
    timeout: float | None = None,
) -> None:
    """This process as the one worker, or one `mnist-hpo worker` process per slot; `again` says how to continue."""
    options = {
        "device": request.device,
        "artifacts": request.artifacts,
        "seed": request.seed,
        "timeout": timeout,
        "threads": request.threads,
    }
    if in_process(slots, request.gpus, request.trials_per_gpu):
        work(url, name, faults, splits=splits, on_finish=publisher(), on_stop=stop_noter(), again=again, **options)
        return
    storage = stores.open_storage(url, must_exist=True)
    launch_workers(url, storage, stores.load_study(storage, name), slots, faults, again=again + workers_flag, **options)


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
