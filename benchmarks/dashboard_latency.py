"""Dashboard API latency on a synthetic study of 10,000 trials (target: < 2 s for the study page).

The study page of optuna-dashboard loads ``GET /api/studies/<id>?after=0`` (every trial with its
parameters and intermediate values), then polls ``?after=N`` for new trials. The study is written
straight into a SQLite file with realistic trials (8 parameters, 3 epochs of intermediate values,
a third of them pruned). Plain optuna-dashboard and ``mnist-hpo dashboard`` are served on loopback
in turn, each with a fresh in-memory cache, and timed on the same calls.

    python -m benchmarks.dashboard_latency [--trials 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from benchmarks.machine import describe
from mnist_hpo import storage
from mnist_hpo.dashboards.server import make_dashboard_server


def synthetic_study(url: str, n_trials: int) -> int:
    """A study shaped like a real search; returns its id."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="synthetic", storage=storage.open_storage(url), direction="maximize")
    distributions = {
        "lr": FloatDistribution(1e-4, 1e-2, log=True),
        "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
        "dropout_in": FloatDistribution(0.0, 0.5),
        "rotation": FloatDistribution(0.0, 25.0),
        "first_channels": IntDistribution(8, 64, step=8),
        "conv_layers_k3": IntDistribution(6, 13),
        "optimizer": CategoricalDistribution(("adam", "adamw", "sgd")),
        "batch_size": CategoricalDistribution((64, 120, 256)),
    }
    rng = random.Random(0)
    trials = []
    for _ in range(n_trials):
        params = {
            name: (
                rng.choice(d.choices)
                if isinstance(d, CategoricalDistribution)
                else (
                    rng.randint(d.low // (d.step or 1), d.high // (d.step or 1)) * (d.step or 1)
                    if isinstance(d, IntDistribution)
                    else rng.uniform(d.low, d.high)
                )
            )
            for name, d in distributions.items()
        }
        pruned = rng.random() < 0.33
        curve = {epoch: 0.9 + 0.03 * epoch + rng.random() * 0.02 for epoch in range(1, 2 if pruned else 4)}
        trials.append(
            create_trial(
                state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
                value=None if pruned else max(curve.values()),
                params=params,
                distributions=distributions,
                intermediate_values=curve,
                user_attrs={"parameters": rng.randint(10_000, 2_000_000)},
            )
        )
    study.add_trials(trials)
    return study._study_id


REFRESH_S = 11  # optuna-dashboard keeps a study's trials for 10 s once it has 500 or more


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # keep the benchmark's output readable
        pass


def _get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as response:
        response.read()
    return time.perf_counter() - started


def time_calls(server: WSGIServer, study_id: int, n_trials: int, repeats: int) -> dict[str, float]:
    """Seconds per call: the study list, the study page's first (cold) and later loads, a poll."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/api/studies"
    try:
        timings = {"study list": statistics.median(_get(base) for _ in range(repeats))}
        timings["study page, first load"] = _get(f"{base}/{study_id}?after=0")
        timings["study page, later loads"] = statistics.median(_get(f"{base}/{study_id}?after=0") for _ in range(repeats))
        timings["poll for new trials"] = statistics.median(_get(f"{base}/{study_id}?after={n_trials}") for _ in range(repeats))
        time.sleep(REFRESH_S)  # optuna-dashboard re-reads the trials from the storage after this
        timings["study page, trials re-read"] = _get(f"{base}/{study_id}?after=0")
    finally:
        server.shutdown()
        server.server_close()
    return timings


def measure(n_trials: int, repeats: int) -> tuple[float, float, dict[str, float], dict[str, float]]:
    """Build the study, then time plain optuna-dashboard and `mnist-hpo dashboard` on it, in that order.

    Plain comes first because ours patches optuna-dashboard's search-space cache for the process.
    Ours loads every study page once in the background when it starts (as `mnist-hpo dashboard`
    does); its first load is timed once that is done, and the warm-up's own time is returned too.
    """
    from optuna_dashboard import wsgi

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'synthetic.db'}"
        started = time.perf_counter()
        study_id = synthetic_study(url, n_trials)
        build = time.perf_counter() - started
        plain = make_server("127.0.0.1", 0, wsgi(storage.open_storage(url)), handler_class=_Quiet)
        plain_timings = time_calls(plain, study_id, n_trials, repeats)
        started = time.perf_counter()
        ours, _ = make_dashboard_server(url, artifacts=folder, port=0, warm_up=True)
        ours.warm_up.join()
        warm_up = time.perf_counter() - started
        return build, warm_up, plain_timings, time_calls(ours, study_id, n_trials, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    build, warm_up, plain, ours = measure(args.trials, args.repeats)
    print(f"machine: {describe()}")
    print(f"synthetic study of {args.trials:,} trials written in {build:.1f} s; later loads and polls: median of {args.repeats}")
    print(f"mnist-hpo dashboard loaded the study page in {warm_up:.2f} s in the background after starting, before its first load")
    print(f"{'call':<27} {'optuna-dashboard s':>18} {'mnist-hpo dashboard s':>21} {'ratio':>6}")
    for name in plain:
        print(f"{name:<27} {plain[name]:>18.3f} {ours[name]:>21.3f} {plain[name] / ours[name]:>5.2f}x")


if __name__ == "__main__":
    main()
