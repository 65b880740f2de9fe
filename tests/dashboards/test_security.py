"""`mnist-hpo dashboard` as its users, and the web pages they visit, meet it: real processes, real HTTP, Chromium.

Three dashboards run as `python -m mnist_hpo dashboard` subprocesses, each on its own small SQLite
study file made with Optuna directly (no search):

- ``open``: the default, loopback, read-write, no token: the Host and Origin checks (DNS rebinding);
- ``guarded``: ``--host ::1``, a token in $MNIST_HPO_DASHBOARD_TOKEN (enforced on loopback too),
  ``--read-only`` and ``--allowed-host dash.example.org``;
- ``remote``: ``--host 0.0.0.0 --token-file PATH``, read-only without being asked.

Requests go over HTTP with http.client, setting Host, Origin and the rest as a browser or an attacker
would; Chromium (driven through Playwright's DevTools driver, Debian's binary) signs in, clicks a
study's delete button, and runs a rebound page's fetch. Each refusal is checked by the study still
being in the database afterwards, next to a write that does go through where it should.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from mnist_hpo import cli, storage
from mnist_hpo.dashboards._guard import READ_ONLY_TEXT, TOKEN_ENV

from .conftest import start_dashboard, stop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # real processes and a browser: `-m 'not slow'` leaves it out

TOKEN = "test-token-6f1c2a9e4b7d3085"
ATTACKER = "attacker.example"


@dataclass
class Dashboard:
    process: subprocess.Popen
    base: str  # http://HOST:PORT
    port: int
    url: str  # the storage
    ids: dict[str, int]  # study name -> id
    log: Path

    def alive(self, name: str) -> bool:
        return name in optuna.get_all_study_names(storage.open_storage(self.url, must_exist=True))


def make_studies(folder: Path, *names: str) -> tuple[str, dict[str, int]]:
    url = f"sqlite:///{folder / 'studies.db'}"
    rdb = storage.open_storage(url)
    ids = {}
    for name in names:
        study = optuna.create_study(study_name=name, storage=rdb)
        study.add_trial(create_trial(value=0.5, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}))
        ids[name] = study._study_id
    return url, ids


def serve(folder: Path, names: tuple[str, ...], *args: str, env: dict[str, str] | None = None) -> Dashboard:
    url, ids = make_studies(folder, *names)
    process, base, log = start_dashboard("--storage", url, "--artifacts", str(folder / "artifacts"), "--port", "0", *args, env=env)
    return Dashboard(process, base, urllib.parse.urlsplit(base).port, url, ids, log)


def request(dash: Dashboard, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; headers by name with - written _ (host="x" sends Host: x)."""
    parts = urllib.parse.urlsplit(dash.base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={k.replace("_", "-").title(): v for k, v in headers.items()})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def open_dash(tmp_path_factory: pytest.TempPathFactory):
    dash = serve(tmp_path_factory.mktemp("open"), ("keep", "rebound", "deletable", "renamed"))
    yield dash
    stop(dash.process)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    dash = serve(
        tmp_path_factory.mktemp("guarded"),
        ("keep", "clicked"),
        "--host", "::1", "--read-only", "--allowed-host", "dash.example.org",
        env={TOKEN_ENV: TOKEN},
    )  # fmt: skip
    yield dash
    stop(dash.process)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("remote")
    (folder / "token").write_text(TOKEN + "\n")
    dash = serve(folder, ("keep",), "--host", "0.0.0.0", "--token-file", str(folder / "token"))
    yield dash
    stop(dash.process)


BEARER = {"authorization": f"Bearer {TOKEN}"}


# ------------------------------------------------------------------------------------ Host and Origin


def test_a_foreign_host_is_refused_and_the_study_survives(open_dash):
    study = open_dash.ids["keep"]
    status, _, body = request(open_dash, "DELETE", f"/api/studies/{study}", host=f"{ATTACKER}:{open_dash.port}")
    assert status == 403 and b"does not serve Host" in body, (status, body)
    assert open_dash.alive("keep")
    status, _, _ = request(open_dash, "GET", "/api/studies", host=f"{ATTACKER}:{open_dash.port}")
    assert status == 403


