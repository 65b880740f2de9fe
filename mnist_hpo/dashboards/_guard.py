"""Who may use `mnist-hpo dashboard`: a WSGI middleware in front of optuna-dashboard.

In order, for every request:

1. **Host.** The ``Host`` header must name this server: ``localhost``, ``127.0.0.1``, ``[::1]`` or the
   address it listens on, with the port it serves, or a name given with ``--allowed-host NAME[:PORT]``.
   Anything else is refused (403): a web page whose name was re-pointed at 127.0.0.1 (DNS rebinding)
   reaches the port, but its requests carry its own name.
2. **Cross-site writes.** A request that may change something (any method but GET, HEAD and OPTIONS,
   the sign-in form included) is refused when its ``Origin`` is present and is not one of the hosts
   above (``Origin: null`` included), or when the browser says ``Sec-Fetch-Site: cross-site``.
3. **The token**, when one is set: ``Authorization: Bearer TOKEN``, or the cookie that signing in at
   ``/login`` sets. The cookie holds ``ISSUED.NONCE.HMAC``: a MAC under a random secret made when the
   server starts, never the token; it lasts 7 days or until the server restarts. A browser without it
   asking for a page gets the sign-in form (401); anything else gets a plain 401.
4. **Read-only**: every request but GET, HEAD and OPTIONS is refused (403, saying so), and the
   dashboard's pages carry a banner saying so.

Tokens are compared with ``hmac.compare_digest``. ``X-Forwarded-Proto: https`` (from the ingress or
proxy that ends TLS) only adds ``Secure`` to the cookie and makes a Host without a port mean 443;
``X-Forwarded-Host`` and ``Forwarded`` are never trusted, and are removed before optuna-dashboard sees them.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_hpo.errors import UserError

TOKEN_ENV = "MNIST_HPO_DASHBOARD_TOKEN"
MIN_TOKEN_LENGTH = 16
SESSION_S = 7 * 24 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
READ_ONLY_TEXT = "read-only: this dashboard cannot change studies"
READ_ONLY_BANNER = (  # a pill on the right of optuna-dashboard's app bar (fixed, 64 px high), where it covers nothing
    '<div id="mnist-hpo-read-only" role="status" style="position:fixed;top:14px;right:16px;z-index:2000;padding:4px 12px;'
    "background:#fff3cd;color:#664d03;border:1px solid #e0c97a;border-radius:16px;font:600 14px/1.4 system-ui,sans-serif;"
    f'box-shadow:0 1px 3px #0003">{READ_ONLY_TEXT}</div>'
)
_HOSTNAME = re.compile(r"^[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: it must travel in a header

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


# ------------------------------------------------------------------------------------------ host names


def split_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a Host header or NAME[:PORT], normalised (lower case, IPv6 in brackets); None if malformed."""
    value = value.strip().lower()
    if not value:
        return None
    if value.startswith("["):
        close = value.find("]")
        name, rest = value[1:close], value[close + 1 :]
        if close < 0 or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
        try:
            name = f"[{ipaddress.IPv6Address(name).compressed}]"
        except ValueError:
            return None
    elif value.count(":") > 1:  # a bare IPv6 address (only where a port cannot follow: --allowed-host, --host)
        try:
            return f"[{ipaddress.IPv6Address(value).compressed}]", None
        except ValueError:
            return None
    else:
        name, _, port_text = value.partition(":") if ":" in value else (value, "", None)
        name = name.removesuffix(".")
        try:
            name = str(ipaddress.IPv4Address(name))
        except ValueError:
            if not _HOSTNAME.match(name) or ".." in name:
                return None
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return name, int(port_text)


def parse_allowed_host(spec: str) -> tuple[str, int | None]:
    """``--allowed-host NAME[:PORT]``: the name, and the port (None: any port)."""
    parsed = split_host(spec)
    if parsed is None or parsed[0] in ("0.0.0.0", "[::]"):
        raise UserError(f"--allowed-host {spec!r} is not a host name: give NAME or NAME:PORT, e.g. --allowed-host dashboard.example.org")
    return parsed


def served_hosts(host: str, port: int, allowed: Iterable[str] = ()) -> frozenset[tuple[str, int | None]]:
    """The (name, port) pairs a Host header may carry: loopback names and the listening address on ``port``, and ``allowed``."""
    bound = split_host(host.strip("[]") if host.count(":") > 1 else host)
    names = {*LOOPBACK_NAMES, *([bound[0]] if bound else [])}
    return frozenset({(name, port) for name in names} | {parse_allowed_host(spec) for spec in allowed})


def show_hosts(hosts: Iterable[tuple[str, int | None]]) -> str:
    return ", ".join(sorted(name if port is None else f"{name}:{port}" for name, port in hosts))


# ------------------------------------------------------------------------------------------------ token


