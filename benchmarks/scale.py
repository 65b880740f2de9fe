"""Scale by simulation: N real worker processes on one PostgreSQL, directly and through the gRPC proxy.

Each worker is its own Python process running the real trial engine (mnist_hpo.tuning.Worker:
take a waiting trial, heartbeat, run, tell, check the budget, look for dead workers) on an
objective that trains nothing but talks to the storage as a trial does: the real search space's
parameters, the attributes a trial records before training, and per epoch the learning-curve
attributes, the report and the pruning check, with a short sleep standing in for the epoch. It
never imports torch (checked), which is what keeps a worker that does not train cheap.

Reported per N and per path (direct: postgresql://, proxy: grpc:// to `mnist-hpo storage-proxy`):
finished trials against the budget (exact?), errors (failed, refused trials, workers that crashed),
peak client connections in pg_stat_activity against max_connections (PostgreSQL's default 100),
ms per trial (wall time from the common start to the last trial, over the trials: all workers
together), client CPU per trial (user + system time of the workers' loops over the trials), and
memory per worker process (peak RSS). The server is a throwaway local PostgreSQL (tests/pg_cluster.py).

    python -m benchmarks.scale --workers 8,16,32,64 [--paths direct,proxy] [--trials-per-worker 4] [--max-connections 100]
                               [--pool 2,4]   (the workers' pool before it was cut to one connection)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway PostgreSQL server of the tests

HEARTBEAT_S, GRACE_S = 1, 30  # a heartbeat every second: more connection pressure than the 10 s default
EPOCHS, EPOCH_S = 3, 0.2
_SPACE = None


def objective(trial) -> float:
    """Talks to the storage like search.objective.Objective, with the training left out."""
    family, sampled = _load_space().sample(trial)
    for key, value in {
        "model_spec": {"name": "family", "config": family.to_dict()},
        "parameters": 10_000,
        "mult_adds": 1_000_000,
        "device": "cpu",
        "seed": trial.number,
        "train_config": sampled,
        "worker_note": "simulated",
    }.items():
        trial.set_user_attr(key, value)
    curve = []
    for epoch in range(1, EPOCHS + 1):
        time.sleep(EPOCH_S)
        accuracy = 0.9 + 0.01 * epoch
        curve.append({"epoch": epoch, "train_loss": 1.0 / epoch, "val_accuracy": accuracy})
        trial.set_user_attr("epochs_run", epoch)
        trial.set_user_attr("learning_curve", curve)
        trial.set_user_attr("images_per_s", 1000.0)
        trial.report(accuracy, epoch)
        trial.should_prune()
    trial.set_user_attr("best_epoch", EPOCHS)
    return accuracy


def _load_space():
    """The quick profile's search space (the real one), built once per process."""
    global _SPACE
    if _SPACE is None:
        from mnist_hpo.tuning import SearchRequest, Space, get_profile, new_settings

        _SPACE = Space.from_dict(new_settings(SearchRequest(profile="quick"), get_profile("quick", False)).space)
    return _SPACE


