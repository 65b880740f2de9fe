"""From a request to a study ready to run: settings checked before anything is written, the budget set.

``--n-trials N`` on a new study makes its budget N finished trials (COMPLETE + PRUNED). On an
existing study it adds N to the budget. Without it, a study short of its budget continues to it,
and one that met it gets the profile's count more. ``study create`` sets or raises the budget only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mnist_hpo.errors import UserError
from mnist_hpo.trainer import check_threads
from mnist_hpo.tuning._budget import BudgetView
from mnist_hpo.tuning._networks import check_networks
from mnist_hpo.tuning.pbt import Pbt
from mnist_hpo.tuning.profiles import Profile, get_profile
from mnist_hpo.tuning.pruners import check_pruner
from mnist_hpo.tuning.samplers import make_sampler
from mnist_hpo.tuning.settings import DEFAULT_PRUNER, StudySettings, parse_objectives
from mnist_hpo.tuning.space import Space, load_space_file
from mnist_hpo.versions import library_versions

#: The most trials one command may queue: a budget is queued as WAITING trials, ~200 a second on SQLite.
MAX_TRIALS = 10_000


@dataclass
class SearchRequest:
    """What `search`, `study create` and `worker` are asked to do (the command line, as plain data)."""

    study: str | None = None
    storage: str | None = None
    artifacts: str | Path | None = None  # a folder, or s3://BUCKET/PREFIX
    n_trials: int | None = None
    timeout: float | None = None
    profile: str | None = None
    space_file: Path | None = None
    sampler: str | None = None  # default tpe
    pruner: str | None = None  # default sha (mo-asha for two objectives)
    seed: int | None = None
    device: str = "auto"
    epochs: int | None = None
    max_params: int | None = None
    objectives: str = "accuracy"
    stop_after: int | None = None
    target: float | None = None
    terminator: bool = False
    warm_start: str | None = None
    workers: int | None = None
    gpus: str | None = None
    trials_per_gpu: int | None = None
    heartbeat_interval: int = 10
    grace_period: int | None = None
    max_retries: int = 3
    threads: int | None = None  # CPU threads per worker (default: this process's cores shared among its workers)
    mlflow: str | None = None  # an MLflow tracking URI: every trial this process's workers finish is logged there
    pbt: bool = False  # population-based training (tuning.pbt)
    population: int | None = None  # its members (default: the profile's)
    exploit_every: int | None = None  # epochs between its exploit steps (default: the profile's)
    baseline: bool | None = None  # the published configuration as trial 0 (default: the profile's)
    command: str = ""  # the command line that made the study, recorded in it

    def check_counts(self) -> None:
        if self.n_trials is not None and self.n_trials < 1:
            raise UserError(f"--n-trials must be at least 1, got {self.n_trials}")
        if self.n_trials is not None and self.n_trials > MAX_TRIALS:
            raise UserError(
                f"--n-trials {self.n_trials:,} is more than one command queues (at most {MAX_TRIALS:,}, about a minute "
                "of queueing); give a smaller budget and raise it later, or use --timeout to bound the run"
            )
        if self.timeout is not None and not self.timeout > 0:
            raise UserError(f"--timeout must be positive seconds, got {self.timeout:g}")
        if self.stop_after is not None and self.stop_after < 1:
            raise UserError(f"--stop-after must be at least 1 trial, got {self.stop_after}")
        if self.target is not None and not 0 < self.target <= 1:
            raise UserError(f"--target is a validation accuracy in (0, 1], e.g. 0.99, got {self.target:g}")
        check_threads(self.threads)


def new_settings(request: SearchRequest, profile: Profile) -> StudySettings:
    """Validate everything the user gave before anything is written to the storage."""
    request.check_counts()
    base = Space().with_overrides(profile.space, origin=f"profile {profile.name}")
    space = load_space_file(request.space_file, base)
    epochs = request.epochs if request.epochs is not None else profile.epochs
    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}")
    if request.max_params is not None and request.max_params < 1:
        raise UserError(f"--max-params must be a positive number of parameters, got {request.max_params}")
    objectives = parse_objectives(request.objectives)
    multi = len(objectives) > 1
    sampler = request.sampler or "tpe"
    pruner = request.pruner or ("mo-asha" if multi else DEFAULT_PRUNER)
    make_sampler(sampler, request.seed, multi)
    check_pruner(pruner, multi)
    pbt = population_of(request, profile, epochs, multi)
    if multi and (request.stop_after is not None or request.target is not None or request.terminator):
        raise UserError("--stop-after, --target and --terminator watch one objective; leave them out with --objectives accuracy,params")
    origin = f"space file {request.space_file} (on profile {profile.name})" if request.space_file else f"profile {profile.name}"
    check_networks(space, request.max_params, origin)  # last: it builds the smallest and largest network (imports torch)
    return StudySettings(
        profile=profile.name,
        space=space.to_dict(),
        objectives=objectives,
        epochs=epochs,
        data=profile.data,
        train_subset=profile.train_subset,
        epoch_images=profile.epoch_images,
        max_params=request.max_params,
        seed=request.seed,
        sampler=sampler,
        pruner="none" if pbt else pruner,
        stop_after=request.stop_after,
        target=request.target,
        terminator=request.terminator,
        warm_start=request.warm_start,
        pbt=pbt.to_dict() if pbt else None,
        baseline=profile.baseline if request.baseline is None else request.baseline,
        versions=library_versions(),
        command=request.command,
    )


def population_of(request: SearchRequest, profile: Profile, epochs: int, multi: bool) -> Pbt | None:
    """--pbt's population, checked; None without --pbt. PBT is refused where it cannot work, with the reason."""
    if not request.pbt:
        if request.population is not None or request.exploit_every is not None:
            raise UserError("--population and --exploit-every set up population-based training; add --pbt")
        return None
    if multi:
        raise UserError("--pbt ranks its members by validation accuracy alone; leave out --objectives accuracy,params")
    if request.pruner not in (None, "none"):
        raise UserError(
            f"--pbt stops no member early: its bottom quantile copies the top instead, so --pruner {request.pruner} would "
            "discard members it needs; leave out --pruner"
        )
    if request.n_trials is not None:
        raise UserError("--pbt's budget is its population times its generations (epochs / --exploit-every); leave out --n-trials")
    if request.stop_after is not None or request.terminator:
        raise UserError(
            "--stop-after and --terminator judge trials drawn one after another; a PBT trial is one member's segment, "
            "so they would stop a population mid-generation: leave them out (--target works)"
        )
    pbt = Pbt(request.population or profile.population, request.exploit_every or profile.exploit_every)
    pbt.check(epochs)
    return pbt


