"""`mnist-hpo search`: create or continue a study and run trials with a live progress view."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from mnist_hpo import storage
from mnist_hpo.checkpoints import library_versions
from mnist_hpo.console import console, progress
from mnist_hpo.data import load_splits
from mnist_hpo.errors import SearchInterrupted, UserError
from mnist_hpo.search.objective import Objective
from mnist_hpo.search.profiles import Profile, get_profile
from mnist_hpo.search.settings import StudySettings, parse_objectives
from mnist_hpo.search.space import Space, load_space_file
from mnist_hpo.signals import sigterm_as_interrupt
from mnist_hpo.trainer import resolve_device

SAMPLERS = ("tpe", "cmaes", "gp", "random", "nsga2", "qmc")
PRUNERS = ("median", "percentile", "sha", "hyperband", "patient", "wilcoxon", "none")


@dataclass
class SearchRequest:
    study: str | None = None
    storage: str | None = None
    artifacts: Path | None = None
    n_trials: int | None = None
    timeout: float | None = None
    profile: str | None = None
    space_file: Path | None = None
    sampler: str = "tpe"
    pruner: str = "hyperband"
    seed: int | None = None
    device: str = "auto"
    epochs: int | None = None
    max_params: int | None = None
    objectives: str = "accuracy"
    # Several workers and faults (mnist_hpo.search.worker): --workers or a GPU flag runs the study to a global budget.
    workers: int | None = None
    gpus: str | None = None
    trials_per_gpu: int | None = None
    heartbeat_interval: int = 10
    grace_period: int | None = None
    max_retries: int = 3
    command: str = ""  # the command line that launched it, recorded in the study


def make_sampler(name: str, seed: int | None, multi_objective: bool, constant_liar: bool = False) -> optuna.samplers.BaseSampler:
    """`constant_liar`: concurrent workers' TPE treats running trials as bad, so it does not sample them again."""
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    if multi_objective and name in ("cmaes",):
        raise UserError("the cmaes sampler handles one objective only; use tpe or nsga2 with --objectives accuracy,params")
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5, constant_liar=constant_liar)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """Pruner settings scaled to the epoch budget: judge after the first epoch, not before."""
    if name not in PRUNERS:
        raise UserError(f"unknown pruner {name!r}; choose from {', '.join(PRUNERS)}")
    warmup = max(1, epochs // 5)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=warmup)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "patient":
        return optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup), patience=2)
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=warmup)
    return optuna.pruners.NopPruner()


def new_settings(request: SearchRequest, profile: Profile) -> StudySettings:
    """Validate everything the user gave before anything is written to the storage."""
    base = Space().with_overrides(profile.space, origin=f"profile {profile.name}")
    space = load_space_file(request.space_file, base)
    epochs = request.epochs if request.epochs is not None else profile.epochs
    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}")
    if request.max_params is not None and request.max_params < 1:
        raise UserError(f"--max-params must be positive, got {request.max_params}")
    objectives = parse_objectives(request.objectives)
    make_sampler(request.sampler, request.seed, len(objectives) > 1)
    make_pruner(request.pruner, epochs)
    return StudySettings(
        profile=profile.name, space=space.to_dict(), objectives=objectives, epochs=epochs,
        data=profile.data, train_subset=profile.train_subset, max_params=request.max_params,
        seed=request.seed, sampler=request.sampler, pruner=request.pruner,
        versions=library_versions(), command=request.command,
    )


