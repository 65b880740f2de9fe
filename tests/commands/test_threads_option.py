"""--threads and the default thread count through the real CLI, and OpenMP threads that wait asleep.

libgomp prints the settings it started with under OMP_DISPLAY_ENV=VERBOSE: GOMP_SPINCOUNT '0' is
OMP_WAIT_POLICY=PASSIVE taking effect (unset, libgomp spins 300,000 times at every barrier).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from outside import CLI, TINY_SPACE, cli_env, error_line, ok, run

needs_taskset = pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")

TRAIN = ["train", "--model", "tiny-cnn", "--epochs", "1", "--subset", "200", "--data", "fixture", "--device", "cpu"]


def env_without_threads(**extra: str) -> dict[str, str]:
    """The user's environment with no OMP_NUM_THREADS: mnist-hpo chooses."""
    env = cli_env(**extra)
    del env["OMP_NUM_THREADS"]
    return env


def pinned(cores: str, cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`taskset -c CORES mnist-hpo ARGS`: the process may use those cores only, whatever the machine has."""
    return subprocess.run(
        ["taskset", "-c", cores, *CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


@needs_taskset
def test_train_uses_the_cores_it_may_use_and_its_threads_wait_asleep(tmp_path):
    done = ok(pinned("0", tmp_path, *TRAIN, env=env_without_threads(OMP_DISPLAY_ENV="VERBOSE")))
    assert "training tiny-cnn (9,956 parameters) on cpu (1 thread) for 1 epoch" in done.stdout, done.stdout
    assert "GOMP_SPINCOUNT = '0'" in done.stderr, done.stderr[-2000:]  # OMP_WAIT_POLICY=PASSIVE reached libgomp


def test_threads_option_overrides_and_a_users_wait_policy_is_kept(tmp_path):
    env = cli_env(OMP_WAIT_POLICY="ACTIVE", OMP_DISPLAY_ENV="VERBOSE")  # OMP_NUM_THREADS=1 there: --threads wins
    done = ok(run(tmp_path, *TRAIN, "--threads", "2", env=env))
    assert "training tiny-cnn (9,956 parameters) on cpu (2 threads) for 1 epoch" in done.stdout, done.stdout
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize(
    "command",
    [
        TRAIN,
        ["search", "--profile", "smoke", "--n-trials", "1"],
        ["worker", "--study", "none"],
        ["predict", "--checkpoint", "model.pt", "digit.png"],
    ],
    ids=lambda command: command[0],
)
@pytest.mark.parametrize("threads", ["0", "-2"])
def test_threads_below_one_is_one_line_and_writes_nothing(tmp_path, command, threads):
    done = run(tmp_path, *command, "--threads", threads)
    error_line(done, f"--threads must be at least 1, got {threads}")
    assert list(os.listdir(tmp_path)) == []


@needs_taskset
@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to share between two workers")
def test_search_workers_share_the_cores_and_threads_is_per_worker(tmp_path):
    env = env_without_threads()
    cores = subprocess.run(
        ["taskset", "-c", "0,1", sys.executable, "-c", "from mnist_hpo.trainer import usable_cores; print(usable_cores())"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    each = max(1, int(cores.stdout) // 2)  # 1 unless a CPU quota says less than two cores
    storage = ["--storage", f"journal:{tmp_path / 'study.log'}"]
    # the tiny space for one epoch: each worker's trial trains about a second (this test is about the threads)
    tiny = ["--profile", "smoke", "--space", str(TINY_SPACE), "--epochs", "1"]
    search = ["search", "--study", "t", *tiny, "--n-trials", "2", "--device", "cpu", *storage]
    done = ok(pinned("0,1", tmp_path, *search, "--workers", "2", env=env))
    assert f"started 2 worker processes on the CPU, {each} thread{'s' if each > 1 else ''} each" in done.stdout, done.stdout
    logs = sorted((tmp_path / "mnist-hpo-artifacts" / "worker-logs").glob("t-worker-*.log"))
    assert len(logs) == 2 and all(f"on cpu, {each} CPU thread" in log.read_text() for log in logs)
    joined = ok(pinned("0,1", tmp_path, "worker", "--study", "t", *storage, "--device", "cpu", "--threads", "3", env=env))
    assert "on cpu, 3 CPU threads" in joined.stdout, joined.stdout