def pbt_budget(request: SearchRequest, stored: StudySettings | None, asked: StudySettings, view: BudgetView | None) -> int | None:
    """A PBT study's budget, one trial per member and generation, set once; None for other studies."""
    settings = stored or asked
    if not settings.pbt:
        return None
    pbt = Pbt.from_dict(settings.pbt)
    if stored is None:
        return pbt.budget(settings.epochs)
    if request.n_trials is not None:
        raise UserError(f"study {request.study!r} is population-based: its budget is {stored.n_trials} trials; leave out --n-trials")
    assert view is not None and stored.n_trials is not None
    if view.finished >= stored.n_trials:
        raise UserError(
            f"study {request.study!r} is done: its {pbt.population} members trained their {pbt.generations(stored.epochs)} "
            "generations; start another study (--study NAME) to search again"
        )
    return stored.n_trials


def search_budget(request: SearchRequest, profile: Profile, asked: StudySettings):
    """The budget rule of `search` (see the module docstring)."""

    def budget(stored: StudySettings | None, view: BudgetView | None) -> int:
        population = pbt_budget(request, stored, asked, view)
        if population is not None:
            return population
        if stored is None:
            return request.n_trials or profile.n_trials
        assert view is not None
        taken = view.finished + view.in_flight if stored.n_trials is None else max(stored.n_trials, view.finished)
        if request.n_trials is not None:
            return taken + request.n_trials
        if stored.n_trials is not None and view.finished < stored.n_trials:
            return stored.n_trials
        return taken + get_profile(stored.profile, False).n_trials

    return budget


def create_budget(request: SearchRequest, profile: Profile, asked: StudySettings):
    """The budget rule of `study create`: set it once, raise it later, never lower it; options must agree."""

    def budget(stored: StudySettings | None, view: BudgetView | None) -> int:
        if stored is not None:
            check_same_study(request, stored, asked)
        population = pbt_budget(request, stored, asked, view)
        if population is not None:
            return population
        if stored is None:
            return request.n_trials or profile.n_trials
        if request.n_trials is None:
            if stored.n_trials is None:
                raise UserError(f"study {request.study!r} has no trial budget yet (an older mnist-hpo made it); pass --n-trials N")
            return stored.n_trials
        if stored.n_trials is not None and request.n_trials < stored.n_trials:
            raise UserError(
                f"study {request.study!r} already has a budget of {stored.n_trials} trials; a budget can be raised, not lowered"
            )
        assert view is not None
        return max(request.n_trials, view.finished)

    return budget


#: What `search` on an existing study would otherwise ignore: the study keeps its own.
STUDY_DEFINING = ("profile", "epochs", "max_params", "space", "pbt", "baseline")


def check_same_study(request: SearchRequest, stored: StudySettings, asked: StudySettings, keys: tuple[str, ...] | None = None) -> None:
    """An existing study: every option given (of ``keys``, default all) must agree with what it recorded, never be ignored."""
    given = {
        "profile": request.profile,
        "epochs": request.epochs,
        "max_params": request.max_params,
        "seed": request.seed,
        "sampler": request.sampler,
        "pruner": request.pruner,
        "space": asked.space if request.space_file is not None else None,
        "pbt": asked.pbt if request.pbt else None,
        "baseline": request.baseline,
    }
    differ = [key for key, value in given.items() if value is not None and getattr(stored, key) != value and key in (keys or given)]
    if differ:
        shown = ", ".join(f"{key} {getattr(stored, key)!r}" if key not in ("space", "pbt") else f"another {key}" for key in differ)
        raise UserError(f"study {request.study!r} exists with {shown}; leave those options out to keep it, or use another --study name")


def resolve_profile(request: SearchRequest) -> Profile:
    """The profile asked for, or the default for this machine (paper with a GPU, quick without)."""
    has_gpu = False
    if request.profile is None and request.device != "cpu":
        import torch

        has_gpu = torch.cuda.is_available()
    return get_profile(request.profile, has_gpu)
