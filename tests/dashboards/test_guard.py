"""The dashboard's guard (dashboards/_guard.py) called as a WSGI app in this process: fast, no server.

The real `mnist-hpo dashboard`, over HTTP and in Chromium, is tested in test_security.py.
"""

from __future__ import annotations

import io
import time
from typing import Any

import pytest

from mnist_hpo.dashboards import _guard
from mnist_hpo.dashboards._guard import Guard, check_token, parse_allowed_host, read_token, served_hosts, split_host
from mnist_hpo.errors import UserError

TOKEN = "a-test-token-0123456789"
PAGE = b"<!DOCTYPE html><html><head></head><body><div id='dashboard'></div></body></html>"


class App:
    """Stands for optuna-dashboard: records what reached it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.calls.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        if environ["PATH_INFO"].startswith("/dashboard"):
            start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(PAGE))), ("ETag", "x")])
            return [PAGE]
        start_response("204 No Content", [])
        return [b""]


def call(guard: Guard, method: str = "GET", path: str = "/api/studies", host: str = "127.0.0.1:8080", body: bytes = b"", **headers: str):
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "HTTP_HOST": host,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        **{f"HTTP_{k.upper()}": v for k, v in headers.items()},
    }
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, response_headers

    data = b"".join(guard(environ, start_response))
    return int(seen["status"].split()[0]), dict(seen["headers"]), data


def guard(read_only: bool = False, token: str | None = None, allowed: tuple[str, ...] = ()) -> tuple[Guard, App]:
    app = App()
    return Guard(app, served_hosts("127.0.0.1", 8080, allowed), 8080, read_only=read_only, token=token), app


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("localhost:8080", ("localhost", 8080)),
        ("LocalHost.:8080", ("localhost", 8080)),
        ("127.0.0.1", ("127.0.0.1", None)),
        ("[::1]:8080", ("[::1]", 8080)),
        ("[0:0::1]:8080", ("[::1]", 8080)),
        ("::1", ("[::1]", None)),
        ("dash.example.org:443", ("dash.example.org", 443)),
        ("", None),
        ("a b", None),
        ("host:0", None),
        ("host:99999", None),
        ("host:80x", None),
        ("[::1", None),
        ("[nothing]:80", None),
        ("evil.example/x", None),
        ("a..b", None),
    ],
)
def test_host_names_are_parsed_strictly(text, parsed):
    assert split_host(text) == parsed


def test_a_foreign_host_never_reaches_the_dashboard():
    g, app = guard()
    for host in ("attacker.example:8080", "attacker.example", "127.0.0.1:8081", "localhost", "127.0.0.1.nip.io:8080", "", "::1"):
        status, _, body = call(g, "DELETE", "/api/studies/1", host=host)
        assert status == 403 and b"does not serve Host" in body, host
    assert app.calls == []
    for host in ("127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080", "[::1]:8080"):
        assert call(g, host=host)[0] == 204, host
    assert len(app.calls) == 4


def test_allowed_host_names_any_port_unless_given():
    g, _ = guard(allowed=("dash.example.org", "other.example:8443"))
    assert call(g, host="dash.example.org")[0] == 204
    assert call(g, host="dash.example.org:8443")[0] == 204
    assert call(g, host="other.example:8443")[0] == 204
    assert call(g, host="other.example")[0] == 403
    assert call(g, host="other.example:443", x_forwarded_proto="https")[0] == 403
    g, _ = guard(allowed=("secure.example:443",))
    assert call(g, host="secure.example", x_forwarded_proto="https")[0] == 204  # no port over https means 443
    assert call(g, host="secure.example")[0] == 403
    for bad in ("a b", "http://x", "0.0.0.0", "x:0", ""):
        with pytest.raises(UserError, match="--allowed-host"):
            parse_allowed_host(bad)


def test_cross_site_writes_are_refused_and_reads_are_not():
    g, app = guard()
    for origin in ("http://attacker.example", "http://127.0.0.1:9999", "null", "http://localhost:8080.evil.example"):
        status, _, body = call(g, "POST", "/api/studies/1/rename", origin=origin)
        assert status == 403 and b"another site" in body, origin
    assert call(g, "DELETE", "/api/studies/1", sec_fetch_site="cross-site")[0] == 403
    assert app.calls == []
    assert call(g, "GET", origin="http://attacker.example", sec_fetch_site="cross-site")[0] == 204  # reading is the CSP's and CORS' job
    assert call(g, "DELETE", "/api/studies/1", origin="http://localhost:8080", sec_fetch_site="same-origin")[0] == 204
    assert call(g, "DELETE", "/api/studies/2")[0] == 204  # no Origin: curl, scripts
    assert app.calls[-2:] == [("DELETE", "/api/studies/1"), ("DELETE", "/api/studies/2")]


def test_read_only_refuses_every_write_and_marks_the_page():
    g, app = guard(read_only=True)
    for method, path in (("DELETE", "/api/studies/1"), ("PUT", "/api/studies/1/note"), ("POST", "/api/trials/1/tell"), ("PATCH", "/x")):
        status, _, body = call(g, method, path)
        assert status == 403 and b"read-only: this dashboard cannot change studies" in body, (method, path)
    assert app.calls == []
    status, headers, page = call(g, "GET", "/dashboard/studies/1", if_none_match="x")
    assert status == 200 and _guard.READ_ONLY_BANNER.encode() in page
    assert page.index(b"<body>") < page.index(b"mnist-hpo-read-only") < page.index(b"id='dashboard'")
    assert headers["Content-Length"] == str(len(page)) and "ETag" not in headers
    _, _, plain = call(guard()[0], "GET", "/dashboard/studies/1")
    assert plain == PAGE


def test_a_token_is_needed_for_every_request_and_a_page_asks_for_it():
    g, app = guard(token=TOKEN)
    status, headers, body = call(g, "GET", "/api/studies")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer") and b"<form" not in body
    status, headers, body = call(g, "GET", "/dashboard/studies/1")
    assert status == 401 and b'<form method="post" action="/login">' in body and b'value="/dashboard/studies/1"' in body
    assert call(g, "GET", authorization=f"Bearer {TOKEN}x")[0] == 401
    assert call(g, "DELETE", "/api/studies/1")[0] == 401
    assert app.calls == []
    assert call(g, "GET", authorization=f"Bearer {TOKEN}")[0] == 204
    assert call(g, "GET", authorization=f"bearer  {TOKEN} ")[0] == 204


def test_signing_in_sets_a_cookie_that_is_not_the_token():
    g, _ = guard(token=TOKEN)
    status, _, body = call(g, "POST", "/login", body=b"token=wrong-token-0123456789&next=/dashboard/studies/3")
    assert status == 401 and b"not the one this dashboard was started with" in body
    status, headers, _ = call(g, "POST", "/login", body=f"token={TOKEN}&next=/dashboard/studies/3".encode())
    assert status == 303 and headers["Location"] == "/dashboard/studies/3"
    cookie = headers["Set-Cookie"]
    name, _, rest = cookie.partition("=")
    value = rest.split(";")[0]
    assert name == "mnist_hpo_dashboard_8080" and TOKEN not in cookie
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {part.strip() for part in cookie.split(";")} and "Secure" not in cookie
    assert call(g, "GET", cookie=f"other=1; {name}={value}")[0] == 204
    tampered = value[:-1] + ("0" if value[-1] != "0" else "1")
    assert call(g, "GET", cookie=f"{name}={tampered}")[0] == 401
    assert call(g, "GET", cookie=f"{name}={TOKEN}")[0] == 401
    other, _ = guard(token=TOKEN)  # another server (a restart): its own secret
    assert call(other, "GET", cookie=f"{name}={value}")[0] == 401

    _, headers, _ = call(g, "POST", "/login", body=f"token={TOKEN}".encode(), x_forwarded_proto="https")
    assert headers["Set-Cookie"].endswith("; Secure") and headers["Location"] == "/dashboard"
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example", "/login"):
        _, headers, _ = call(g, "POST", "/login", body=f"token={TOKEN}&next={target}".encode())
        assert headers["Location"] == "/dashboard", target
    status, headers, _ = call(g, "POST", "/login", body=f"token={TOKEN}".encode(), origin="http://attacker.example")
    assert status == 403 and "Set-Cookie" not in headers


def test_an_old_cookie_expires(monkeypatch):
    g, _ = guard(token=TOKEN)
    _, headers, _ = call(g, "POST", "/login", body=f"token={TOKEN}".encode())
    pair = headers["Set-Cookie"].split(";")[0]
    monkeypatch.setattr(time, "time", lambda: _real_time() + _guard.SESSION_S + 1)
    assert call(g, "GET", cookie=pair)[0] == 401


_real_time = time.time


def test_tokens_come_from_the_environment_or_a_file_and_are_long_enough(tmp_path):
    assert read_token(None, {}) is None
    assert read_token(None, {_guard.TOKEN_ENV: f"  {TOKEN}\n"}) == TOKEN
    (tmp_path / "token").write_text(TOKEN + "\n")
    assert read_token(tmp_path / "token", {}) == TOKEN
    with pytest.raises(UserError, match="both"):
        read_token(tmp_path / "token", {_guard.TOKEN_ENV: TOKEN})
    with pytest.raises(UserError, match="no such file"):
        read_token(tmp_path / "missing", {})
    with pytest.raises(UserError, match="has 5 characters; use at least 16"):
        check_token("short", "$X")
    with pytest.raises(UserError, match="printable ASCII"):
        check_token("a token with spaces in it", "$X")
