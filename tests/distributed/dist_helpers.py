"""Helpers of the distributed tests: run `mnist-hpo` processes, wait on a study's state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from outside import wait_for  # noqa: F401 - the distributed tests import it from here

CLI = [sys.executable, "-m", "mnist_hpo"]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MNIST_HPO_STORAGE", "CUDA_VISIBLE_DEVICES")}
    env["OMP_NUM_THREADS"] = "1"
    env["COLUMNS"] = "250"
    env.update(extra)
    return env


def cli(tmp_path: Path, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run `mnist-hpo ARGS` to the end in `tmp_path`."""
    return subprocess.run(
        [*CLI, *args], cwd=tmp_path, env=cli_env(**env), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def start(tmp_path: Path, *args: str, log: str, inside: tuple[str, ...] = (), **env: str) -> subprocess.Popen:
    """Start `mnist-hpo ARGS` in the background, its output going to tmp_path/log (``inside``: a command prefix, e.g. `ip netns exec NS`)."""
    out = open(tmp_path / log, "w")
    return subprocess.Popen(
        [*inside, *CLI, *args], cwd=tmp_path, env=cli_env(**env), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


def finish(process: subprocess.Popen, timeout: float = 240) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    return done


def running_trial_past_epoch(url: str, study: str, epochs: int = 1):
    """A RUNNING trial that has reported at least `epochs` epochs (so its checkpoint exists), or None."""
    from mnist_hpo import storage

    try:
        trials = optuna.load_study(study_name=study, storage=storage.open_storage(url)).get_trials(deepcopy=False)
    except Exception:  # not created yet, or a journal file still being written
        return None
    for trial in trials:
        if trial.state == optuna.trial.TrialState.RUNNING and len(trial.intermediate_values) >= epochs and "worker" in trial.user_attrs:
            return trial
    return None


def trials_of(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    from mnist_hpo import storage

    return optuna.load_study(study_name=study, storage=storage.open_storage(url)).get_trials(deepcopy=False)


def assert_exact_budget(trials: list[optuna.trial.FrozenTrial], budget: int) -> None:
    """Exactly `budget` finished trials (COMPLETE + PRUNED), none left RUNNING or WAITING, numbers 0..n-1 once each."""
    TrialState = optuna.trial.TrialState
    states = [t.state for t in trials]
    finished = sum(1 for s in states if s in (TrialState.COMPLETE, TrialState.PRUNED))
    assert finished == budget, states
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, states
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(numbers))), numbers


FAST = ["--heartbeat-interval", "1", "--grace-period", "4"]
TINY = ["--profile", "smoke", "--space", str(Path(__file__).with_name("tiny_space.toml"))]  # ~1 s epochs on one thread
