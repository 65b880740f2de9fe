"""Workers through `mnist-hpo storage-proxy` (Optuna's gRPC storage proxy) in front of a real PostgreSQL server."""

from __future__ import annotations

import signal

import pytest
from dist_helpers import FAST, assert_exact_budget, cli, ok, start, trials_of, wait_for

from mnist_hpo.tuning._retries import HEARTBEAT_ATTR

pytestmark = pytest.mark.slow  # real studies or several processes: `-m 'not slow'` leaves it out

pytest.importorskip("grpc", reason="the grpc extra (grpcio, protobuf) is not installed")


def test_workers_share_a_study_through_the_grpc_proxy(pg_url, tmp_path):
    from pg_cluster import free_port

    port = free_port()
    proxy = start(tmp_path, "storage-proxy", "--storage", pg_url, "--host", "127.0.0.1", "--port", str(port), log="proxy.log")
    try:
        wait_for(lambda: "serving" in (tmp_path / "proxy.log").read_text(), "the proxy to listen", processes=[proxy])
        served = (tmp_path / "proxy.log").read_text()
        assert f"on grpc://127.0.0.1:{port}" in served and "pg-s3cret-Pw" not in served
        done = ok(
            cli(
                tmp_path,
                "search",
                "--workers",
                "2",
                "--n-trials",
                "8",
                "--profile",
                "smoke",
                "--epochs",
                "1",
                "--max-params",
                "20000",
                "--study",
                "g",
                "--storage",
                f"grpc://127.0.0.1:{port}",
                "--seed",
                "0",
                *FAST,
            )
        )
        assert "budget 8 trials: 8 finished" in done.stdout
    finally:
        proxy.send_signal(signal.SIGTERM)
        code = proxy.wait(timeout=60)
    assert code == 0 and "storage proxy stopped" in (tmp_path / "proxy.log").read_text()
    trials = trials_of(pg_url, "g")  # straight from PostgreSQL: the proxy wrote it all through
    assert_exact_budget(trials, 8)
    assert all(HEARTBEAT_ATTR in t.system_attrs for t in trials), "gRPC workers keep their own heartbeats"
