"""One real smoke study, written while a real `mnist-hpo dashboard` serves and is polled; headless Chromium.

The `live` fixture (once per session, ~20-30 s on two cores) creates a SQLite storage, starts
`python -m mnist_hpo dashboard --port 0` on it in a subprocess, polls the dashboard's JSON API
from a thread while `run_search` (smoke profile, 6 trials, CPU) writes the study, and keeps the
dashboard running for the tests that read the study, its artifacts and its pages.

Browser tests use Debian's chromium (`--headless --dump-dom`, `--screenshot`). Without it they
are skipped, which fails them in CI (tests/conftest.py), because CI (`.ci/run`) installs it.
Screenshots go to tests/dashboards/screenshots/ when $MNIST_HPO_KEEP_SCREENSHOTS is set, else to
a temporary folder; their paths are listed at the end of the pytest run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
SCREENSHOT_ENV = "MNIST_HPO_KEEP_SCREENSHOTS"
SCREENSHOTS: list[Path] = []
STUDY = "dash-smoke"
N_TRIALS = 6


def pytest_terminal_summary(terminalreporter) -> None:
    if SCREENSHOTS:
        terminalreporter.write_line("dashboard screenshots: " + ", ".join(str(p) for p in SCREENSHOTS))


# ------------------------------------------------------------------------------------------ dashboard


def start_dashboard(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> tuple[subprocess.Popen, str, Path]:
    """`python -m mnist_hpo dashboard ARGS` in a subprocess; returns it, its base URL and its stderr file."""
    stderr_path = Path(tempfile.mkstemp(prefix="dashboard-", suffix=".log")[1])
    inherited = {k: v for k, v in os.environ.items() if k != "MNIST_HPO_DASHBOARD_TOKEN"}  # a token only where a test sets one
    run_env = {**inherited, "PYTHONUNBUFFERED": "1", "COLUMNS": "400", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_hpo", "dashboard", *args],
        stdout=subprocess.PIPE,
        stderr=stderr_path.open("wb"),
        text=True,
        env=run_env,
    )
    deadline = time.monotonic() + timeout
    lines = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if " at http://" in line:
            url = line.split(" at ", 1)[1].split()[0]
            base = url.removesuffix("/dashboard").replace("0.0.0.0", "127.0.0.1")
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            return process, base, stderr_path
    process.kill()
    raise AssertionError(f"dashboard did not start: {''.join(lines)} {stderr_path.read_text()}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def get(url: str, timeout: float = 30) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def get_json(url: str) -> dict:
    status, _, body = get(url)
    assert status == 200, (url, status, body[:300])
    return json.loads(body)


@dataclass
class Poller:
    """Reads the dashboard's API in a loop, as its live update does, and records every failure."""

    base: str
    polls: int = 0
    errors: list[str] = field(default_factory=list)
    seen_trials: int = 0
    trial_counts: set[int] = field(default_factory=set)  # every number of finished trials the dashboard showed
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                for path in ["/api/studies"] + [
                    f"/api/studies/{s['study_id']}" for s in get_json(self.base + "/api/studies")["study_summaries"]
                ]:
                    status, _, body = get(self.base + path)
                    self.polls += 1
                    if status != 200:
                        self.errors.append(f"GET {path}: HTTP {status} {body[:200]!r}")
                    elif path != "/api/studies":
                        trials = json.loads(body)["trials"]  # the budget's trials are queued up front: count finished ones
                        shown = sum(t["state"] in ("Complete", "Pruned", "Fail") for t in trials)
                        self.seen_trials = max(self.seen_trials, shown)
                        self.trial_counts.add(shown)
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Live:
    url: str
    db: Path
    artifacts: Path
    study: str
    base: str  # http://127.0.0.1:PORT
    study_id: int
    poller: Poller
    dashboard_log: Path


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory):
    from mnist_hpo import storage
    from mnist_hpo.commands.search import search as run_search
    from mnist_hpo.tuning import SearchRequest

    folder = tmp_path_factory.mktemp("live")
    db, artifacts = folder / "study.db", folder / "artifacts"
    url = f"sqlite:///{db}"
    storage.open_storage(url)  # what `search` does first: the database exists before the dashboard starts
    storage.open_artifacts(artifacts)
    process, base, log = start_dashboard("--storage", url, "--artifacts", str(artifacts), "--port", "0")
    poller = Poller(base)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # smoke-sized nets on a small shared CPU: one thread is several times faster than two
    try:
        run_search(SearchRequest(study=STUDY, storage=url, artifacts=artifacts, profile="smoke", n_trials=N_TRIALS, seed=0, device="cpu"))
        torch.set_num_threads(threads)
        time.sleep(0.5)  # a last poll after the final trial
        poller.stop()
        thread.join(30)
        study_id = next(s["study_id"] for s in get_json(base + "/api/studies")["study_summaries"] if s["study_name"] == STUDY)
        yield Live(url, db, artifacts, STUDY, base, study_id, poller, log)
    finally:
        torch.set_num_threads(threads)
        poller.stop()
        stop(process)


# -------------------------------------------------------------------------------------------- browser


@dataclass
class Chromium:
    path: str
    screenshot_dir: Path

    def run(self, url: str, *flags: str, budget_ms: int = 10_000, timeout: float = 120) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            return subprocess.run(
                [
                    self.path,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    f"--user-data-dir={profile}",
                    f"--virtual-time-budget={budget_ms}",
                    *flags,
                    url,
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
            )

    def dump_dom(self, url: str, *flags: str, budget_ms: int = 10_000) -> subprocess.CompletedProcess:
        return self.run(url, "--dump-dom", *flags, budget_ms=budget_ms)

    def screenshot(self, url: str, name: str, size: tuple[int, int] = (1280, 900), budget_ms: int = 10_000) -> Path:
        path = self.screenshot_dir / name
        path.unlink(missing_ok=True)
        result = self.run(url, f"--screenshot={path}", f"--window-size={size[0]},{size[1]}", "--hide-scrollbars", budget_ms=budget_ms)
        assert path.is_file(), f"chromium wrote no screenshot: {result.stderr[-2000:]}"
        SCREENSHOTS.append(path)
        return path


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:  # a failure in CI (tests/conftest.py), where .ci/run installs it
        pytest.skip("headless chromium is not installed (apt-get install -y chromium); CI runs these tests")
    if os.environ.get(SCREENSHOT_ENV):
        folder = HERE / "screenshots"
        folder.mkdir(exist_ok=True)
    else:
        folder = tmp_path_factory.mktemp("screenshots")
    return Chromium(path, folder)