def child(study_name: str, folder: str) -> None:
    """One worker process: open the storage ($MNIST_HPO_STORAGE), say it is ready, wait for the common start, run the engine."""
    import optuna

    from mnist_hpo import storage
    from mnist_hpo.tuning import Faults, RetryDeadTrial, Worker, WorkerSpec, open_for_workers, quiet_optuna

    quiet_optuna()
    faults = Faults(HEARTBEAT_S, GRACE_S, 3).validated()
    error, worker, before = "", None, resource.getrusage(resource.RUSAGE_SELF)
    try:
        url, pool = os.environ["MNIST_HPO_STORAGE"], os.environ.get("SCALE_POOL")
        if pool:  # the same storage as open_for_workers, with another pool
            rdb = storage.open_storage(
                url,
                must_exist=True,
                heartbeat_interval=faults.heartbeat_interval,
                grace_period=faults.grace_period,
                stale_trial_callback=RetryDeadTrial(faults.max_retries),
                pool=tuple(map(int, pool.split(","))),
            )
        else:
            rdb = open_for_workers(url, faults)
        study = optuna.load_study(
            study_name=study_name, storage=rdb, sampler=optuna.samplers.RandomSampler(seed=os.getpid()), pruner=optuna.pruners.NopPruner()
        )
        _load_space()  # outside the timing, as a real worker builds its objective before it takes a trial
        Path(folder, f"ready-{os.getpid()}").touch()
        while not Path(folder, "start").exists():
            time.sleep(0.01)
        before = resource.getrusage(resource.RUSAGE_SELF)
        worker = Worker(study, rdb, objective, WorkerSpec(faults))
        worker.run()
    except BaseException as exc:  # counted and reported
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        Path(folder, f"ready-{os.getpid()}").touch()
    after = resource.getrusage(resource.RUSAGE_SELF)
    report = worker.report if worker is not None else None
    Path(folder, f"result-{os.getpid()}.json").write_text(
        json.dumps(
            {
                "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
                "rss_mib": peak_rss_mib(),
                "torch": "torch" in sys.modules,
                "error": error,
                "failed": report.failed if report else 0,
                "refused": report.refused if report else 0,
            }
        )
    )


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: ru_maxrss would count the forking parent's, kept across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class ConnectionWatch:
    """Samples the server's client connections (pg_stat_activity) every 100 ms; keeps the peak."""

    def __init__(self, cluster) -> None:
        import psycopg
        from pg_cluster import PASSWORD, SUPERUSER

        self.connection = psycopg.connect(
            host="127.0.0.1", port=cluster.port, user=SUPERUSER, password=PASSWORD, dbname="postgres", autocommit=True
        )
        self.peak = self.startup_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            (count,) = self.connection.execute("SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'").fetchone()
            self.peak = max(self.peak, count)

    def __enter__(self) -> ConnectionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.connection.close()


def run_workers(cluster, url: str, workers: int, trials: int, name: str, pool: str | None = None, create_url: str | None = None) -> dict:
    """Create the study (on ``create_url``, the database behind a proxy, if given), start ``workers`` processes together, wait for all."""
    import optuna

    from mnist_hpo import storage
    from mnist_hpo.tuning import SearchRequest, budget_view, ensure_budget_study, get_profile, new_settings

    settings = new_settings(SearchRequest(profile="quick"), get_profile("quick", False))
    ensure_budget_study(storage.open_storage(create_url or url), name, settings, budget=lambda stored, view: trials)
    rdb = storage.open_storage(url)
    study = optuna.load_study(study_name=name, storage=rdb)
    folder = Path(tempfile.mkdtemp(prefix=f"scale-{name}-"))
    env = {**os.environ, "MNIST_HPO_STORAGE": url, "OMP_NUM_THREADS": "1", **({"SCALE_POOL": pool} if pool else {})}
    with ConnectionWatch(cluster) as watch:
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks.scale", "--child", name, str(folder)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(workers)
        ]
        while len(list(folder.glob("ready-*"))) < workers and all(p.poll() is None for p in processes):
            time.sleep(0.05)
        watch.startup_peak, watch.peak = watch.peak, 0  # opening the storages, apart from running the trials
        started = time.time()
        (folder / "start").touch()
        stderr = [p.communicate(timeout=1200)[1] for p in processes]
    results = [json.loads(f.read_text()) for f in folder.glob("result-*.json")]
    crashed = [s.strip().splitlines()[-1][:200] for p, s in zip(processes, stderr, strict=True) if p.returncode != 0 and s.strip()]
    view = budget_view(rdb, rdb.get_study_id_from_name(name), trials)
    done = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete]
    wall = max(t.datetime_complete.timestamp() for t in done) - started if done else float("nan")
    errors = [r["error"] for r in results if r["error"]] + crashed[len([r for r in results if r["error"]]) :]
    return {
        "workers": workers,
        "budget": trials,
        "finished": view.finished,
        "exact": view.finished == trials and view.in_flight == 0,
        "errors": len(errors) + sum(r["failed"] + r["refused"] for r in results),
        "error_examples": sorted(set(errors))[:3],
        "peak": watch.peak,
        "startup_peak": watch.startup_peak,
        "ms_per_trial": 1000 * wall / max(1, view.finished),
        "cpu_ms_per_trial": 1000 * sum(r["cpu_s"] for r in results) / max(1, view.finished),
        "rss_mib": max((r["rss_mib"] for r in results), default=float("nan")),
        "torch": any(r["torch"] for r in results),
    }