def test_the_names_of_loopback_are_served_on_the_port_only(open_dash):
    for host in (f"127.0.0.1:{open_dash.port}", f"localhost:{open_dash.port}", f"[::1]:{open_dash.port}"):
        status, _, body = request(open_dash, "GET", "/api/studies", host=host)
        assert status == 200 and "keep" in {s["study_name"] for s in json.loads(body)["study_summaries"]}, host
    assert request(open_dash, "GET", "/api/studies", host=f"localhost:{open_dash.port + 1}")[0] == 403


def test_a_write_from_another_site_is_refused_and_the_same_site_may_write(open_dash):
    study = open_dash.ids["keep"]
    status, _, body = request(open_dash, "DELETE", f"/api/studies/{study}", origin=f"http://{ATTACKER}")
    assert status == 403 and b"another site" in body
    rename = json.dumps({"study_name": "pwned"}).encode()
    status, _, _ = request(
        open_dash, "POST", f"/api/studies/{study}/rename", rename, sec_fetch_site="cross-site", content_type="application/json"
    )
    assert status == 403
    assert open_dash.alive("keep") and not open_dash.alive("pwned")
    # The loopback default is read-write: the dashboard's own page may delete and rename.
    origin = f"http://127.0.0.1:{open_dash.port}"
    status, _, _ = request(open_dash, "DELETE", f"/api/studies/{open_dash.ids['deletable']}", origin=origin, sec_fetch_site="same-origin")
    assert status == 204 and not open_dash.alive("deletable")
    rename = json.dumps({"study_name": "renamed-here"}).encode()
    renamed = f"/api/studies/{open_dash.ids['renamed']}/rename"
    status, _, _ = request(open_dash, "POST", renamed, rename, origin=origin, content_type="application/json")
    assert status == 201 and open_dash.alive("renamed-here")


def test_concurrent_browsers_are_served_while_a_client_stalls(open_dash):
    with socket.create_connection(("127.0.0.1", open_dash.port)) as stalled:
        stalled.sendall(b"GET /api/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never finishes
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(request(open_dash, "GET", f"/api/studies/{open_dash.ids['keep']}")[0]))
            for _ in range(12)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert results == [200] * 12


# ------------------------------------------------------------------------------- read-only and tokens


def test_read_only_refuses_deletes_notes_and_renames_and_the_study_survives(guarded):
    study = guarded.ids["keep"]
    note = json.dumps({"version": 0, "body": "overwritten"}).encode()
    for method, path, body in (
        ("DELETE", f"/api/studies/{study}", None),
        ("PUT", f"/api/studies/{study}/note", note),
        ("POST", f"/api/studies/{study}/rename", json.dumps({"study_name": "renamed"}).encode()),
    ):
        status, _, text = request(guarded, method, path, body, content_type="application/json", **BEARER)
        assert status == 403 and READ_ONLY_TEXT.encode() in text, (method, path, status, text)
    assert guarded.alive("keep") and not guarded.alive("renamed")
    status, _, body = request(guarded, "GET", f"/api/studies/{study}", **BEARER)
    assert status == 200 and json.loads(body)["note"]["body"] == ""


def test_the_read_only_page_says_so(guarded, open_dash):
    status, headers, page = request(guarded, "GET", "/dashboard", **BEARER)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert f">{READ_ONLY_TEXT}</div>".encode() in page and page.index(b"<body>") < page.index(READ_ONLY_TEXT.encode())
    status, _, page = request(open_dash, "GET", "/dashboard")
    assert status == 200 and READ_ONLY_TEXT.encode() not in page


