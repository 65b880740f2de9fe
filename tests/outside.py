"""mnist-hpo as its users meet it: the console script in a fresh process, its files read back from outside.

New tests drive `mnist-hpo` the way a user does (the installed console script, in a working folder
of the test's own, with $MNIST_HPO_STORAGE unset) and inspect what it leaves through public
interfaces only: Optuna's API on the storage URL (optuna.load_study, FrozenTrial fields),
`torch.load(weights_only=True)` for checkpoints, sqlite3 for the raw database.
Nothing here imports mnist_hpo, so the package can be restructured underneath these tests.

Each `mnist-hpo` process costs ~3 CPU-seconds of imports (torch): tests share their studies
(one per module or session, copied per test) and keep their cases to the point.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

_SCRIPT = Path(sys.executable).with_name("mnist-hpo")
#: The console script `pip install -e .` put next to this Python; `python -m mnist_hpo` where there is none.
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "mnist_hpo"]
REPO = Path(__file__).resolve().parent.parent
FIXTURE_NPZ = REPO / "mnist_hpo" / "fixtures" / "mnist-subset.npz"
TINY_SPACE = Path(__file__).resolve().parent / "distributed" / "tiny_space.toml"  # ~1 s epochs on one thread
FAST = ["--heartbeat-interval", "1", "--grace-period", "4"]  # a dead trial is noticed within seconds


def cli_env(**extra: str) -> dict[str, str]:
    """The user's environment without a storage or MLflow server of its own; one CPU thread (small nets, small shared CPU)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MNIST_HPO_STORAGE", "MNIST_HPO_MLFLOW")}
    env["OMP_NUM_THREADS"] = "1"
    env["COLUMNS"] = "250"  # rich wraps long lines at the terminal width
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(cwd: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None, **extra: str) -> subprocess.CompletedProcess:
    """`mnist-hpo ARGS` in `cwd`, to its end."""
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env or cli_env(**extra), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def start(cwd: Path, *args: str, log: str, **extra: str) -> subprocess.Popen:
    """`mnist-hpo ARGS` in the background, its stdout and stderr going to cwd/log."""
    with open(cwd / log, "w") as out:
        return subprocess.Popen(
            [*CLI, *args], cwd=cwd, env=cli_env(**extra), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def finish(process: subprocess.Popen, timeout: float = 240) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def stop_all(*processes: subprocess.Popen) -> None:
    """Kill what a failed test left running (each by its own pid)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def shown(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}"


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, shown(done)
    assert "Traceback" not in done.stdout + done.stderr, shown(done)
    return done


def error_line(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """The one `error: ` line on stderr, after checking exit status 2 and that there is no traceback."""
    assert done.returncode == 2, shown(done)
    assert "Traceback" not in done.stderr + done.stdout, shown(done)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown(done)
    line = lines[0]
    assert line.startswith("error: ") and len(line) > len("error: ") + 10, shown(done)
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float = 180, every: float = 0.3, processes: tuple[subprocess.Popen, ...] = ()
) -> Any:
    """Poll `condition()` until it is truthy; fail at once if one of `processes` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"a process exited ({process.returncode}) while waiting for {what}")
        time.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------- studies and storages


def sqlite_url(folder: Path, db: str = "mnist-hpo.db") -> str:
    """The URL of a folder's study database (by default the one `mnist-hpo` makes in its working folder)."""
    return f"sqlite:///{folder / db}"


def storage_of(url: str) -> optuna.storages.BaseStorage | str:
    """What optuna.load_study takes for `url`: the URL itself, or a JournalStorage for journal:PATH."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return url


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage_of(url))


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return load(url, name).get_trials(deepcopy=False)


def settings_of(study: optuna.Study) -> dict[str, Any]:
    """What mnist-hpo recorded about a study (its documented "mnist_hpo" user attribute)."""
    return study.user_attrs["mnist_hpo"]


def running_past_epoch(url: str, name: str, epochs: int = 1) -> optuna.trial.FrozenTrial | None:
    """A RUNNING trial with at least `epochs` epochs reported (so its resume state exists), or None."""
    try:
        trials = trials_of(url, name)
    except Exception:  # not created yet, or a journal file still being written
        return None
    for trial in trials:
        if (
            trial.state == optuna.trial.TrialState.RUNNING
            and trial.user_attrs.get("epochs_run", 0) >= epochs
            and "worker" in trial.user_attrs
        ):
            return trial
    return None


def worker_pid(trial: optuna.trial.FrozenTrial) -> int:
    """The process running a trial, from its `worker` user attribute (HOST:PID)."""
    return int(trial.user_attrs["worker"].rsplit(":", 1)[1])


def assert_exact_budget(trials: list[optuna.trial.FrozenTrial], budget: int) -> None:
    """Exactly `budget` finished trials (COMPLETE + PRUNED), none left RUNNING or WAITING, numbers 0..n-1 once each."""
    TrialState = optuna.trial.TrialState
    states = [t.state for t in trials]
    finished = sum(1 for s in states if s in (TrialState.COMPLETE, TrialState.PRUNED))
    assert finished == budget, [(t.number, t.state.name) for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, [(t.number, t.state.name) for t in trials]
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(numbers))), numbers


def completed_by_validation(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Completed trials, best validation accuracy first (ties: lower number first), as the README promises."""
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return sorted(done, key=lambda t: (-t.values[0], t.number))


