"""``mnist_hpo.search``: the `mnist-hpo search` command as a function that returns the study."""

from __future__ import annotations

from pathlib import Path

from mnist_hpo.api._output import shown
from mnist_hpo.api._study import StudyResult, load
from mnist_hpo.commands.search import search as run_search
from mnist_hpo.tuning import SearchRequest


def search(
    study: str | None = None,
    *,
    storage: str | None = None,
    artifacts: str | Path | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    profile: str | None = None,
    space: str | Path | None = None,
    sampler: str | None = None,
    pruner: str | None = None,
    seed: int | None = None,
    device: str = "auto",
    epochs: int | None = None,
    max_params: int | None = None,
    objectives: str = "accuracy",
    stop_after: int | None = None,
    target: float | None = None,
    terminator: bool = False,
    warm_start: str | None = None,
    workers: int | None = None,
    gpus: str | None = None,
    trials_per_gpu: int | None = None,
    heartbeat_interval: int = 10,
    grace_period: int | None = None,
    max_retries: int = 3,
    threads: int | None = None,
    mlflow: str | None = None,
    pbt: bool = False,
    population: int | None = None,
    exploit_every: int | None = None,
    baseline: bool | None = None,
    progress: bool = False,
    command: str = "mnist_hpo.search() in Python",
) -> StudyResult:
    """Create or continue a study, run its trials to its budget, and return it; the options are `mnist-hpo search`'s.

    A new study's budget is ``n_trials`` finished trials (default: the profile's); on an existing
    study ``n_trials`` adds that many. ``storage`` is an Optuna storage URL (default: ``./mnist-hpo.db``
    or ``$MNIST_HPO_STORAGE``), ``artifacts`` a folder or ``s3://BUCKET/PREFIX`` (default
    ``./mnist-hpo-artifacts``), ``space`` a TOML space file. Nothing is printed unless ``progress``
    is true (then the bars and one line per trial, as on the command line). ``mlflow`` is an MLflow
    tracking URI that receives every finished trial as a run (needs the ``[mlflow]`` extra). ``pbt`` makes a new
    study population-based (``population`` members, an exploit step every ``exploit_every`` epochs; its budget
    is one trial per member and segment, and no timeout applies unless given). ``baseline``: a new study trains the
    published configuration first, as trial 0 (None: the profile's choice; the quick profile has none). ``command`` is recorded in
    the study as what made or continued it. Bad options raise ``mnist_hpo.UserError`` before anything
    is stored; Ctrl-C raises ``SearchInterrupted`` with the running trial re-queued. ``timeout`` bounds the
    whole call from its start (the README's budget section): no trial starts after it, and still waiting
    for the study's lock or its creator then raises ``UserError`` with nothing written.
    """
    request = SearchRequest(
        study=study,
        storage=storage,
        artifacts=artifacts,
        n_trials=n_trials,
        timeout=timeout,
        profile=profile,
        space_file=Path(space) if space is not None else None,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        device=device,
        epochs=epochs,
        max_params=max_params,
        objectives=objectives,
        stop_after=stop_after,
        target=target,
        terminator=terminator,
        warm_start=warm_start,
        workers=workers,
        gpus=gpus,
        trials_per_gpu=trials_per_gpu,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        max_retries=max_retries,
        threads=threads,
        mlflow=mlflow,
        pbt=pbt,
        population=population,
        exploit_every=exploit_every,
        baseline=baseline,
        command=command,
    )
    with shown(progress):
        done = run_search(request)
    return load(done.study_name, storage=storage, artifacts=artifacts)
