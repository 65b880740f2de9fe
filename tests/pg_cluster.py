"""A throwaway PostgreSQL server: initdb + pg_ctl on a free loopback port, password authentication.

Used by the tests (the session fixture `postgres` in tests/conftest.py) and by benchmarks/storage_overhead.py.
The binaries come from Debian's `postgresql` package (/usr/lib/postgresql/VERSION/bin); initdb
refuses to run as root, so as root every server command runs as the `postgres` user (runuser).
It listens on 127.0.0.1 only; a worker in a network namespace of tests/netns.py reaches that address
over its own veth link, from an address in PARTITION_NET, which pg_hba.conf admits with a password.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PASSWORD = "pg-s3cret-Pw"
SUPERUSER = "postgres"
PARTITION_NET = "10.216.0.0/16"  # tests/netns.py's worker namespaces


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb and pg_ctl, else None."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0
    )
    for candidate in reversed(candidates):
        if os.access(os.path.join(candidate, "initdb"), os.X_OK) and os.access(os.path.join(candidate, "pg_ctl"), os.X_OK):
            return Path(candidate)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """One server in a fresh temporary directory; `url(db)` gives a postgresql+psycopg:// URL for it."""

    def __init__(self, bin_dir: Path | None = None, max_connections: int = 300) -> None:
        found = bin_dir or find_bin_dir()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
        self.bin_dir = found
        self.base = Path(tempfile.mkdtemp(prefix="mnist-hpo-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sockets"
        self.log = self.base / "server.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.max_connections = max_connections  # PostgreSQL's own default is 100 (benchmarks/scale.py uses it)

    # --- server ---------------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}\n{self.server_log()}"
            )
        return done

    def server_log(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return ""

    def start(self) -> PostgresCluster:
        self.sockets.mkdir(parents=True)
        pwfile = self.base / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            shutil.chown(self.base, SUPERUSER)
            shutil.chown(self.sockets, SUPERUSER)
            shutil.chown(pwfile, SUPERUSER)
        atexit.register(self.stop)  # a script that dies before stop() leaves no server behind
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        pwfile.unlink()
        with open(self.data / "pg_hba.conf", "a") as hba:  # workers in their own network namespace, password only
            hba.write(f"host all all {PARTITION_NET} scram-sha-256\n")
        self._pg_ctl("start")
        self.create_database("hpo")
        return self

    def _options(self) -> str:
        return (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off -c max_connections={self.max_connections} -c shared_buffers=64MB"
        )

    def _pg_ctl(self, action: str, *extra: str) -> None:
        self._run("pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", self._options(), *extra)

    def restart(self) -> None:
        """Fast restart: every client connection is cut, the server comes back on the same port."""
        self._pg_ctl("restart", "-m", "fast")

    def pause(self) -> None:
        """Stop the server (clients lose their connections); resume() starts it again on the same port."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60")

    def resume(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "60")
        shutil.rmtree(self.base, ignore_errors=True)

    # --- databases ------------------------------------------------------------------------

    def url(self, database: str = "hpo", password: str = PASSWORD) -> str:
        return f"postgresql+psycopg://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def dump(self, database: str) -> bytes:
        """Every byte a database holds, as pg_dump writes it (plain SQL, data included)."""
        command = [str(self.bin_dir / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "--no-password", database]
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        return subprocess.run(command, capture_output=True, check=True, timeout=120, env=env, stdin=subprocess.DEVNULL).stdout

    def create_database(self, name: str) -> str:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user=SUPERUSER,
                    password=PASSWORD,
                    dbname="postgres",
                    autocommit=True,
                    connect_timeout=5,
                ) as connection:
                    connection.execute(f'CREATE DATABASE "{name}"')
                return self.url(name)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