def sqlite_dump(db: Path) -> list[str]:
    """Every row of every table of an SQLite file (WAL included), as SQL: "unchanged" means this is equal."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def tree(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder` ({} if it does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_study(source: Path, target: Path, db: str = "mnist-hpo.db", artifacts: str = "mnist-hpo-artifacts") -> Path:
    """A test's own copy of a study: the database through SQLite's backup API (WAL included), and the artifacts."""
    with sqlite3.connect(source / db) as src, sqlite3.connect(target / db) as dst:
        src.backup(dst)
    if (source / artifacts).exists():
        shutil.copytree(source / artifacts, target / artifacts)
    return target


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """A folder that `make(folder)` fills once per test run, however many pytest-xdist workers ask for it.

    Under xdist the first worker to ask makes it, in the run's temporary folder that all workers share,
    while holding a lock; the others wait on the lock and then use it, and a failure is reported to each
    without making it again. Without xdist it is an ordinary temporary folder. Users must not write into
    it: a test that changes it works on a copy (copy_study).
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    import fcntl

    shared = tmp_path_factory.getbasetemp().parent / "made-once"  # the run's folder, above each worker's own
    shared.mkdir(exist_ok=True)
    folder, done, failed = shared / name, shared / f"{name}.done", shared / f"{name}.failed"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, also if this process dies
        if failed.exists():
            pytest.fail(f"making {name} failed in another xdist worker:\n{failed.read_text()}")
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker killed while making it left
            folder.mkdir()
            try:
                make(folder)
            except pytest.skip.Exception:
                raise  # each worker finds out for itself
            except BaseException as error:
                failed.write_text(f"{type(error).__name__}: {error}"[-6000:])
                raise
            done.touch()
    return folder


class Unchanged:
    """Remembers a working folder: its study database (every row) and every other file (by content).

    `check()` asserts nothing was added, removed or changed. The database is compared by its rows, not
    its bytes: merely opening an SQLite file in WAL mode may fold the -wal file into it.
    """

    def __init__(self, folder: Path, db: str = "mnist-hpo.db") -> None:
        self.folder, self.db = folder, folder / db
        self.rows = sqlite_dump(self.db)
        self.files = self._files()

    def _files(self) -> dict[str, str]:
        return {name: digest for name, digest in tree(self.folder).items() if not name.startswith(self.db.name)}

    def check(self, *written: str) -> None:
        """Nothing changed but the files named in `written` (paths relative to the folder), which must now exist."""
        assert sqlite_dump(self.db) == self.rows, "the study database changed"
        files = self._files()
        added, removed = sorted(files.keys() - self.files.keys()), sorted(self.files.keys() - files.keys())
        assert added == sorted(written) and not removed, f"files added {added} (expected {sorted(written)}), removed {removed}"
        changed = sorted(k for k in self.files if files[k] != self.files[k])
        assert not changed, f"files changed: {changed}"


# --------------------------------------------------------------------------------------------- data


def fixture_test_split() -> tuple[np.ndarray, np.ndarray]:
    """The bundled fixture's 1,000 real MNIST test images (uint8 N×28×28) and labels: the smoke profile's test split."""
    with np.load(FIXTURE_NPZ) as npz:
        return npz["test_images"], npz["test_labels"].astype(np.int64)


def write_kaggle_test_csv(path: Path, images: np.ndarray, newline: str = "\n", bom: bool = False) -> Path:
    rows = [",".join(f"pixel{i}" for i in range(784))]
    rows += [",".join(map(str, image.reshape(-1).tolist())) for image in images]
    text = ("\ufeff" if bom else "") + newline.join(rows) + newline
    path.write_bytes(text.encode())
    return path


def read_submission(path: Path) -> list[int]:
    """Labels of a Kaggle submission, checking its header and that ImageId counts from 1."""
    lines = path.read_text().splitlines()
    assert lines[0] == "ImageId,Label", lines[:2]
    rows = [tuple(map(int, line.split(","))) for line in lines[1:]]
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    return [r[1] for r in rows]
