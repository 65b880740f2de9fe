"""MLflow tracking against a real `mlflow server` on loopback (SQLite backend), read back with MlflowClient.

The public objective with optuna-integration's MLflowCallback in `study.optimize`; `mnist-hpo search
--mlflow` in one process and with --workers (behind a proxy asking for the URI's password, which must
then show up nowhere); and --mlflow where mlflow does not import: one line, exit 2, nothing written.

Time: the server takes ~20 s to answer, so it boots while the first test runs, and the two searches
run beside the in-process study (the module's tests share one xdist worker: tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
from mlflow_server import AuthProxy, MlflowServer, mlflow_server_command
from outside import TINY_SPACE, cli_env, error_line, finish, run, sqlite_url, start, stop_all, trials_of

ONE_EPOCH = ["--profile", "smoke", "--space", str(TINY_SPACE), "--epochs", "1", "--n-trials", "2", "--threads", "1"]
SECRET = "pw-4sh9Qz7v"


@pytest.fixture(scope="module", autouse=True)
def booting(tmp_path_factory) -> MlflowServer | None:
    """The module's server, started before its first test (it needs no server) and stopped after its last."""
    if mlflow_server_command() is None:
        yield None
        return
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).launch()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_server(booting: MlflowServer | None) -> MlflowServer:
    if booting is None:  # a failure in CI (tests/conftest.py), where .ci/run installs the extra
        pytest.skip("mlflow is not installed (pip install -e '.[mlflow]'): these tests need a real MLflow tracking server")
    return booting.wait()


@dataclass
class Searches:
    """`mnist-hpo search --mlflow` in one process, and with two workers behind the password-asking proxy."""

    single: Path
    workers: Path
    proxy: AuthProxy
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    showing: list[int] = field(default_factory=list)  # processes but the one it was typed to that showed the password

    def finished(self, name: str) -> str:
        """The search's exit status checked, its output."""
        process = self.processes[name]
        finish(process, timeout=300)
        printed = ((self.single if name == "single" else self.workers) / "out.log").read_text()
        assert process.returncode == 0 and "Traceback" not in printed, f"exit {process.returncode}:\n{printed[-6000:]}"
        return printed


@pytest.fixture(scope="module")
def searches(mlflow_server, tmp_path_factory) -> Searches:
    single, workers = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("workers")
    with AuthProxy(mlflow_server.port, "bob", SECRET) as proxy:
        found = Searches(single, workers, proxy)
        uri = f"http://bob:{SECRET}@127.0.0.1:{proxy.port}"
        journal = f"journal:{workers / 'study.log'}"
        found.processes["single"] = start(single, "search", *ONE_EPOCH, "--mlflow", mlflow_server.url, log="out.log")
        found.processes["workers"] = start(
            workers, "search", "--study", "workers", "--storage", journal, *ONE_EPOCH, "--workers", "2", "--mlflow", uri, log="out.log"
        )
        watcher = threading.Thread(target=_watch_command_lines, args=(found.processes["workers"], found.showing), daemon=True)
        watcher.start()
        try:
            yield found
        finally:  # a search a deselected test left running: SIGTERM stops its worker processes too
            for process in found.processes.values():
                if process.poll() is None:
                    process.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=60)
            stop_all(*found.processes.values())
            watcher.join(timeout=10)


def _watch_command_lines(process: subprocess.Popen, showing: list[int]) -> None:
    """Until ``process`` exits: every other process whose command line holds the password (`ps` shows them all)."""
    while process.poll() is None:
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and int(entry.name) != process.pid and SECRET.encode() in (entry / "cmdline").read_bytes():
                    showing.append(int(entry.name))
            except OSError:
                continue
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.3)


@pytest.fixture
def mlflow_env():
    """MLflow's global state in this process (the tracking URI it exports to os.environ), put back afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    import mlflow

    mlflow.set_tracking_uri(None)
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[key]
    os.environ.update(saved)


def runs_of(url: str, experiment: str) -> dict[int, object]:
    """The experiment's runs by trial number (their run name), read through MLflow's client."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id])
    by_number = {int(r.info.run_name): r for r in runs}
    assert len(by_number) == len(runs), [r.info.run_name for r in runs]
    return by_number


