"""A throwaway MLflow tracking server (`mlflow server` on a free loopback port, SQLite backend) and a
reverse proxy in front of it that asks for HTTP basic auth, as a shared deployment behind nginx would.

The server runs in a session (process group) of its own, so stopping it stops its uvicorn child too.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def mlflow_server_command() -> list[str] | None:
    """How to start `mlflow server` from this interpreter's environment, or None if mlflow is missing."""
    script = Path(sys.executable).with_name("mlflow")
    if script.exists():
        return [str(script)]
    found = shutil.which("mlflow")
    return [found] if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    def __init__(self, folder: Path) -> None:
        command = mlflow_server_command()
        if command is None:
            raise RuntimeError("mlflow is not installed: pip install -e '.[mlflow]'")
        self.command, self.folder = command, folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = folder / "mlflow.db"
        self.log = folder / "mlflow-server.log"
        self.process: subprocess.Popen | None = None

    def launch(self) -> MlflowServer:
        """Start the server and return at once (it takes ~20 s to answer: see ``wait``)."""
        # no job runner (a dozen huey processes), no coverage of a server that runs none of our code
        env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        args = ["server", "--backend-store-uri", f"sqlite:///{self.db}", "--artifacts-destination", str(self.folder / "artifacts")]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [*self.command, *args], cwd=self.folder, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        atexit.register(self.stop)
        return self

    def wait(self, timeout: float = 150) -> MlflowServer:
        """Return once /health answers; fail if the server exits or does not answer in time."""
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.process.returncode}): {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.25)
        raise RuntimeError(f"mlflow server did not answer on {self.url} within {timeout:g} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM to the server's own process group (the `mlflow` command and its uvicorn), then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        group = self.process.pid  # the session leader: its group id is its pid
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # what is left of the group (uvicorn, if the command exited first)


class AuthProxy:
    """HTTP basic auth in front of ``upstream``: requests with the right credentials pass, the rest get 401."""

    def __init__(self, upstream_port: int, user: str, password: str) -> None:
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.passed = self.refused = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                allowed = self.headers.get("Authorization") == proxy.expected
                with proxy._lock:
                    proxy.passed += allowed
                    proxy.refused += not allowed
                if not allowed:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                skip = ("host", "authorization", "connection")
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                upstream.request(
                    self.command, self.path, body=body, headers={k: v for k, v in self.headers.items() if k.lower() not in skip}
                )
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = forward

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> AuthProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