def quiet_optuna() -> None:
    """Our own per-trial lines (failure reasons included) replace Optuna's log and its tracebacks."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def run_search(request: SearchRequest) -> optuna.Study:
    quiet_optuna()
    if request.n_trials is not None and request.n_trials < 1:
        raise UserError(f"--n-trials must be at least 1, got {request.n_trials}")
    if request.timeout is not None and request.timeout <= 0:
        raise UserError(f"--timeout must be positive seconds, got {request.timeout}")
    from mnist_hpo.search import worker

    if request.workers is not None or request.gpus is not None or request.trials_per_gpu is not None:
        return worker.search_with_workers(request)
    faults = worker.faults_of(request)
    device = resolve_device(request.device)
    profile = get_profile(request.profile, device.type == "cuda")
    settings = new_settings(request, profile)
    study_name = request.study or f"mnist-{profile.name}"
    url = storage.resolve_url(request.storage)
    # Heartbeats: a trial whose process died is failed and re-queued (resuming from its checkpoint) by the next search.
    rdb = storage.open_storage(url, heartbeat_interval=faults.heartbeat_interval, grace_period=faults.grace_period,
                               failed_trial_callback=worker.RetryDeadTrial(faults.max_retries, keep_budget=False))

    existing = study_name in storage.list_study_names(rdb)
    if existing:
        study = optuna.load_study(study_name=study_name, storage=rdb)
        stored = StudySettings.load(study)
        if stored.n_trials is not None:  # a study with a global budget is run by workers, here one
            return worker.search_with_workers(request)
        if stored.objectives != settings.objectives:
            raise UserError(
                f"study {study_name!r} optimises {','.join(stored.objectives)}, not {','.join(settings.objectives)}; "
                f"pass --objectives {','.join(stored.objectives)} or a new --study name"
            )
        settings = stored
        console.print(f"continuing study {study_name!r} (profile {settings.profile}) in {storage.mask_url(url)}")
    profile = get_profile(settings.profile, False)
    console.print(f"profile {profile.name}: {profile.description}")

    splits = load_splits(settings.data, subset=settings.train_subset, log=console.print)
    settings.data_digest = splits.digest
    sampler = make_sampler(settings.sampler, settings.seed, settings.multi_objective)
    pruner = make_pruner(settings.pruner, settings.epochs)
    if existing:
        study = optuna.load_study(study_name=study_name, storage=rdb, sampler=sampler, pruner=pruner)
    else:
        study = optuna.create_study(study_name=study_name, storage=rdb, directions=settings.directions, sampler=sampler, pruner=pruner)
        settings.save(study)
        study.set_user_attr("data_source", f"{splits.source} ({len(splits.train):,} train / {len(splits.val):,} validation, sha256 {splits.digest})")
        study.enqueue_trial(Space.from_dict(settings.space).published(), user_attrs={"published_baseline": True})
        console.print(f"created study {study_name!r} in {storage.mask_url(url)}; trial 0 is the published {profile.name} baseline")

    n_trials = request.n_trials or profile.n_trials
    timeout = request.timeout if request.timeout is not None else (profile.timeout if request.n_trials is None else None)
    artifacts = storage.open_artifacts(request.artifacts)
    where = f"--study {study_name}" + (f" --storage {storage.mask_url(url)}" if url != storage.DEFAULT_STORAGE else "")
    _optimize(study, Objective(settings, splits, device, artifacts, seed=settings.seed or 0), n_trials, timeout, settings, where)
    _print_outcome(study, settings, where)
    return study


def _optimize(study: optuna.Study, objective: Objective, n_trials: int, timeout: float | None, settings: StudySettings, where: str) -> None:
    started = time.perf_counter()
    budget = f"{n_trials} trials" + (f" or {timeout:.0f} s" if timeout else "")
    console.print(f"running up to {budget} on {objective.device} ({len(objective.splits.train):,} training images, {settings.epochs} epochs max)")
    with progress() as bar:
        task = bar.add_task("trials", total=n_trials, timeout=timeout)

        def on_epoch(trial: optuna.Trial, report) -> None:
            bar.update(task, description=f"trial {trial.number} epoch {report.epoch}/{settings.epochs} (validation {100 * report.val_accuracy:.2f}%)")

        def on_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            bar.advance(task)
            console.print(trial_line(trial))
            if not settings.multi_objective and any(t.state == TrialState.COMPLETE for t in study.trials):
                bar.update(task, description=f"best validation {100 * study.best_value:.2f}%")

        objective.on_epoch = on_epoch
        try:
            with sigterm_as_interrupt():  # SIGTERM (Kubernetes, Slurm) stops a search like Ctrl-C
                study.optimize(objective, n_trials=n_trials, timeout=timeout, callbacks=[on_trial], gc_after_trial=True)
        except KeyboardInterrupt:
            raise SearchInterrupted(f"interrupted: the running trial was marked FAIL; continue with `mnist-hpo search {where}`") from None
    console.print(f"search finished in {time.perf_counter() - started:.0f} s")


def trial_line(trial: FrozenTrial) -> str:
    """One line per finished trial: number, state, value, parameters, seconds, epochs."""
    attrs = trial.user_attrs
    if trial.values:
        value = f"validation accuracy {100 * trial.values[0]:.2f}%" + (f", {int(trial.values[1]):,} params" if len(trial.values) > 1 else "")
    elif trial.intermediate_values:
        value = f"last validation accuracy {100 * list(trial.intermediate_values.values())[-1]:.2f}%"
    else:
        reason = trial.system_attrs.get("fail_reason", "")
        value = attrs.get("stopped") or (reason.splitlines()[-1] if reason else "")
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    return (
        f"trial {trial.number:>3} {trial.state.name:<8} {value}  {attrs.get('parameters', 0):,} weights  "
        f"{attrs.get('epochs_run', 0)} epochs  {attrs.get('seconds', 0):.1f} s  [{params}]"
    )


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _print_outcome(study: optuna.Study, settings: StudySettings, where: str) -> None:
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        console.print("no trial completed yet; run `mnist-hpo search` again to add trials")
        return
    if settings.multi_objective:
        console.print(f"Pareto front (validation accuracy vs parameters): {len(study.best_trials)} trials")
        for trial in sorted(study.best_trials, key=lambda t: t.values[1]):
            console.print(f"  trial {trial.number}: validation accuracy {100 * trial.values[0]:.2f}%, {int(trial.values[1]):,} parameters")
    else:
        best = study.best_trial
        console.print(
            f"best trial {best.number}: validation accuracy {100 * best.value:.2f}% "
            f"({best.user_attrs.get('parameters', 0):,} parameters, {best.user_attrs.get('epochs_run')} epochs)"
        )
    console.print("next:")
    for command in (f"status {where}", f"best {where} --test", f"export {where} --out best.pt", "dashboard"):
        console.print(f"  mnist-hpo {command}")


def show_space(profile_name: str | None, space_file: Path | None) -> None:
    """Print the effective space: the profile's narrowing plus the space file, if any."""
    from rich.table import Table

    profile = get_profile(profile_name, has_gpu=False) if profile_name else get_profile(None, resolve_device("auto").type == "cuda")
    console.print(f"profile {profile.name}: {profile.description}")
    space = load_space_file(space_file, Space().with_overrides(profile.space, origin=f"profile {profile.name}"))
    table = Table("parameter", "searched as", "published (trial 0)")
    published = space.published()
    for name, description in space.describe():
        table.add_row(name, description, repr(published[name]) if name in published else "")
    console.print(table)
