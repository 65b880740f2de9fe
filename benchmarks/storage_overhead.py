"""Storage overhead per trial: the worker loop with a trivial objective, 1 and 8 processes, four storages.

Each configuration creates a study with a global budget, starts K processes that run the real
worker loop (mnist_hpo.tuning.Worker, the one trial engine: take a waiting trial, heartbeat, run, tell, check the
budget, look for dead workers) on an objective that does no work but talks to the storage like a
trial does (3 parameters, 3 reported epochs with pruning checks, a user attribute), and measures:

  ms/trial overall      from the common start to the last trial's completion, divided by the trials:
                        throughput, all workers together (the objective itself takes ~0 ms)
  ms per trial, median  one trial from being taken to being told (its own start and complete times):
                        the latency storage adds to every trial; with more processes than cores it
                        includes waiting for a core
  errors                trials that failed, runs thrown away because two workers had taken the same trial,
                        and workers that crashed (database locked, lost connections...)

Storages: SQLite (WAL, 60 s busy timeout; `search --workers K` refuses it for K > 1, this shows why
or why not), a journal file, PostgreSQL (a throwaway local server, as in the tests) and the gRPC
proxy (`mnist-hpo storage-proxy`) in front of that PostgreSQL. Sampler: random, so that the sampler's
own cost does not count as storage.

    python -m benchmarks.storage_overhead [--trials-per-worker 20] [--workers 1,8] [--storages sqlite,journal,postgresql,grpc]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway PostgreSQL server of the tests (tests/pg_cluster.py)

HEARTBEAT_S, GRACE_S = 10, 60  # the defaults: one synchronous heartbeat per trial, the thread's rarely


def objective(trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.suggest_int("layers", 1, 8)
    trial.suggest_categorical("optimizer", ["adam", "sgd"])
    for epoch in range(1, 4):
        trial.report(x * epoch, epoch)
        trial.should_prune()
    trial.set_user_attr("epochs_run", 3)
    return x


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")


def child(url: str, study_name: str, ready, start_at, results) -> None:
    """One worker process: open the storage, wait for the common start, run the worker loop to the budget."""
    _quiet()
    import optuna

    from mnist_hpo.tuning import Faults, Worker, WorkerSpec, open_for_workers

    faults = Faults(HEARTBEAT_S, GRACE_S, 3).validated()
    rdb = open_for_workers(url, faults)
    study = optuna.load_study(
        study_name=study_name, storage=rdb, sampler=optuna.samplers.RandomSampler(seed=os.getpid()), pruner=optuna.pruners.NopPruner()
    )
    study.get_trials(deepcopy=False)  # warm the connection and the cache outside the timing
    ready.put(os.getpid())
    while start_at.value == 0:
        time.sleep(0.005)
    while time.time() < start_at.value:
        time.sleep(0.001)
    started = time.perf_counter()
    worker = Worker(study, rdb, objective, WorkerSpec(faults))
    error = ""
    try:
        worker.run()
    except BaseException as exc:
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    results.put(
        {
            "pid": os.getpid(),
            "seconds": time.perf_counter() - started,
            "ran": worker.report.ran,
            "failed": worker.report.failed,
            "dropped": worker.report.refused,
            "error": error,
        }
    )


def measure(url: str, workers: int, trials: int, label: str, create_url: str | None = None) -> dict:
    """``create_url``: where the budget is set (the SQL database behind a gRPC proxy); default ``url``."""
    _quiet()
    import optuna

    from mnist_hpo import storage
    from mnist_hpo.tuning import SearchRequest, budget_view, ensure_budget_study, get_profile, new_settings

    name = f"overhead-{label}-{workers}"
    settings = new_settings(SearchRequest(profile="smoke"), get_profile("smoke", False))
    ensure_budget_study(storage.open_storage(create_url or url), name, settings, budget=lambda stored, view: trials)
    rdb = storage.open_storage(url)
    study = optuna.load_study(study_name=name, storage=rdb)
    context = mp.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    start_at = context.Value("d", 0.0)
    processes = [context.Process(target=child, args=(url, name, ready, start_at, results)) for _ in range(workers)]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=300)
    start_at.value = time.time() + 0.5
    outcomes = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    view = budget_view(rdb, rdb.get_study_id_from_name(name), trials)
    done = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete and t.datetime_start]
    wall = max(t.datetime_complete.timestamp() for t in done) - start_at.value
    latency = statistics.median((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    errors = sum(o["failed"] + o["dropped"] for o in outcomes) + sum(1 for o in outcomes if o["error"])
    return {
        "storage": label,
        "workers": workers,
        "trials": view.finished,
        "exact": view.finished == trials and view.in_flight == 0,
        "ms_per_trial_median": 1000 * latency,
        "ms_per_trial_overall": 1000 * wall / max(1, view.finished),
        "errors": errors,
        "error_examples": sorted({o["error"] for o in outcomes if o["error"]}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials-per-worker", type=int, default=20)
    parser.add_argument("--workers", default="1,8")
    parser.add_argument("--storages", default="sqlite,journal,postgresql,grpc")
    args = parser.parse_args()
    worker_counts = [int(k) for k in args.workers.split(",")]
    chosen = args.storages.split(",")

    from pg_cluster import PostgresCluster, free_port

    from benchmarks.machine import describe

    tmp = Path(tempfile.mkdtemp(prefix="storage-overhead-"))
    cluster = proxy = None
    rows = []
    try:
        if "postgresql" in chosen or "grpc" in chosen:
            cluster = PostgresCluster().start()
        for storage_name in chosen:
            for workers in worker_counts:
                trials = args.trials_per_worker * workers
                if storage_name == "sqlite":
                    url = f"sqlite:///{tmp}/k{workers}.db"
                elif storage_name == "journal":
                    url = f"journal:{tmp}/k{workers}.log"
                elif storage_name == "postgresql":
                    url = cluster.create_database(f"pg_k{workers}")
                else:
                    database = cluster.create_database(f"grpc_k{workers}")
                    port = free_port()
                    proxy = subprocess.Popen(
                        [sys.executable, "-m", "mnist_hpo", "storage-proxy", "--storage", database, "--port", str(port)],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                    assert "serving" in proxy.stdout.readline()
                    url = f"grpc://127.0.0.1:{port}"
                row = measure(url, workers, trials, storage_name, create_url=database if storage_name == "grpc" else None)
                if proxy is not None:
                    proxy.terminate()
                    proxy.wait(timeout=60)
                    proxy = None
                rows.append(row)
                print(
                    f"{row['storage']:<10} {workers} workers: {row['trials']} trials (exact: {row['exact']}), "
                    f"{row['ms_per_trial_overall']:.1f} ms/trial overall, median trial {row['ms_per_trial_median']:.1f} ms, "
                    f"{row['errors']} errors {row['error_examples'] or ''}",
                    flush=True,
                )
    finally:
        if proxy is not None:
            proxy.kill()
        if cluster is not None:
            cluster.stop()

    print()
    print(
        f"Machine: {describe()}; trivial objective, {args.trials_per_worker} trials per worker, heartbeat {HEARTBEAT_S} s, random sampler."
    )
    print()
    print("| storage | workers | trials (exact budget) | ms/trial overall | ms per trial, median (take to tell) | errors |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for row in rows:
        exact = "yes" if row["exact"] else "**no**"
        print(
            f"| {row['storage']} | {row['workers']} | {row['trials']} ({exact}) | {row['ms_per_trial_overall']:.1f} | {row['ms_per_trial_median']:.1f} | {row['errors']} |"
        )


if __name__ == "__main__":
    main()
