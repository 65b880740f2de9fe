"""Worker processes sharing a study on a real PostgreSQL server: the global budget, dead workers, lost connections.

A server restart in the middle of a study is in test_faults.py, with the other faults.

Every worker is a real `python -m mnist_hpo` process training the smoke profile's networks on the
bundled data with one CPU thread; faults are real (SIGKILL, `pg_ctl restart`). Heartbeats are fast
here (1 s, grace 3-4 s) so a dead trial is noticed in seconds.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from urllib.parse import urlsplit

import pytest
from dist_helpers import (
    CLI,
    FAST,
    TINY,
    assert_exact_budget,
    cli,
    cli_env,
    finish,
    ok,
    running_trial_past_epoch,
    start,
    trials_of,
    wait_for,
)
from optuna.trial import TrialState

pytestmark = pytest.mark.slow  # real studies or several processes: `-m 'not slow'` leaves it out


def test_four_worker_processes_finish_exactly_the_global_budget(pg_url, tmp_path):
    # --max-params prunes most networks before training: many quick trials, so the workers race for them.
    done = ok(
        cli(
            tmp_path,
            "search",
            "--workers",
            "4",
            "--n-trials",
            "16",
            "--profile",
            "smoke",
            "--epochs",
            "1",
            "--max-params",
            "20000",
            "--study",
            "four",
            "--storage",
            pg_url,
            "--seed",
            "0",
            *FAST,
        )
    )
    assert "started 4 worker processes" in done.stdout and "budget 16 trials: 16 finished" in done.stdout
    trials = trials_of(pg_url, "four")
    assert_exact_budget(trials, 16)
    assert len(trials) == 16, "no trial failed, so no trial beyond the budget was created"
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) >= 2, workers  # the trials really were shared out
    assert sum(1 for t in trials if t.user_attrs.get("published_baseline")) == 1
    assert "postgres:" not in done.stdout.replace("postgres:***", ""), "the password must be masked"

    status = ok(cli(tmp_path, "status", "--study", "four", "--storage", pg_url))
    assert "budget 16 trials: 16 finished" in status.stdout
    the_suggested_commands_run_as_printed(done.stdout, pg_url, tmp_path)


def the_suggested_commands_run_as_printed(stdout: str, pg_url: str, folder) -> None:
    """Each "next:" command, pasted into a shell where the user set PGPASSWORD, runs; none holds the password or ***."""
    password = urlsplit(pg_url).password
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("next:"))
    assert "PGPASSWORD" in lines[start], lines[start]  # says how to supply the password it leaves out
    commands = [line.strip() for line in lines[start + 1 :] if line.startswith("  mnist-hpo ")]
    assert [c.split()[1] for c in commands] == ["status", "best", "export", "dashboard"], stdout
    for command in commands:
        assert password not in command and "***" not in command and "--storage" in command, command
        if command.split()[1] == "dashboard":
            continue  # serves until stopped; its storage option is the one the others ran with
        done = subprocess.run(
            ["bash", "-c", command.replace("mnist-hpo", shlex.join(CLI), 1)],
            cwd=folder,
            env=cli_env(PGPASSWORD=password),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)


def test_a_killed_worker_s_trial_is_retried_from_its_checkpoint_and_the_budget_still_holds(pg_url, tmp_path):
    ok(
        cli(
            tmp_path,
            "study",
            "create",
            "--storage",
            pg_url,
            "--study",
            "kill",
            *TINY,
            "--n-trials",
            "2",
            "--epochs",
            "5",
            "--pruner",
            "none",
        )
    )
    workers = [
        start(tmp_path, "worker", "--storage", pg_url, "--study", "kill", "--seed", str(i), *FAST, log=f"w{i}.log") for i in range(2)
    ]
    try:
        victim = wait_for(lambda: running_trial_past_epoch(pg_url, "kill"), "a trial past its first epoch", processes=workers)
        pid = int(victim.user_attrs["worker"].rsplit(":", 1)[1])
        assert pid in {w.pid for w in workers}
        os.kill(pid, signal.SIGKILL)
        codes = {w.pid: finish(w) for w in workers}
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    assert codes[pid] == -signal.SIGKILL
    assert [c for p, c in codes.items() if p != pid] == [0], (tmp_path / "w0.log").read_text() + (tmp_path / "w1.log").read_text()

    trials = trials_of(pg_url, "kill")
    assert_exact_budget(trials, 2)
    dead = next(t for t in trials if t.number == victim.number)
    assert dead.state == TrialState.FAIL
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert retry.system_attrs["retry_history"] == [victim.number]
    resumed = retry.user_attrs["resumed_from"]
    assert resumed["trial"] == victim.number and resumed["epoch"] >= 1
    assert min(retry.intermediate_values) == resumed["epoch"] + 1, "training went on after the checkpoint, not from epoch 1"
    assert retry.user_attrs["worker"] != victim.user_attrs["worker"]

    status = ok(cli(tmp_path, "status", "--study", "kill", "--storage", pg_url))
    assert f"retried: trial {victim.number} FAIL -> trial {retry.number} COMPLETE resumed after epoch {resumed['epoch']}" in status.stdout


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """`mnist-hpo ARGS` in this process (the console script's own entry point): exit status, stdout, stderr."""
    from mnist_hpo.cli import main

    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def test_bad_storage_input_is_one_clear_line(postgres, pg_url, tmp_path, capsys, monkeypatch):
    from pg_cluster import free_port

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MNIST_HPO_STORAGE", raising=False)
    unreachable = f"postgresql+psycopg://postgres:pw-unused@127.0.0.1:{free_port()}/hpo"
    code, out, err = run_main(capsys, "worker", "--storage", unreachable, "--study", "x")
    assert code == 2 and err.startswith("error: cannot connect to") and len(err.strip().splitlines()) == 1, err
    assert "pw-unused" not in err + out

    wrong = pg_url.replace(":pg-s3cret-Pw@", ":Wr0ngSecret@")
    code, out, err = run_main(capsys, "worker", "--storage", wrong, "--study", "x")
    assert code == 2 and "password authentication failed" in err, err
    assert "Wr0ngSecret" not in err + out and "***" in err

    code, out, err = run_main(capsys, "study", "create", "--storage", pg_url, "--study", "alpha", "--profile", "smoke", "--n-trials", "2")
    assert code == 0 and "created study 'alpha' with a budget of 2 trials" in out, err
    assert "pg-s3cret-Pw" not in out
    code, out, err = run_main(capsys, "study", "create", "--storage", pg_url, "--study", "alpha", "--profile", "smoke")
    assert code == 0 and "study 'alpha' exists: budget 2 trials" in out, "study create is idempotent (an init step may run twice)"
    code, out, err = run_main(capsys, "study", "create", "--storage", pg_url, "--study", "alpha", "--profile", "quick")
    assert code == 2 and "exists with profile 'smoke'" in err, err

    code, out, err = run_main(capsys, "worker", "--storage", pg_url, "--study", "beta")
    assert code == 2 and "no study 'beta'" in err and "existing studies: alpha" in err, err
    assert len(err.strip().splitlines()) == 1

    code, out, err = run_main(capsys, "storage", "upgrade", "--storage", pg_url)
    assert code == 0 and "schema already up to date" in out and "***" in out, err


def test_a_lost_connection_is_retried_with_backoff_then_fails_clearly(postgres, pg_url, capfd):
    import threading

    import optuna

    from mnist_hpo.errors import StorageUnavailable, UserError
    from mnist_hpo.storage import open_storage

    study = optuna.create_study(study_name="lost", storage=open_storage(pg_url, reconnect_s=60))
    postgres.pause()
    try:
        threading.Timer(2.0, postgres.resume).start()  # the server comes back while the call is retrying
        assert study.get_trials() == []  # waited for it, then answered
    finally:
        if not (postgres.data / "postmaster.pid").exists():
            postgres.resume()
    err = capfd.readouterr().err
    assert "lost the connection to postgresql+psycopg://postgres:***@" in err and "reconnected" in err, err

    short = optuna.load_study(study_name="lost", storage=open_storage(pg_url, reconnect_s=1.5))
    postgres.pause()
    try:
        with pytest.raises(StorageUnavailable) as lost:
            short.get_trials()
    finally:
        postgres.resume()
    message = str(lost.value)
    assert isinstance(lost.value, UserError)  # the CLI prints it as one line and exits with status 2
    assert "could not reconnect within 2 s" in message and "***" in message and "pg-s3cret-Pw" not in message, message
    assert short.get_trials() == [], "the storage works again once the server is back"
