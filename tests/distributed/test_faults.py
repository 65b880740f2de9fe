"""Faults as they happen to workers, from outside: SIGKILL (behind the gRPC proxy, and on a journal file
under `search --workers 2`), a death before the first heartbeat, exhausted retries, a lost resume state,
a gRPC proxy or PostgreSQL server going away, every worker of `search --workers K` dying, a full disk.

Every worker is a real `mnist-hpo` process (tests/outside.py) training a tiny fixed network on the
bundled data with one CPU thread; studies are read back through Optuna's public API. Heartbeats are
fast (1 s, grace 4 s unless the test needs a longer one), so a dead trial is noticed in seconds and
the tests mostly wait rather than compute.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from outside import (
    FAST,
    TINY_SPACE,
    assert_exact_budget,
    error_line,
    finish,
    kill,
    ok,
    run,
    running_past_epoch,
    start,
    stop_all,
    storage_of,
    trials_of,
    wait_for,
    worker_pid,
)
from pg_cluster import free_port

pytestmark = pytest.mark.slow
TrialState = optuna.trial.TrialState
TINY = ["--profile", "smoke", "--space", str(TINY_SPACE), "--pruner", "none"]


def create(folder: Path, url: str, study: str, budget: int, epochs: int) -> None:
    ok(run(folder, "study", "create", "--storage", url, "--study", study, *TINY, "--n-trials", str(budget), "--epochs", str(epochs)))


def logs(folder: Path, *names: str) -> str:
    return "".join(f"--- {name}\n{(folder / name).read_text(errors='replace')}" for name in names)


def kill_a_worker_mid_trial(folder: Path, url: str, study: str, watch: str | None = None) -> optuna.trial.FrozenTrial:
    """Two workers on `url`; SIGKILL the one whose trial is past its first epoch (seen in `watch`, default `url`).

    The survivor must finish the study.
    """
    workers = [start(folder, "worker", "--storage", url, "--study", study, "--seed", str(i), *FAST, log=f"w{i}.log") for i in range(2)]
    try:
        victim = wait_for(lambda: running_past_epoch(watch or url, study), "a trial past its first epoch", processes=tuple(workers))
        pid = worker_pid(victim)
        assert pid in {w.pid for w in workers}
        kill(pid)
        codes = {w.pid: finish(w) for w in workers}
    finally:
        stop_all(*workers)
    assert codes[pid] == -signal.SIGKILL
    assert [code for p, code in codes.items() if p != pid] == [0], logs(folder, "w0.log", "w1.log")
    return victim


def assert_retried_from_its_checkpoint(trials: list[optuna.trial.FrozenTrial], victim: optuna.trial.FrozenTrial) -> None:
    dead = next(t for t in trials if t.number == victim.number)
    assert dead.state == TrialState.FAIL
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert retry.user_attrs["retry_history"] == [victim.number]
    resumed = retry.user_attrs["resumed_from"]
    assert resumed["trial"] == victim.number and resumed["epoch"] >= 1
    assert min(retry.intermediate_values) == resumed["epoch"] + 1, "training went on after the checkpoint, not from epoch 1"
    assert retry.user_attrs["worker"] != victim.user_attrs["worker"]


# ------------------------------------------------------------------------------------------ SIGKILL


@pytest.fixture
def proxy(pg_url, tmp_path):
    """`mnist-hpo storage-proxy` in front of this test's PostgreSQL database: (grpc URL, port, process)."""
    pytest.importorskip("grpc", reason="the grpc extra (grpcio, protobuf) is not installed")
    port = free_port()
    process = start(tmp_path, "storage-proxy", "--storage", pg_url, "--port", str(port), log="proxy.log")
    wait_for(lambda: "serving" in (tmp_path / "proxy.log").read_text(), "the proxy to listen", processes=(process,))
    handle = {"process": process}  # a test that restarts the proxy puts the new process here
    yield f"grpc://127.0.0.1:{port}", port, handle
    running = handle["process"]
    if running.poll() is None:
        running.send_signal(signal.SIGTERM)
        try:
            running.wait(30)
        except subprocess.TimeoutExpired:
            stop_all(running)


def test_a_killed_worker_behind_the_grpc_proxy_is_retried_from_its_checkpoint(proxy, pg_url, tmp_path):
    url, _, _ = proxy
    create(tmp_path, pg_url, "kill", budget=2, epochs=5)  # budgets are set on the storage behind the proxy
    victim = kill_a_worker_mid_trial(tmp_path, url, "kill", watch=pg_url)
    trials = trials_of(pg_url, "kill")  # straight from PostgreSQL: the proxy wrote it all through
    assert_exact_budget(trials, 2)
    assert_retried_from_its_checkpoint(trials, victim)


