"""Pages that fit the window: a style sheet added to optuna-dashboard's HTML page.

optuna-dashboard lays a trial out in a flex box whose main column may not shrink below its widest
line, and a trial's attributes (its learning curve, model spec and training settings, one JSON line
each) are long: at 1,400 px the trial page was 3,744 px wide, the note and attributes off to the
right. Letting the main column shrink and long values wrap keeps every page inside the window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

STYLE = b"<style>main { min-width: 0; } main p, main td { overflow-wrap: anywhere; }</style>"


class FitToWindow:
    """WSGI middleware: adds ``STYLE`` to the head of every HTML page the dashboard serves."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen: dict[str, Any] = {}

        def hold(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            seen.update(status=status, headers=headers, exc_info=exc_info)
            return lambda data: None  # optuna-dashboard returns its bodies; it never calls write()

        body = self.app(environ, hold)
        headers = seen["headers"]
        is_html = any(name.lower() == "content-type" and value.startswith("text/html") for name, value in headers)
        if not is_html:
            start_response(seen["status"], headers, seen["exc_info"])
            return body
        try:
            page = b"".join(body)
        finally:
            if hasattr(body, "close"):
                body.close()
        page = page.replace(b"</head>", STYLE + b"</head>", 1)
        headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
        start_response(seen["status"], [*headers, ("Content-Length", str(len(page)))], seen["exc_info"])
        return [page]
