"""Optuna's own storage tests, run against the storages mnist-hpo's open_storage returns.

"Behaves in every respect as Optuna's own storage of that kind" is checked by Optuna's test suite
itself: tests/storages_tests/test_storages.py and test_heartbeat.py from the sdist of the installed
Optuna (fetched from PyPI once, then cached), with their "sqlite" storage replaced by ours
(conformance_plugin.py), once on SQLite and once on the session's PostgreSQL server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import optuna
import pytest

from mnist_hpo import data

HERE = Path(__file__).resolve().parent
SUITES = ("tests/storages_tests/test_storages.py", "tests/storages_tests/test_heartbeat.py")


@pytest.fixture(scope="session")
def optuna_tests() -> Path:
    """The unpacked sdist of the installed Optuna (its tests are not in the wheel)."""
    cache = data.default_root().parent / f"optuna-{optuna.__version__}-sdist"
    tests = cache / f"optuna-{optuna.__version__}"
    if (tests / SUITES[0]).is_file():
        return tests
    cache.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"optuna=={optuna.__version__}",
            "--no-binary",
            ":all:",
            "--no-deps",
            "-q",
            "-d",
            str(cache),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    archive = cache / f"optuna-{optuna.__version__}.tar.gz"
    if done.returncode != 0 or not archive.is_file():
        pytest.fail(f"could not download Optuna's sdist from PyPI: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    with tarfile.open(archive) as sdist:
        sdist.extractall(cache, filter="data")
    return tests


def run_suite(tests: Path, mode: str, tmp_path: Path, admin_url: str = "") -> tuple[subprocess.Popen, Path]:
    count = tmp_path / f"{mode}-storages.txt"
    env = {
        **os.environ,
        "MNIST_HPO_CONFORMANCE": mode,
        "MNIST_HPO_CONFORMANCE_PG": admin_url,
        "MNIST_HPO_CONFORMANCE_COUNT": str(count),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "conformance_plugin",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "-k",
        "sqlite and not cached",
        *SUITES,
    ]
    log = open(tmp_path / f"{mode}.log", "w")
    return subprocess.Popen(command, cwd=tests, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL), count


def test_optunas_storage_tests_pass_on_our_sqlite_and_postgresql_storages(optuna_tests, postgres, tmp_path):
    admin = postgres.create_database("conformance_admin")
    runs = {mode: run_suite(optuna_tests, mode, tmp_path, admin) for mode in ("sqlite", "postgresql")}
    for mode, (process, count) in runs.items():
        assert process.wait(timeout=900) == 0, (tmp_path / f"{mode}.log").read_text()[-4000:]
        log = (tmp_path / f"{mode}.log").read_text()
        assert " passed" in log and " failed" not in log, log[-2000:]
        handed_out = count.read_text().split() if count.exists() else []
        assert len(handed_out) >= 20 and set(handed_out) == {"RDBStorage"}, f"{mode}: {len(handed_out)} storages of ours used"