def test_the_api_needs_the_token_even_on_loopback(guarded):
    status, headers, body = request(guarded, "GET", "/api/studies")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer"), body
    assert request(guarded, "GET", "/api/studies", authorization=f"Bearer {TOKEN[:-1]}")[0] == 401
    status, _, body = request(guarded, "GET", "/api/studies", **BEARER)
    assert status == 200 and [s["study_name"] for s in json.loads(body)["study_summaries"]] == ["keep", "clicked"]
    assert request(guarded, "GET", "/api/studies", host="dash.example.org", **BEARER)[0] == 200  # --allowed-host
    assert request(guarded, "GET", "/api/studies", host=f"{ATTACKER}:{guarded.port}", **BEARER)[0] == 403  # a token is no Host


def test_signing_in_sets_a_cookie_that_is_not_the_token(guarded):
    page = f"/dashboard/studies/{guarded.ids['keep']}"
    status, _, body = request(guarded, "GET", page, accept="text/html")
    assert status == 401 and b'action="/login"' in body and b'name="token"' in body
    form = {"content_type": "application/x-www-form-urlencoded"}
    status, headers, body = request(
        guarded, "POST", "/login", urllib.parse.urlencode({"token": "wrong-token-000000000", "next": page}).encode(), **form
    )
    assert status == 401 and b"not the one this dashboard was started with" in body and "set-cookie" not in headers
    status, headers, _ = request(guarded, "POST", "/login", urllib.parse.urlencode({"token": TOKEN, "next": page}).encode(), **form)
    assert status == 303 and headers["location"] == page
    cookie = headers["set-cookie"]
    pair = cookie.split(";")[0]
    assert TOKEN not in cookie and {"HttpOnly", "SameSite=Strict", "Path=/"} <= {p.strip() for p in cookie.split(";")}
    assert "Secure" not in cookie
    status, _, body = request(guarded, "GET", "/api/studies", cookie=pair)
    assert status == 200 and json.loads(body)["study_summaries"]
    assert request(guarded, "GET", page, cookie=pair)[0] == 200
    status, headers, _ = request(guarded, "POST", "/login", f"token={TOKEN}".encode(), x_forwarded_proto="https", **form)
    assert status == 303 and headers["set-cookie"].endswith("; Secure")  # behind a proxy that ends TLS
    status, headers, _ = request(guarded, "POST", "/login", f"token={TOKEN}".encode(), origin=f"http://{ATTACKER}", **form)
    assert status == 403 and "set-cookie" not in headers


def test_a_remote_listener_needs_the_token_and_is_read_only_by_default(remote):
    assert request(remote, "GET", "/api/studies")[0] == 401
    assert request(remote, "GET", "/api/studies", **BEARER)[0] == 200
    status, _, body = request(remote, "DELETE", f"/api/studies/{remote.ids['keep']}", **BEARER)
    assert status == 403 and READ_ONLY_TEXT.encode() in body
    assert remote.alive("keep")


def run_cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["dashboard", *args])
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (("--host", "0.0.0.0"), None, ("--host 0.0.0.0 is beyond loopback", f"${TOKEN_ENV}", "--token-file PATH")),
        (("--host", "192.168.1.10"), None, ("beyond loopback", "--token-file")),
        (("--host", "0.0.0.0", "--allow-remote"), None, ("--allow-remote is gone", "--token-file PATH", "drop --allow-remote")),
        (("--host", "0.0.0.0"), "short", (f"${TOKEN_ENV} has 5 characters", "at least 16")),
        (("--token", TOKEN), None, ("never given on the command line", TOKEN_ENV)),
        (("--token-file", "/no/such/token"), None, ("--token-file /no/such/token: no such file",)),
        (("--allowed-host", "http://x/"), None, ("--allowed-host 'http://x/' is not a host name",)),
    ],
)
def test_bad_options_are_one_line(capsys, monkeypatch, tmp_path, args, env, fragments):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    if env is not None:
        monkeypatch.setenv(TOKEN_ENV, env)
    code, err = run_cli(capsys, "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--port", "0", *args)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert list(tmp_path.iterdir()) == []  # refused before opening anything


