"""A worker's own network: a network namespace joined to this host by one veth link, which a test can cut.

The namespace gets the only address (10.216.X.Y, from this process's id, so two test runs on one
machine do not collide); this host's side of the link gets none, only a route to it. The worker
reaches PostgreSQL at 127.0.0.1 across the link: ``route_localnet`` is switched on for the two ends
of this link alone, and the namespace's own loopback stays down, so 127.0.0.1 there is the host's.
The server accepts that address with a password (``PARTITION_NET`` in tests/pg_cluster.py).
``cut()`` takes the host's end down (a pulled cable: packets are dropped, nothing is refused);
``restore()`` plugs it back. Needs root and iproute2's `ip`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def netns_problem() -> str | None:
    """Why namespaces cannot be made here (not root, no `ip`, no permission), or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install -y iproute2)"
    probe = f"mh-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")


def _sysctl(key: str, value: str, namespace: str | None = None) -> None:
    path = f"/proc/sys/{key.replace('.', '/')}"
    if namespace is None:
        Path(path).write_text(value)
        return
    subprocess.run(["ip", "netns", "exec", namespace, "sh", "-c", f"echo {value} > {path}"], check=True)


class WorkerNetwork:
    """One namespace with its link; ``prefix`` runs a command inside it."""

    def __init__(self, tag: int) -> None:
        pid = os.getpid()
        self.name = f"mnist-hpo-{pid}-{tag}"
        short = f"{pid % 100000}{tag}"
        self.host_end, self.worker_end = f"mh{short}h"[:15], f"mh{short}w"[:15]
        self.address = f"10.216.{(pid >> 6) % 250 + 1}.{(pid % 63) * 4 + tag % 3 + 1}"
        self.prefix = ["ip", "netns", "exec", self.name]

    def create(self) -> WorkerNetwork:
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_end, "type", "veth", "peer", "name", self.worker_end, "netns", self.name)
            _sysctl(f"net.ipv4.conf.{self.host_end}.route_localnet", "1")
            _ip("addr", "add", f"{self.address}/32", "dev", self.worker_end, namespace=self.name)
            _ip("link", "set", self.worker_end, "up", namespace=self.name)
            _sysctl(f"net.ipv4.conf.{self.worker_end}.route_localnet", "1", namespace=self.name)
            _ip("route", "add", "default", "dev", self.worker_end, "src", self.address, namespace=self.name)
            self.restore()
        except Exception:
            self.destroy()
            raise
        return self

    def cut(self) -> None:
        _ip("link", "set", self.host_end, "down")  # its route goes with it; packets from the namespace are dropped

    def restore(self) -> None:
        _ip("link", "set", self.host_end, "up")
        _ip("route", "replace", f"{self.address}/32", "dev", self.host_end)

    def destroy(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_end], capture_output=True)  # takes its peer with it
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
