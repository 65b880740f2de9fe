"""Dashboard API latency on a synthetic study of 10,000 trials (target: < 2 s for the study page).

The study page of optuna-dashboard loads ``GET /api/studies/<id>`` (every trial with its
parameters and intermediate values). The study is written straight into a SQLite file with
realistic trials (8 parameters, 3 epochs of intermediate values, a third of them pruned),
then the dashboard's WSGI app is served on a loopback port and the call is timed.

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
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from benchmarks.machine import describe
from mnist_hpo import storage


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
            name: (rng.choice(d.choices) if isinstance(d, CategoricalDistribution) else
                   (rng.randint(d.low // (d.step or 1), d.high // (d.step or 1)) * (d.step or 1) if isinstance(d, IntDistribution) else rng.uniform(d.low, d.high)))
            for name, d in distributions.items()
        }
        pruned = rng.random() < 0.33
        curve = {epoch: 0.9 + 0.03 * epoch + rng.random() * 0.02 for epoch in range(1, 2 if pruned else 4)}
        trials.append(create_trial(
            state=TrialState.PRUNED if pruned else TrialState.COMPLETE, value=None if pruned else max(curve.values()),
            params=params, distributions=distributions, intermediate_values=curve, user_attrs={"parameters": rng.randint(10_000, 2_000_000)},
        ))
    study.add_trials(trials)
    return study._study_id


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # keep the benchmark's output readable
        pass


def measure(n_trials: int, repeats: int) -> dict[str, float]:
    from optuna_dashboard import wsgi

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'synthetic.db'}"
        started = time.perf_counter()
        study_id = synthetic_study(url, n_trials)
        build = time.perf_counter() - started
        server = make_server("127.0.0.1", 0, wsgi(storage.open_storage(url)), handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"
        timings = {}
        try:
            for name, path in (("study list", "/api/studies"), ("study page", f"/api/studies/{study_id}?after=0")):
                seconds = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    with urllib.request.urlopen(base + path, timeout=120) as response:
                        response.read()
                    seconds.append(time.perf_counter() - started)
                timings[name] = statistics.median(seconds)
        finally:
            server.shutdown()
        timings["build"] = build
        return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    timings = measure(args.trials, args.repeats)
    print(f"machine: {describe()}")
    print(f"synthetic study of {args.trials:,} trials written in {timings['build']:.1f} s")
    for name in ("study list", "study page"):
        print(f"{name:<11} median of {args.repeats}: {timings[name]:.3f} s")


if __name__ == "__main__":
    main()
