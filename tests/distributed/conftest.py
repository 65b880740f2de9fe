"""Distributed studies: real worker processes on a real PostgreSQL server, a journal file, the gRPC proxy.

The server is the session's throwaway cluster (the `postgres` and `pg_url` fixtures of tests/conftest.py):
Debian's PostgreSQL, initdb + pg_ctl on a free 127.0.0.1 port, password authentication, which .ci/run
installs with apt when it is missing. Without it these tests are skipped locally and fail in CI.

Workers are real `python -m mnist_hpo` processes on the bundled smoke data, one CPU thread each.
"""

from __future__ import annotations

import itertools

import pytest
from netns import WorkerNetwork, netns_problem

_networks = itertools.count()


@pytest.fixture
def worker_network():
    """A network namespace with a veth link to this host (tests/netns.py), removed afterwards."""
    problem = netns_problem()
    if problem is not None:  # a failure in CI (tests/conftest.py), which runs as root with iproute2 installed
        pytest.skip(f"{problem}: the partition tests need their own network namespace")
    network = WorkerNetwork(next(_networks)).create()
    yield network
    network.destroy()