def torch_cost() -> dict:
    """What importing torch would add to a worker that does not train: seconds and MiB (median of 3 fresh processes)."""
    code = (
        "import sys, time; t = time.perf_counter(); {imports}; from benchmarks.scale import peak_rss_mib; "
        "print(time.perf_counter() - t, peak_rss_mib(), 'torch' in sys.modules)"
    )
    worker = "from mnist_hpo.tuning import Worker, open_for_workers; import benchmarks.scale"
    figures = {}
    for label, imports in (("worker", worker), ("worker + torch", worker + "; import torch")):
        runs = [
            subprocess.run(
                [sys.executable, "-c", code.format(imports=imports)], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.split()
            for _ in range(3)
        ]
        runs.sort(key=lambda r: float(r[0]))
        seconds, rss, has_torch = runs[1]
        figures[label] = {"s": float(seconds), "rss_mib": float(rss), "torch": has_torch == "True"}
    return figures


def start_proxy(database_url: str) -> tuple[subprocess.Popen, str]:
    from pg_cluster import free_port

    port = free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "mnist_hpo", "storage-proxy", "--storage", database_url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    line = proxy.stdout.readline()
    assert "serving" in line, line
    return proxy, f"grpc://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="8,16,32,64")
    parser.add_argument("--paths", default="direct,proxy")
    parser.add_argument("--trials-per-worker", type=int, default=4)
    parser.add_argument("--max-connections", type=int, default=100)
    parser.add_argument("--pool", default=None, help="SIZE,OVERFLOW of each worker's connection pool (default: mnist-hpo's WORKER_POOL)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from pg_cluster import PostgresCluster

    from benchmarks.machine import describe
    from mnist_hpo import storage

    cluster = PostgresCluster(max_connections=args.max_connections).start()
    rows = []
    try:
        for path in args.paths.split(","):
            for workers in (int(k) for k in args.workers.split(",")):
                database = cluster.create_database(f"{path}_k{workers}")
                proxy, url = start_proxy(database) if path == "proxy" else (None, database)
                try:
                    row = {
                        "path": path,
                        "pool": args.pool or ",".join(map(str, storage.WORKER_POOL)),
                        **run_workers(
                            cluster, url, workers, args.trials_per_worker * workers, f"{path}-{workers}", args.pool, create_url=database
                        ),
                    }
                finally:
                    if proxy is not None:
                        proxy.terminate()
                        proxy.wait(timeout=60)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        cluster.stop()
    print_table(rows, torch_cost(), describe(), args)


def print_table(rows: list[dict], torch: dict, machine: str, args) -> None:
    print(
        f"\nMachine: {machine}; max_connections {args.max_connections}; {args.trials_per_worker} trials per worker, "
        f"{EPOCHS} simulated epochs of {EPOCH_S} s, heartbeat {HEARTBEAT_S} s, random sampler.\n"
    )
    print(
        "| path | worker pool | workers | finished / budget | errors | peak connections / max: start-up, trials | ms per trial (all workers) | client CPU ms per trial | RSS per worker | torch imported |"
    )
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        exact = "exact" if r["exact"] else "**not exact**"
        errors = f"{r['errors']}" + (f" ({'; '.join(r['error_examples'])})" if r["error_examples"] else "")
        print(
            f"| {r['path']} | {r['pool'] if r['path'] == 'direct' else 'proxy: 2,4'} | {r['workers']} | {r['finished']} / {r['budget']} ({exact}) | {errors} | {r.get('startup_peak', '?')}, {r['peak']} / {args.max_connections} | "
            f"{r['ms_per_trial']:.0f} | {r['cpu_ms_per_trial']:.0f} | {r['rss_mib']:.0f} MiB | {'yes' if r['torch'] else 'no'} |"
        )
    plain, heavy = torch["worker"], torch["worker + torch"]
    print(
        f"\nImporting a worker: {plain['s']:.2f} s, {plain['rss_mib']:.0f} MiB (torch imported: {plain['torch']}); "
        f"with torch: {heavy['s']:.2f} s, {heavy['rss_mib']:.0f} MiB."
    )


if __name__ == "__main__":
    main()
