"""The dashboard's speed-up of optuna-dashboard's search-space cache (dashboards/_speedup.py), and its server as callers use it."""

from __future__ import annotations

import json

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import create_trial
from optuna_dashboard._inmemory_cache import _CachedExtraStudyProperty

from mnist_hpo.dashboards._speedup import fold_in_only_new_trials


def test_search_space_cache_walks_each_finished_trial_once(monkeypatch):
    assert fold_in_only_new_trials() == [], "the installed optuna-dashboard is not the tested version"
    walked: list[int] = []
    original = _CachedExtraStudyProperty._update_search_space

    def counting(self, trial):
        walked.append(trial.number)
        original(self, trial)

    monkeypatch.setattr(_CachedExtraStudyProperty, "_update_search_space", counting)
    study = optuna.create_study()
    for x in (1.0, 2.0):
        study.add_trial(create_trial(value=x, params={"x": x}, distributions={"x": FloatDistribution(0, 10)}))
    cache = _CachedExtraStudyProperty()

    cache.update(study.trials)
    assert sorted(walked) == [0, 1]
    walked.clear()
    cache.update(study.trials)
    assert walked == []  # upstream walks both again, on every request

    study.add_trial(create_trial(value=3.0, params={"y": 1}, distributions={"y": IntDistribution(0, 5)}))
    running = study.ask({"x": FloatDistribution(0, 10)})
    cache.update(study.trials)
    assert sorted(walked) == [2, 3]
    walked.clear()
    cache.update(study.trials)
    assert walked == [3]  # a running trial can still gain parameters: walked until it finishes
    study.tell(running, 4.0)
    walked.clear()
    cache.update(study.trials)
    cache.update(study.trials)
    assert walked == [3]

    assert [name for name, _ in cache.union_search_space] == ["x", "y"]
    assert cache.intersection_search_space == []


def test_start_up_load_fills_the_caches_before_the_first_page_load(tmp_path, monkeypatch):
    """After the background load, the first page load reads no trial from the database and walks none."""
    import json
    import sqlite3
    from wsgiref.util import setup_testing_defaults

    from mnist_hpo import storage
    from mnist_hpo.dashboards.server import make_dashboard_server

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="warm", storage=storage.open_storage(url))
    for x in (1.0, 2.0, 3.0):
        study.add_trial(create_trial(value=x, params={"x": x}, distributions={"x": FloatDistribution(0, 10)}))
    server, _ = make_dashboard_server(url, artifacts=tmp_path, port=0, warm_up=True)
    try:
        server.warm_up.join(timeout=60)
        assert not server.warm_up.is_alive()
        with sqlite3.connect(tmp_path / "studies.db") as db:  # behind the caches' back
            db.execute("UPDATE trial_values SET value = 99.0")
        walked: list[int] = []
        original = _CachedExtraStudyProperty._update_search_space
        monkeypatch.setattr(
            _CachedExtraStudyProperty, "_update_search_space", lambda self, trial: (walked.append(trial.number), original(self, trial))
        )

        environ = {
            "PATH_INFO": f"/api/studies/{study._study_id}",
            "QUERY_STRING": "after=0",
            "HTTP_HOST": f"127.0.0.1:{server.server_port}",
        }
        setup_testing_defaults(environ)
        page = json.loads(b"".join(server.get_app()(environ, lambda status, headers, exc_info=None: None)))
    finally:
        server.server_close()
    assert [t["values"] for t in page["trials"]] == [[1.0], [2.0], [3.0]]  # read before the change, at start-up
    assert walked == []  # the search spaces were folded in at start-up too
    fresh = optuna.storages.get_storage(storage.open_storage(url, must_exist=True))
    assert [t.value for t in fresh.get_all_trials(study._study_id, deepcopy=False)] == [99.0] * 3


def test_the_server_serves_in_a_thread_until_shut_down(tmp_path):
    """What callers of make_dashboard_server (the benchmark, tests) rely on: a bound server, served where they like."""
    import threading
    import urllib.request

    from mnist_hpo import storage
    from mnist_hpo.dashboards.server import make_dashboard_server

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.create_study(study_name="served", storage=storage.open_storage(url))
    server, lines = make_dashboard_server(url, artifacts=tmp_path, port=0)
    assert server.server_port > 0 and lines[-1].endswith(f"at http://127.0.0.1:{server.server_port}/dashboard")
    assert lines[-2].startswith("read-write, no token (loopback only)")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/api/studies", timeout=30) as response:
            assert json.loads(response.read())["study_summaries"][0]["study_name"] == "served"
    finally:
        server.shutdown()
        server.server_close()
    thread.join(10)
    assert not thread.is_alive()
