"""Workers through `mnist-hpo storage-proxy` (Optuna's gRPC storage proxy) in front of a real PostgreSQL server."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import optuna
import pytest
from dist_helpers import FAST, assert_exact_budget, cli, ok, start, trials_of, wait_for

from mnist_hpo.tuning.attrs import HEARTBEAT_ATTR

pytestmark = pytest.mark.slow  # real studies or several processes: `-m 'not slow'` leaves it out

pytest.importorskip("grpc", reason="the grpc extra (grpcio, protobuf) is not installed")

SMALL = ["--profile", "smoke", "--epochs", "1", "--max-params", "20000", "--seed", "0"]


@pytest.fixture
def proxy(pg_url, tmp_path) -> Iterator[str]:
    """`mnist-hpo storage-proxy` serving this test's database; yields its grpc:// URL, and checks it stops cleanly."""
    from pg_cluster import free_port

    port = free_port()
    process = start(tmp_path, "storage-proxy", "--storage", pg_url, "--host", "127.0.0.1", "--port", str(port), log="proxy.log")
    try:
        wait_for(lambda: "serving" in (tmp_path / "proxy.log").read_text(), "the proxy to listen", processes=[process])
        served = (tmp_path / "proxy.log").read_text()
        assert f"on grpc://127.0.0.1:{port}" in served and "pg-s3cret-Pw" not in served
        yield f"grpc://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0 and "storage proxy stopped" in (tmp_path / "proxy.log").read_text()


def test_workers_share_a_study_through_the_grpc_proxy(proxy, pg_url, tmp_path):
    """The budget is set on the database; two worker processes join through the proxy and end it exactly."""
    ok(cli(tmp_path, "study", "create", "--study", "g", "--storage", pg_url, "--n-trials", "8", *SMALL))
    done = ok(cli(tmp_path, "worker", "--workers", "2", "--study", "g", "--storage", proxy, *FAST))
    assert "budget 8 trials: 8 finished" in done.stdout + done.stderr
    trials = trials_of(pg_url, "g")  # straight from PostgreSQL: the proxy wrote it all through
    assert_exact_budget(trials, 8)
    assert all(HEARTBEAT_ATTR in t.system_attrs for t in trials), "gRPC workers keep their own heartbeats"


@pytest.mark.adversarial  # a budget change where no lock can be held
def test_budget_changes_through_the_grpc_proxy_are_refused_before_anything_is_written(proxy, pg_url, tmp_path):
    """The proxy cannot hold the study's lock: `search` and `study create` through it are one line, exit 2, nothing stored."""
    refused = [
        ("search", "--study", "new", "--n-trials", "2"),
        ("study", "create", "--study", "new", "--n-trials", "2"),
        ("search", "--study", "old", "--n-trials", "2"),  # adding to an existing study
        ("study", "create", "--study", "old", "--n-trials", "9"),  # raising one
        ("search", "--study", "old"),  # continuing one: topping up its queue is a budget change too
    ]
    ok(cli(tmp_path, "study", "create", "--study", "old", "--storage", pg_url, "--n-trials", "3", *SMALL))
    before = trials_of(pg_url, "old")
    for command in refused:
        done = cli(tmp_path, *command, "--storage", proxy, *SMALL)
        name = command[command.index("--study") + 1]
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert f"the budget of study {name!r} cannot be set through the gRPC proxy {proxy}" in done.stderr
        assert f"`mnist-hpo worker --study {name} --storage {proxy}`" in done.stderr  # the command that does work through it
    assert optuna.study.get_all_study_names(pg_url) == ["old"]
    after = trials_of(pg_url, "old")
    assert [(t.number, t.state, t.user_attrs) for t in after] == [(t.number, t.state, t.user_attrs) for t in before]
