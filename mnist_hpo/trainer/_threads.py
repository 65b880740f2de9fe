"""CPU threads for training: as many as this process may use, waiting for each other asleep, never spinning.

The machine's core count is not what a container or a Slurm job may use: its affinity mask and its
cgroup's CPU quota are. And OpenMP threads that spin at every barrier while a neighbour holds the
cores made a 2-core training 60–80× slower; asleep they are 3× (BENCHMARKS.md, "Threads beside a
busy neighbour").
Torch-free at import: the CLI calls ``wait_passively`` before anything loads torch.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import MutableMapping
from pathlib import Path

from mnist_hpo.errors import UserError

#: Set by the user, these say how OpenMP threads wait; unset, libgomp spins ~300,000 times at each barrier first.
WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def wait_passively(environ: MutableMapping[str, str] = os.environ) -> None:
    """OpenMP threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE) unless the user chose how they wait.

    libgomp reads this once, when torch loads it: call this first thing in the process.
    """
    if not any(name in environ for name in WAIT_SETTINGS):
        environ["OMP_WAIT_POLICY"] = "PASSIVE"


def usable_cores(root: str | Path = "/") -> int:
    """The cores this process may use: its affinity mask, lowered by its cgroup's CPU quota (and its parents').

    ``root`` is where /proc and /sys/fs/cgroup are read (a test's made-up tree).
    """
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cores(root)
    return max(1, min(affinity, quota) if quota is not None else affinity)


def default_threads(share: int = 1) -> int:
    """Threads for one of ``share`` processes on this machine: $OMP_NUM_THREADS if the user set it, else a share of the cores."""
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, usable_cores() // max(1, share))


def check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")


def use_threads(threads: int | None = None) -> int:
    """Train on ``threads`` CPU threads (default: ``default_threads()``); returns how many."""
    check_threads(threads)
    count = threads if threads is not None else default_threads()
    import torch

    torch.set_num_threads(count)
    if torch.get_num_interop_threads() > count:
        with contextlib.suppress(RuntimeError):  # only before the first inter-op parallel work, and only once
            torch.set_num_interop_threads(count)
    return count


def cgroup_cores(root: str | Path = "/") -> int | None:
    """Whole cores the CPU quota of this process's cgroup, or any above it, allows (rounded up); None without a quota.

    cgroup v2: ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD"); v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
    (-1: none). A container sees its own cgroup as the mount's root while /proc/self/cgroup may name the
    host's path, so every folder from the named one up to the mount is read, whichever exist.
    """
    base = Path(root)
    try:
        lines = (base / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    limits: list[int] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: the one unified hierarchy (in hybrid mode under unified/)
            for mount in (base / "sys/fs/cgroup", base / "sys/fs/cgroup/unified"):
                limits += [cores for folder in _up(mount, path) if (cores := _v2_cores(folder)) is not None]
        elif "cpu" in controllers.split(","):
            for mount in (base / "sys/fs/cgroup" / controllers, base / "sys/fs/cgroup/cpu"):
                limits += [cores for folder in _up(mount, path) if (cores := _v1_cores(folder)) is not None]
    return min(limits) if limits else None


def _up(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder and each one above it up to the mount: a parent's quota limits its children too."""
    names = [name for name in path.split("/") if name not in ("", ".", "..")]
    return [mount.joinpath(*names[:depth]) for depth in range(len(names), -1, -1)]


def _v2_cores(folder: Path) -> int | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else _whole(int(quota), int(period))
    except (OSError, ValueError):
        return None


def _v1_cores(folder: Path) -> int | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota < 0 else _whole(quota, period)


def _whole(quota: int, period: int) -> int | None:
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None
