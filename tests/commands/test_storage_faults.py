"""The disk under an SQLite study fills while `mnist-hpo search` trains: one line, and no trial left RUNNING for long.

The study database lives on a 2 MiB tmpfs the test mounts (as root) and fills to the last block
while a trial trains; the artifacts stay on the ordinary disk, so only the database fails. The
search must stop with exit status 2 and one `error: ` line that says where its trial stands, and
the very next `mnist-hpo search` on this machine must re-queue that trial at once: it runs with a
grace period of an hour, so the stale-heartbeat check cannot be what re-queues it.
"""

from __future__ import annotations

import contextlib
import errno
import re
import shlex
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from outside import (
    TINY_SPACE,
    assert_exact_budget,
    finish,
    ok,
    run,
    running_past_epoch,
    shown,
    start,
    stop_all,
    trials_of,
    wait_for,
    worker_pid,
)

pytestmark = pytest.mark.slow
TrialState = optuna.trial.TrialState
TINY = ["--profile", "smoke", "--space", str(TINY_SPACE), "--pruner", "none", "--seed", "0"]
HOUR_GRACE = ["--heartbeat-interval", "1", "--grace-period", "3600"]  # a stale heartbeat re-queues nothing in this test


@contextlib.contextmanager
def small_disk(where: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the block; unmounted after it, whatever happens."""
    where.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no `mount` command here: a full disk needs a small filesystem of its own")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); run as root: a full disk needs a filesystem of its own")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the filesystem has no block left (ENOSPC); returns the filler."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    assert shutil.disk_usage(disk).free < 4096 * 2
    return filler


def integrity(db: Path) -> str:
    connection = sqlite3.connect(db)
    try:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        connection.close()


def in_budget(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Finished + waiting + running: what the budget counts."""
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)
    return sum(1 for t in trials if t.state in counted)


def test_a_disk_filling_under_a_trial_is_one_line_and_the_next_search_requeues_the_trial_at_once(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        db = disk / "study.db"
        url = f"sqlite:///{db}"
        search = ["search", "--study", "d", "--storage", url, *TINY, "--n-trials", "2", "--epochs", "3"]
        process = start(tmp_path, *search, "--heartbeat-interval", "1", "--grace-period", "4", log="search.log")
        try:
            trial = wait_for(lambda: running_past_epoch(url, "d"), "a trial past its first epoch", processes=(process,))
            filler = fill(disk)  # two epochs still to record: the trial's next write meets the full disk
            code = finish(process)
        finally:
            stop_all(process)
        out = (tmp_path / "search.log").read_text(errors="replace")
        errors = [line for line in out.splitlines() if line.startswith("error: ")]
        assert code == 2 and len(errors) == 1 and "Traceback" not in out, out[-6000:]
        line = errors[0]
        assert "the disk under the study database is full" in line, line
        assert "the same command" not in line, "`search --n-trials 2` again would add 2 more trials"
        # The disk was still full, so the worker could not fail and re-queue its trial: the line says who will.
        assert f"trial {trial.number} stays RUNNING" in line and "on this machine re-queues it at once" in line, line
        said = re.search(r"the next `mnist-hpo ([^`]+)` on this machine", line)
        assert said and said.group(1).startswith("search --study d --storage "), line

        filler.unlink()  # the user frees some space
        assert integrity(db) == "ok"
        trials = trials_of(url, "d")
        running = [t for t in trials if t.state == TrialState.RUNNING]
        assert [t.number for t in running] == [trial.number] and worker_pid(running[0]) == process.pid, trials
        assert in_budget(trials) == 2, [(t.number, t.state.name) for t in trials]

        # The command the line names, as printed; --timeout bounds the wait should the trial never be re-queued.
        done = run(tmp_path, *shlex.split(said.group(1)), *HOUR_GRACE, "--timeout", "120")
        ok(done)
        assert integrity(db) == "ok"
        trials = trials_of(url, "d")
    assert_exact_budget(trials, 2)
    dead = next(t for t in trials if t.number == trial.number)
    assert dead.state == TrialState.FAIL and "ended without finishing it" in dead.user_attrs.get("fail_reason", ""), shown(done)
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == trial.number)
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params, "re-queued with its parameters, counted as a retry"
    assert retry.user_attrs["retry_history"] == [trial.number]