def check_token(token: str, where: str) -> str:
    """The token without surrounding white space; UserError if it is too short or cannot travel in a header."""
    token = token.strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise UserError(
            f"the dashboard token from {where} has {len(token)} characters; use at least {MIN_TOKEN_LENGTH}, "
            "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if not _TOKEN.match(token):
        raise UserError(
            f"the dashboard token from {where} holds spaces or characters other than printable ASCII; use letters, digits and -_."
        )
    return token


def read_token(token_file: str | Path | None, environ: dict[str, str]) -> str | None:
    """The token from ``--token-file`` or ``$MNIST_HPO_DASHBOARD_TOKEN`` (never from the command line), checked."""
    from_env = environ.get(TOKEN_ENV, "").strip()
    if token_file is not None and from_env:
        raise UserError(f"both ${TOKEN_ENV} and --token-file give a dashboard token; give it one way")
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"--token-file {token_file}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"--token-file {token_file}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
        return check_token(text, f"--token-file {token_file}")
    return check_token(from_env, f"${TOKEN_ENV}") if from_env else None


# ------------------------------------------------------------------------------------------- middleware


@dataclass
class Guard:
    """The WSGI app in front of optuna-dashboard's: Host, Origin, token, read-only (see the module's docstring)."""

    app: WSGIApp
    hosts: frozenset[tuple[str, int | None]]
    port: int
    read_only: bool = False
    token: str | None = None

    def __post_init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self.cookie = f"mnist_hpo_dashboard_{self.port}"  # cookies ignore ports: two dashboards on one host keep theirs

    # -- the request

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        https = _https(environ)
        host = environ.get("HTTP_HOST", "")
        if not self.serves(host, https):
            return _text(
                start_response,
                "403 Forbidden",
                f"refused: this dashboard does not serve Host {host!r} (it serves {show_hosts(self.hosts)}; "
                "start it with --allowed-host NAME to add one)",
            )
        if method not in SAFE_METHODS:
            refusal = self._cross_site(environ, https)
            if refusal:
                return _text(start_response, "403 Forbidden", refusal)
        path = environ.get("PATH_INFO", "") or "/"
        if self.token is not None:
            if path.rstrip("/") == "/login":
                return self._login(environ, start_response, method, https)
            if not self._signed_in(environ):
                if method in ("GET", "HEAD") and _wants_page(environ, path):
                    return self._login_page(start_response, "401 Unauthorized", "", _path_and_query(environ))
                return _text(
                    start_response,
                    "401 Unauthorized",
                    "authentication required: send Authorization: Bearer TOKEN, or sign in at /login",
                    [("WWW-Authenticate", 'Bearer realm="mnist-hpo dashboard"')],
                )
        if self.read_only and method not in SAFE_METHODS:
            return _text(start_response, "403 Forbidden", f"{READ_ONLY_TEXT} (started with --read-only); nothing was changed")
        for forwarded in ("HTTP_X_FORWARDED_HOST", "HTTP_FORWARDED"):  # never trusted: bottle would build URLs from them
            environ.pop(forwarded, None)
        if self.read_only and method == "GET" and (path == "/dashboard" or path.startswith("/dashboard/")):
            return self._with_banner(environ, start_response)
        return self.app(environ, _framed(start_response))

    def serves(self, host: str, https: bool = False) -> bool:
        parsed = split_host(host) if host.count(":") <= 1 or host.startswith("[") else None
        if parsed is None:
            return False
        name, port = parsed
        if port is None:
            port = 443 if https else 80
        return (name, port) in self.hosts or (name, None) in self.hosts

    def _cross_site(self, environ: dict[str, Any], https: bool) -> str | None:
        if environ.get("HTTP_SEC_FETCH_SITE", "").lower() == "cross-site":
            return "refused: a cross-site request may not change anything here (Sec-Fetch-Site: cross-site)"
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            return None
        parts = urllib.parse.urlsplit(origin.strip())
        ok = (
            parts.scheme in ("http", "https")
            and parts.netloc
            and not parts.path.strip("/")
            and self.serves(parts.netloc, parts.scheme == "https")
        )
        return None if ok else f"refused: a request from another site ({origin!r}) may not change anything here"

    # -- the token and the cookie

    def _signed_in(self, environ: dict[str, Any]) -> bool:
        assert self.token is not None
        scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
        if scheme.lower() == "bearer" and given:
            return hmac.compare_digest(given.strip().encode("latin-1", "replace"), self.token.encode())
        return any(self._valid_cookie(value) for value in _cookies(environ, self.cookie))

    def _session_value(self, issued: int, nonce: str) -> str:
        mac = hmac.new(self._secret, f"{issued}.{nonce}".encode(), hashlib.sha256).hexdigest()
        return f"{issued}.{nonce}.{mac}"

    def _valid_cookie(self, value: str) -> bool:
        issued_text, _, rest = value.partition(".")
        nonce, _, _mac = rest.partition(".")
        if not issued_text.isdigit() or not nonce:
            return False
        issued = int(issued_text)
        expected = self._session_value(issued, nonce)
        return hmac.compare_digest(value.encode("latin-1", "replace"), expected.encode()) and 0 <= time.time() - issued < SESSION_S

    def _login(self, environ: dict[str, Any], start_response: StartResponse, method: str, https: bool) -> Iterable[bytes]:
        if method in ("GET", "HEAD"):
            query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            return self._login_page(start_response, "200 OK", "", _safe_next(query.get("next", [""])[0]))
        if method != "POST":
            return _text(start_response, "405 Method Not Allowed", "use GET or POST on /login", [("Allow", "GET, HEAD, POST")])
        try:
            length = min(int(environ.get("CONTENT_LENGTH") or 0), 16_384)
        except ValueError:
            length = 0
        form = urllib.parse.parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace")) if length > 0 else {}
        given = form.get("token", [""])[0].strip()
        target = _safe_next(form.get("next", [""])[0])
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode()):  # type: ignore[union-attr]
            return self._login_page(
                start_response, "401 Unauthorized", "That token is not the one this dashboard was started with.", target
            )
        value = self._session_value(int(time.time()), secrets.token_hex(16))
        cookie = f"{self.cookie}={value}; Path=/; Max-Age={SESSION_S}; HttpOnly; SameSite=Strict" + ("; Secure" if https else "")
        start_response(
            "303 See Other", [("Location", target), ("Set-Cookie", cookie), ("Cache-Control", "no-store"), ("Content-Length", "0")]
        )
        return [b""]

    def _login_page(self, start_response: StartResponse, status: str, error: str, target: str) -> Iterable[bytes]:
        page = LOGIN_PAGE.format(
            banner=READ_ONLY_BANNER if self.read_only else "",
            error=f'<p class="error" role="alert">{html.escape(error)}</p>' if error else "",
            next=html.escape(target, quote=True),
        ).encode()
        start_response(
            status,
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(page))),
                ("Cache-Control", "no-store"),
                ("X-Frame-Options", "DENY"),
                ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
            ],
        )
        return [page]

    # -- the read-only banner

    def _with_banner(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ = {k: v for k, v in environ.items() if k not in ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_RANGE")}
        seen: dict[str, Any] = {}
        written: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            seen["status"], seen["headers"] = status, headers
            return written.append

        result = self.app(environ, capture)
        try:
            body = b"".join([*written, *result])
        finally:
            if hasattr(result, "close"):
                result.close()
        status, headers = seen["status"], seen["headers"]
        content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
        if status.startswith("200") and content_type.startswith("text/html"):
            body = re.sub(rb"<body[^>]*>", lambda m: m.group(0) + READ_ONLY_BANNER.encode(), body, count=1)
            headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "etag", "last-modified", "cache-control")]
            headers += [("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        _framed(start_response)(status, headers)
        return [body]


LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in - mnist-hpo dashboard</title>
<style>body{{margin:0;font:16px/1.5 system-ui,sans-serif;background:#f5f6f8;color:#222}}
main{{max-width:380px;margin:12vh auto;padding:24px 28px;background:#fff;border-radius:8px;box-shadow:0 1px 4px #0002}}
h1{{font-size:20px;margin:0 0 12px}}label{{display:block;margin:12px 0 4px}}
input[type=password]{{width:100%;box-sizing:border-box;padding:8px;font:inherit}}
button{{margin-top:16px;padding:8px 20px;font:inherit;cursor:pointer}}.error{{color:#b00020}}</style></head>
<body>{banner}<main><h1>mnist-hpo dashboard</h1>
<p>This dashboard asks for the token it was started with.</p>{error}
<form method="post" action="/login"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{next}"><button type="submit">Sign in</button></form></main></body></html>
"""


def _https(environ: dict[str, Any]) -> bool:
    forwarded = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[0].strip().lower()
    return forwarded == "https" or environ.get("wsgi.url_scheme") == "https"


def _wants_page(environ: dict[str, Any], path: str) -> bool:
    return path in ("/", "") or path == "/dashboard" or path.startswith("/dashboard/") or "text/html" in environ.get("HTTP_ACCEPT", "")


def _path_and_query(environ: dict[str, Any]) -> str:
    path = urllib.parse.quote(environ.get("PATH_INFO", "") or "/", safe="/:@!$&'()*+,;=-._~")
    query = environ.get("QUERY_STRING", "")
    return _safe_next(f"{path}?{query}" if query else path)


def _safe_next(target: str) -> str:
    """A path on this server to go to after signing in; anything else (another site included) is /dashboard."""
    if (
        not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or any(c in target for c in "\r\n\\")
        or target.rstrip("/") == "/login"
    ):
        return "/dashboard"
    return target


def _cookies(environ: dict[str, Any], name: str) -> list[str]:
    values = []
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            values.append(value.strip())
    return values


def _framed(start_response: StartResponse) -> StartResponse:
    """Add X-Frame-Options: SAMEORIGIN (no other site may frame the dashboard to steer clicks into it)."""

    def with_header(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if not any(k.lower() == "x-frame-options" for k, _ in headers):
            headers = [*headers, ("X-Frame-Options", "SAMEORIGIN")]
        return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

    return with_header


def _text(start_response: StartResponse, status: str, message: str, extra: list[tuple[str, str]] | None = None) -> Iterable[bytes]:
    body = (message + "\n").encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
    ]
    start_response(status, headers + (extra or []))
    return [body]