# ---------------------------------------------------------------------- dead before the first heartbeat


def take_a_trial_and_die(url: str, study: str) -> int:
    """What a worker leaves that dies right after taking a trial: a trial set RUNNING, no heartbeat ever.

    Done through Optuna's public storage API, as the worker's own take is one WAITING -> RUNNING update.
    """
    storage = optuna.storages.get_storage(storage_of(url))
    study_id = storage.get_study_id_from_name(study)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, 0)
    assert storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    return 0


@pytest.fixture(params=[("journal", "3"), ("postgresql", "0")], ids=["journal: retried", "postgresql, --max-retries 0: replaced"])
def died_before_its_first_heartbeat(request, tmp_path):
    """Trial 0 (the published baseline) taken by a worker that died at once; then a real worker runs the study."""
    kind, max_retries = request.param
    url = f"journal:{tmp_path / 'study.log'}" if kind == "journal" else request.getfixturevalue("pg_url")
    create(tmp_path, url, "early", budget=2, epochs=1)
    dead = take_a_trial_and_die(url, "early")
    done = ok(run(tmp_path, "worker", "--storage", url, "--study", "early", *FAST, "--max-retries", max_retries))
    return url, dead, max_retries, done


def test_a_trial_taken_by_a_worker_that_died_before_its_first_heartbeat(died_before_its_first_heartbeat):
    """Failed after the grace period and retried; with no retries left (--max-retries 0), replaced by a fresh trial."""
    url, dead, max_retries, done = died_before_its_first_heartbeat
    trials = trials_of(url, "early")
    assert_exact_budget(trials, 2)
    failed = next(t for t in trials if t.number == dead)
    assert failed.state == TrialState.FAIL and "worker" not in failed.user_attrs, "no worker ever ran it"
    if max_retries == "0":
        fresh = next(t for t in trials if t.user_attrs.get("replaces") == dead)
        assert fresh.state == TrialState.COMPLETE and "retry_of" not in fresh.user_attrs
        assert not any("retry_of" in t.user_attrs for t in trials), "no retries were allowed"
    else:
        retry = next(t for t in trials if t.user_attrs.get("retry_of") == dead)
        assert retry.state == TrialState.COMPLETE and "resumed_from" not in retry.user_attrs
    assert "budget 2 trials: 2 finished" in done.stdout


@pytest.mark.parametrize("died_before_its_first_heartbeat", [("journal", "3")], ids=["journal: retried"], indirect=True)
def test_the_retry_of_a_trial_that_never_started_keeps_its_enqueued_parameters(died_before_its_first_heartbeat):
    url, dead, _, _ = died_before_its_first_heartbeat
    trials = trials_of(url, "early")
    failed = next(t for t in trials if t.number == dead)
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == dead)
    assert failed.system_attrs.get("fixed_params"), "trial 0 was queued with the published parameters"
    assert retry.params == failed.system_attrs["fixed_params"]


# --------------------------------------------------------------------------- a lost resume state


