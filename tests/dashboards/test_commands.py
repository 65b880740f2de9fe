"""`mnist-hpo dashboard` and `mnist-hpo report` through the CLI entry point: refusals are one line, exit 2.

Refusals run `mnist_hpo.cli.main` in this process (they stop before serving); the cases that must
serve (beyond loopback with a token, a missing artifact folder) run the real command in a subprocess.
The dashboard's security (Host, Origin, token, read-only) is tested in test_security.py. Reports are also rendered for studies
made with Optuna directly: an empty one, one with a single result, and a multi-objective one.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from mnist_hpo import cli, storage
from mnist_hpo.dashboards.report import render_report

from .conftest import get, get_json, start_dashboard, stop

pytestmark = pytest.mark.slow  # real studies or several processes: `-m 'not slow'` leaves it out


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def one_error_line(code: int, err: str, *fragments: str) -> str:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_missing_database_is_an_error_and_is_not_created(capsys, tmp_path):
    db = tmp_path / "nothing-here.db"
    code, _, err = run_cli(capsys, "dashboard", "--storage", f"sqlite:///{db}", "--port", "0")
    one_error_line(code, err, "no study database", str(db))
    assert not db.exists() and list(tmp_path.iterdir()) == []


def test_port_in_use_is_one_line(capsys, live):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(capsys, "dashboard", "--storage", live.url, "--artifacts", str(live.artifacts), "--port", str(port))
    one_error_line(code, err, f"port {port}", "already in use", "--port")


def test_non_loopback_host_needs_a_token(capsys, live, monkeypatch):
    monkeypatch.delenv("MNIST_HPO_DASHBOARD_TOKEN", raising=False)
    code, _, err = run_cli(capsys, "dashboard", "--storage", live.url, "--host", "0.0.0.0", "--port", "0")
    one_error_line(code, err, "0.0.0.0", "beyond loopback", "MNIST_HPO_DASHBOARD_TOKEN", "--token-file")
    for host in ("localhost", "127.0.0.1", "::1", "127.0.0.2"):
        from mnist_hpo.dashboards.server import is_loopback

        assert is_loopback(host), host
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("example.org")


def test_a_token_serves_beyond_loopback_read_only(live):
    token = "live-test-token-0123456789"
    process, base, _ = start_dashboard(
        "--storage", live.url, "--artifacts", str(live.artifacts), "--host", "0.0.0.0", "--port", "0",
        env={"MNIST_HPO_DASHBOARD_TOKEN": token},
    )  # fmt: skip
    try:
        assert get(base + "/api/studies")[0] == 401
        request = urllib.request.Request(base + "/api/studies", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert [s["study_name"] for s in json.loads(response.read())["study_summaries"]] == [live.study]
    finally:
        stop(process)


def test_missing_artifact_folder_still_serves_and_says_so(live, tmp_path):
    process, base, log = start_dashboard("--storage", live.url, "--artifacts", str(tmp_path / "none"), "--port", "0")
    try:
        assert get_json(base + "/api/meta")["artifact_is_available"] is False
        assert "warning: no artifact folder" in log.read_text()
        assert not (tmp_path / "none").exists()
    finally:
        stop(process)


def test_report_command_writes_one_file(capsys, live, tmp_path):
    out = tmp_path / "report.html"
    code, stdout, err = run_cli(
        capsys, "report", "--study", live.study, "--storage", live.url, "--artifacts", str(live.artifacts), "--out", str(out)
    )
    assert code == 0, err
    assert f"wrote {out}" in stdout
    document = out.read_text(encoding="utf-8")
    assert document.startswith("<!DOCTYPE html>") and "Pareto" not in document
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left behind

    code, _, err = run_cli(capsys, "report", "--study", "no-such-study", "--storage", live.url, "--out", str(tmp_path / "x.html"))
    one_error_line(code, err, "no study 'no-such-study'", live.study)
    assert not (tmp_path / "x.html").exists()


def _synthetic(tmp_path: Path, directions: list[str], n: int) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 'synthetic.db'}")
    study = optuna.create_study(storage=rdb, directions=directions, study_name=f"synthetic-{len(directions)}-{n}")
    distributions = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "growth": IntDistribution(0, 8)}
    for i in range(n):
        params = {"lr": 1e-4 * (i + 1), "growth": i % 9}
        accuracy = 0.9 + 0.01 * (i % 5)
        values = [accuracy, 1000.0 * (i + 1)] if len(directions) == 2 else [accuracy]
        study.add_trial(
            create_trial(
                params=params,
                distributions=distributions,
                values=values,
                user_attrs={"parameters": 1000 * (i + 1)},
                intermediate_values={} if len(directions) == 2 else {1: accuracy - 0.1, 2: accuracy},
            )
        )
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"lr": 5e-3, "growth": 8},
            distributions=distributions,
            intermediate_values={} if len(directions) == 2 else {1: 0.3},
        )
    )
    return study, rdb


def test_reports_of_empty_single_and_multi_objective_studies(tmp_path):
    empty = render_report(*_synthetic(tmp_path, ["maximize"], 0))
    assert "No trial has completed yet" in empty and "needs at least two completed trials" in empty
    single = render_report(*_synthetic(tmp_path, ["maximize"], 1))
    assert "best by validation: trial 0" in single and "needs at least two completed trials" in single
    multi = render_report(*_synthetic(tmp_path, ["maximize", "minimize"], 8))
    assert "<h3>Pareto front</h3>" in multi and "Pareto front (validation accuracy against parameters)" in multi
    assert "Intermediate values" not in multi  # multi-objective trials report no epochs
    assert multi.count('class="plotly-graph-div"') == 5  # history, importances, parallel, slices, Pareto front
    assert "No artifact folder was given, so its pictures cannot be shown" in multi