def assert_logged(url: str, experiment: str, trials: list[optuna.trial.FrozenTrial], history: bool) -> dict[int, object]:
    """One run per finished trial: its parameters, validation accuracy, number and state; with ``history``
    also the parameter count and the learning curve, epoch by epoch."""
    from mlflow.tracking import MlflowClient

    finished = [t for t in trials if t.state.is_finished()]
    runs = runs_of(url, experiment)
    assert sorted(runs) == sorted(t.number for t in finished), (sorted(runs), [(t.number, t.state.name) for t in trials])
    client = MlflowClient(tracking_uri=url)
    for trial in finished:
        run_ = runs[trial.number]
        assert run_.data.params, "a trial with no sampled parameters tests nothing"
        assert run_.data.params == {k: str(v) for k, v in trial.params.items()}, trial.number
        assert run_.data.metrics["validation_accuracy"] == pytest.approx(trial.value), trial.number
        assert run_.data.tags["number"] == str(trial.number)
        assert run_.data.tags["state"] == trial.state.name
        assert run_.data.tags["parameters"] == str(trial.user_attrs["parameters"])
        if history:
            assert run_.data.metrics["parameters"] == trial.user_attrs["parameters"]
            curve = trial.user_attrs["learning_curve"]
            logged = sorted((m.step, m.value) for m in client.get_metric_history(run_.info.run_id, "epoch_validation_accuracy"))
            assert [step for step, _ in logged] == [p["epoch"] for p in curve], trial.number
            assert [value for _, value in logged] == pytest.approx([p["val_accuracy"] for p in curve]), trial.number
            assert len(client.get_metric_history(run_.info.run_id, "epoch_train_loss")) == len(curve)
    return runs


def test_mlflow_without_the_extra_is_one_line_and_writes_nothing(tmp_path):
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "mlflow.py").write_text("raise ImportError(\"No module named 'mlflow'\")\n")
    work = tmp_path / "work"
    work.mkdir()
    env = cli_env(PYTHONPATH=os.pathsep.join(filter(None, [str(stub), os.environ.get("PYTHONPATH")])))
    done = run(work, "search", *ONE_EPOCH, "--mlflow", "http://127.0.0.1:9", env=env)
    error_line(done, "--mlflow", "pip install -e '.[mlflow]'")
    assert not list(work.iterdir()), "nothing is written before the error"
    # and nothing imports mlflow unless --mlflow is given: not the package, nor the modules that call it
    modules = "mnist_hpo, mnist_hpo.cli, mnist_hpo.commands.search, mnist_hpo.tuning.tracking, mnist_hpo.tuning._launcher"
    code = f"import sys, {modules}; print('mlflow' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert imported.stdout.strip() == "False", imported.stdout + imported.stderr


def test_the_public_objective_works_with_optunas_mlflow_callback(mlflow_server, searches, mlflow_env, tmp_path):
    # (`searches` only starts the two searches, to run beside this one)
    from optuna_integration import MLflowCallback

    from mnist_hpo.api import Objective

    objective = Objective("smoke", space=TINY_SPACE, epochs=1, artifacts=tmp_path / "artifacts")
    study = optuna.create_study(study_name="objective", directions=objective.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings():  # deprecated in optuna-integration 4.9 (moving to OptunaHub), still there until 6.0
        warnings.simplefilter("ignore", FutureWarning)
        callback = MLflowCallback(tracking_uri=mlflow_server.url, metric_name="validation_accuracy")
    study.optimize(objective, n_trials=2, callbacks=[callback])
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    runs = assert_logged(mlflow_server.url, "objective", study.trials, history=False)
    assert {r.data.tags["direction"] for r in runs.values()} == {"MAXIMIZE"}


def test_search_logs_every_trial_it_finishes(mlflow_server, searches):
    printed = searches.finished("single")
    assert f"logging finished trials to MLflow at {mlflow_server.url}, experiment 'mnist-smoke'" in printed, printed[-3000:]
    trials = trials_of(sqlite_url(searches.single), "mnist-smoke")
    assert len(trials) == 2
    assert_logged(mlflow_server.url, "mnist-smoke", trials, history=True)


def test_worker_processes_log_their_trials_and_the_password_stays_secret(mlflow_server, searches):
    printed = searches.finished("workers")
    proxy = searches.proxy
    assert not searches.showing, f"processes {sorted(set(searches.showing))} had the MLflow password on their command line"
    assert proxy.refused == 0 and proxy.passed > 0, (proxy.passed, proxy.refused)
    runs = assert_logged(mlflow_server.url, "workers", trials_of(f"journal:{searches.workers / 'study.log'}", "workers"), history=True)
    logs = [p.read_text() for p in sorted((searches.workers / "mnist-hpo-artifacts" / "worker-logs").glob("*.log"))]
    shown = f"logging finished trials to MLflow at http://bob:***@127.0.0.1:{proxy.port}"
    assert shown in printed and len(logs) == 2 and all(shown in log for log in logs), printed[-3000:]
    for run_ in runs.values():  # logged by a worker process, not by the command that started them
        assert any(f"worker {run_.data.tags['worker']} joined" in log for log in logs), run_.data.tags["worker"]
    files = [p for p in [*searches.workers.rglob("*"), mlflow_server.db] if p.is_file()]
    assert not [p for p in files if SECRET.encode() in p.read_bytes()] and SECRET not in printed
