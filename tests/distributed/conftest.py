"""Distributed studies on a real PostgreSQL server: one throwaway cluster for the session.

The server is Debian's PostgreSQL (initdb + pg_ctl on a free 127.0.0.1 port, password
authentication), which .ci/run installs with apt when it is missing. With CI=true a missing
PostgreSQL fails these tests; elsewhere they are skipped with the reason.

Workers are real `python -m mnist_hpo` processes on the bundled smoke data, one CPU thread each.
"""

from __future__ import annotations

import os
import re

import pytest

from pg_cluster import PostgresCluster, find_bin_dir


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