@pytest.fixture(scope="module", params=["corrupt", "missing"])
def lost_resume_state(request, tmp_path_factory):
    """A worker SIGKILLed after epoch 1; its resume state then damaged or deleted; a second worker takes over."""
    folder = tmp_path_factory.mktemp(f"lost-{request.param}")
    url = f"journal:{folder / 'study.log'}"
    create(folder, url, "lost", budget=1, epochs=4)
    first = start(folder, "worker", "--storage", url, "--study", "lost", *FAST, log="first.log")
    try:
        victim = wait_for(lambda: running_past_epoch(url, "lost"), "a trial past its first epoch", processes=(first,))
        kill(first.pid)
        first.wait(60)
    finally:
        stop_all(first)
    state = folder / "mnist-hpo-artifacts" / f"resume-lost-{victim.number}.pt"
    assert state.is_file(), sorted(p.name for p in state.parent.iterdir())
    if request.param == "corrupt":
        state.write_bytes(state.read_bytes()[: len(state.read_bytes()) // 3])  # a torn write
    else:
        state.unlink()
    second = run(folder, "worker", "--storage", url, "--study", "lost", *FAST)
    return url, victim, second


def test_a_lost_resume_state_makes_the_retry_start_over(lost_resume_state):
    url, victim, second = lost_resume_state
    ok(second)
    trials = trials_of(url, "lost")
    assert_exact_budget(trials, 1)
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    assert "resumed_from" not in retry.user_attrs and sorted(retry.intermediate_values) == [1, 2, 3, 4], "trained from epoch 1"


def test_a_lost_resume_state_is_reported(lost_resume_state):
    _, victim, second = lost_resume_state
    said = [
        line.lower()
        for line in (second.stdout + second.stderr).splitlines()
        if f"trial {victim.number}" in line and ("resume" in line.lower() or "checkpoint" in line.lower())
    ]
    assert any(words in line for line in said for words in ("start over", "starts over", "from epoch 1", "starting over")), second.stdout


# ---------------------------------------------------------------------------- the storage goes away


def test_workers_ride_out_a_grpc_proxy_restart(proxy, pg_url, tmp_path):
    """The proxy is stopped mid-study and started again on the same port; the study still ends at its exact budget."""
    url, port, handle = proxy
    create(tmp_path, pg_url, "restart", budget=3, epochs=3)
    workers = [
        start(
            tmp_path,
            "worker",
            "--storage",
            url,
            "--study",
            "restart",
            "--seed",
            str(i),
            "--heartbeat-interval",
            "1",
            "--grace-period",
            "60",
            log=f"w{i}.log",
        )
        for i in range(2)
    ]
    try:
        wait_for(lambda: running_past_epoch(pg_url, "restart"), "a trial past its first epoch", processes=tuple(workers))
        handle["process"].send_signal(signal.SIGTERM)
        assert handle["process"].wait(60) == 0
        handle["process"] = start(tmp_path, "storage-proxy", "--storage", pg_url, "--port", str(port), log="proxy-again.log")
        wait_for(
            lambda: "serving" in (tmp_path / "proxy-again.log").read_text(), "the proxy to listen again", processes=(handle["process"],)
        )
        codes = [finish(w) for w in workers]
    finally:
        stop_all(*workers)
    assert codes == [0, 0], logs(tmp_path, "w0.log", "w1.log")
    trials = trials_of(pg_url, "restart")
    assert_exact_budget(trials, 3)
    assert all(t.state != TrialState.FAIL for t in trials)


def test_workers_ride_out_a_postgresql_restart_and_say_so(postgres, pg_url, tmp_path):
    """The server stops mid-study, stays down until a worker has reported the lost connection, then starts again."""
    create(tmp_path, pg_url, "outage", budget=2, epochs=3)
    env = {"MNIST_HPO_RECONNECT_S": "120"}
    workers = [
        start(
            tmp_path,
            "worker",
            "--storage",
            pg_url,
            "--study",
            "outage",
            "--seed",
            str(i),
            "--heartbeat-interval",
            "1",
            "--grace-period",
            "60",
            log=f"w{i}.log",
            **env,
        )
        for i in range(2)
    ]
    try:
        wait_for(lambda: running_past_epoch(pg_url, "outage"), "a trial past its first epoch", processes=tuple(workers))
        postgres.pause()
        try:
            wait_for(lambda: "lost the connection to" in logs(tmp_path, "w0.log", "w1.log"), "a worker to notice", processes=tuple(workers))
        finally:
            postgres.resume()
        codes = [finish(w) for w in workers]
    finally:
        stop_all(*workers)
    text = logs(tmp_path, "w0.log", "w1.log")
    assert codes == [0, 0], text
    assert "lost the connection to postgresql+psycopg://postgres:***@127.0.0.1" in text and "reconnected to" in text, text
    assert "pg-s3cret-Pw" not in text and "Traceback" not in text
    trials = trials_of(pg_url, "outage")
    assert_exact_budget(trials, 2)
    assert len(trials) == 2 and all(t.state != TrialState.FAIL for t in trials), "the outage cost no trial"


# ------------------------------------------------------------------- a worker of `search --workers K` dies


def test_search_with_workers_survives_a_worker_that_dies(tmp_path):
    """SIGKILL of one `mnist-hpo worker` of `search --workers 2` on a journal file: the other resumes its trial."""
    url = f"journal:{tmp_path / 'study.log'}"
    search = start(
        tmp_path,
        "search",
        "--workers",
        "2",
        "--study",
        "k",
        "--storage",
        url,
        *TINY,
        "--n-trials",
        "3",
        "--epochs",
        "4",
        "--seed",
        "0",
        *FAST,
        log="search.log",
    )
    try:
        victim = wait_for(lambda: running_past_epoch(url, "k"), "a trial past its first epoch", processes=(search,))
        kill(worker_pid(victim))
        code = finish(search)
    finally:
        stop_all(search)
    out = (tmp_path / "search.log").read_text()
    assert code == 0, out
    assert "exited with status -9" in out and "all workers done: budget 3 trials: 3 finished" in out, out
    assert "Traceback" not in out
    trials = trials_of(url, "k")
    assert_exact_budget(trials, 3)
    assert_retried_from_its_checkpoint(trials, victim)


def test_search_with_workers_whose_workers_all_die_says_how_to_continue(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    search = start(
        tmp_path,
        "search",
        "--workers",
        "2",
        "--study",
        "k",
        "--storage",
        url,
        *TINY,
        "--n-trials",
        "2",
        "--epochs",
        "5",
        "--seed",
        "0",
        *FAST,
        log="search.log",
    )
    try:

        def two_running():
            try:
                trials = trials_of(url, "k")
            except Exception:  # not created yet, or the journal is being written
                return None
            running = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
            return running if len(running) == 2 else None

        for trial in wait_for(two_running, "both workers to run a trial", processes=(search,)):
            kill(worker_pid(trial))
        code = finish(search)
    finally:
        stop_all(search)
    out = (tmp_path / "search.log").read_text()
    assert code == 2, out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "2 of 2 workers failed before the budget was met" in errors[0], out
    assert "continue with `mnist-hpo search --study k" in errors[0] and "Traceback" not in out
    done = ok(run(tmp_path, "search", "--study", "k", "--storage", url, "--workers", "1", *FAST))  # what it says to do, with one worker
    assert_exact_budget(trials_of(url, "k"), 2)
    assert "budget 2 trials: 2 finished" in done.stdout


# ------------------------------------------------------------------------------------------ a full disk


def mount_small_disk(where: Path) -> Path:
    """A 2 MiB tmpfs mounted by the test (as root): room for one tiny trial's files, not much more."""
    where.mkdir()
    if (
        shutil.which("mount") is None
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True).returncode != 0
    ):
        pytest.skip("cannot mount a tmpfs here (needs root): the full-disk tests need a small filesystem of their own")
    return where


def unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> None:
    """Fill the filesystem to the last block."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    assert shutil.disk_usage(disk).free < 8192


@pytest.fixture(scope="module")
def full_disk_search(tmp_path_factory):
    """`search` finishes one trial with its checkpoint on a small disk; the disk is filled; `search` asks for one more."""
    folder = tmp_path_factory.mktemp("full")
    disk = mount_small_disk(folder / "disk")
    try:
        artifacts = disk / "artifacts"
        search = ["search", "--study", "d", *TINY, "--n-trials", "1", "--artifacts", str(artifacts), "--seed", "0"]
        ok(run(folder, *search))
        before = {p.name: p.read_bytes() for p in artifacts.iterdir()}
        fill(disk)
        yield folder, artifacts, before, run(folder, *search)
    finally:
        unmount(disk)


def test_a_full_disk_fails_the_trial_and_keeps_the_study_and_earlier_checkpoints(full_disk_search):
    folder, artifacts, before, _ = full_disk_search
    trials = trials_of(f"sqlite:///{folder / 'mnist-hpo.db'}", "d")
    # One engine for `search` and `worker`: each failed trial is replaced, and it stops after three in a row.
    assert [t.state for t in trials] == [TrialState.COMPLETE, *[TrialState.FAIL] * 3, TrialState.WAITING]
    assert {p.name: p.read_bytes() for p in artifacts.iterdir()} == before, "earlier files intact, nothing half-written left"
    done = ok(run(folder, "export", "--study", "d", "--trial", "0", "--out", "best.pt", "--artifacts", str(artifacts)))
    assert "exported trial 0" in done.stdout and (folder / "best.pt").stat().st_size > 0


def test_a_full_disk_is_one_clear_line_and_the_trial_records_why(full_disk_search):
    folder, _, _, done = full_disk_search
    error_line(done, "its last 3 trials failed", "No space left on device")
    failed = [t for t in trials_of(f"sqlite:///{folder / 'mnist-hpo.db'}", "d") if t.state == TrialState.FAIL]
    assert failed and all("No space left on device" in t.user_attrs["fail_reason"] for t in failed), [t.user_attrs for t in failed]


def test_a_worker_on_a_full_disk_stops_with_the_reason(tmp_path):
    """The worker path records the reason on every failed trial, replaces it, and stops after three in a row."""
    disk = mount_small_disk(tmp_path / "disk")
    try:
        url = f"journal:{tmp_path / 'study.log'}"
        create(tmp_path, url, "d", budget=1, epochs=2)
        fill(disk)
        done = run(tmp_path, "worker", "--study", "d", "--storage", url, "--artifacts", str(disk / "artifacts"), *FAST)
        leftovers = sorted(p.name for p in (disk / "artifacts").iterdir()) if (disk / "artifacts").exists() else []
    finally:
        unmount(disk)
    error_line(done, "its last 3 trials failed", "No space left on device")
    trials = trials_of(url, "d")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 3 and all("No space left on device" in t.user_attrs["fail_reason"] for t in failed), [
        t.user_attrs for t in trials
    ]
    assert [t.state for t in trials].count(TrialState.WAITING) == 1, "its place in the budget is left for another worker"
    assert leftovers == [], f"half-written files: {leftovers}"