def test_ctrl_c_stops_the_dashboard(tmp_path):
    url, _ = make_studies(tmp_path, "keep")
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_hpo", "dashboard", "--storage", url, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as at a terminal (a background job ignores it)
    )
    try:
        assert process.stdout is not None
        while "press Ctrl-C to stop" not in (line := process.stdout.readline()):
            assert line, process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        stop(process)
    assert process.returncode == 0 and out.strip().endswith("dashboard stopped"), (out, err)
    assert "Traceback" not in err, err


# ---------------------------------------------------------------------------------------- in Chromium


@pytest.fixture(scope="module")
def browser(chromium):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra); it drives Debian's chromium")
    playwright = sync_api.sync_playwright().start()
    launched = playwright.chromium.launch(
        executable_path=chromium.path,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            f"--host-resolver-rules=MAP {ATTACKER} 127.0.0.1",
            # Chromium's own Private/Local Network Access checks would stop the rebound page's fetch before
            # it is sent (Firefox and Safari have none): off, so that the dashboard alone must refuse it.
            "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights,"
            "PrivateNetworkAccessRespectPreflightResults,BlockInsecurePrivateNetworkRequests",
        ],
    )
    yield launched
    launched.close()
    playwright.stop()


def test_in_a_browser_the_token_opens_the_study(guarded, browser):
    page = browser.new_page()
    try:
        response = page.goto(f"{guarded.base}/dashboard/studies/{guarded.ids['keep']}")
        assert response.status == 401
        assert page.get_by_role("button", name="Sign in").is_visible()
        assert "keep (id=" not in page.content()
        page.fill("#token", "not-the-token-0000000")
        page.click("button[type=submit]")
        assert page.get_by_role("alert").inner_text().startswith("That token is not")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.get_by_text(f"keep (id={guarded.ids['keep']})").wait_for(timeout=30_000)
        assert page.url.endswith(f"/dashboard/studies/{guarded.ids['keep']}")
        assert page.get_by_text(READ_ONLY_TEXT).is_visible()
        cookies = page.context.cookies()
        assert [c["name"] for c in cookies] == [f"mnist_hpo_dashboard_{guarded.port}"] and TOKEN not in cookies[0]["value"]
        assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    finally:
        page.close()


def test_in_a_browser_a_read_only_delete_fails_and_the_study_survives(guarded, browser):
    page = browser.new_page()
    try:
        page.goto(f"{guarded.base}/login")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        card = page.locator(".MuiCard-root", has_text=f"{guarded.ids['clicked']}. clicked")
        card.wait_for(timeout=30_000)
        card.get_by_label("delete study").click()
        with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
            page.get_by_role("dialog").get_by_role("button", name="Yes").click()
        assert deleted.value.status == 403 and READ_ONLY_TEXT in deleted.value.text()
        page.get_by_text(f"Failed to delete study (id={guarded.ids['clicked']})").wait_for(timeout=10_000)
    finally:
        page.close()
    assert guarded.alive("clicked")


def test_in_a_browser_a_rebound_page_cannot_delete_a_study(open_dash, browser):
    """DNS rebinding: a page on attacker.example, whose name now points at 127.0.0.1, calls the dashboard as its own origin."""
    evil = f"http://{ATTACKER}:{open_dash.port}"
    page = browser.new_page()
    try:
        response = page.goto(f"{evil}/dashboard")  # what the browser gets once the name points here
        assert response.status == 403 and "does not serve Host" in page.inner_text("body")
        page.route(f"{evil}/evil.html", lambda route: route.fulfill(content_type="text/html", body="<html><body>cats</body></html>"))
        page.goto(f"{evil}/evil.html")  # the attacker's page, served before the name was re-pointed
        status = page.evaluate(f"fetch('/api/studies/{open_dash.ids['rebound']}', {{method: 'DELETE'}}).then(r => r.status)")
        assert status == 403
    finally:
        page.close()
    assert open_dash.alive("rebound")
