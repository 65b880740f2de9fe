"""CPU threads: the cores a process may use (affinity, cgroup v1 and v2 quotas, a parent's quota) and passive waiting.

The cgroup tests build the files a kernel shows (/proc/self/cgroup, /sys/fs/cgroup/...) under a
temporary root, as a container, a Slurm job or a systemd slice lays them out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_hpo.errors import UserError
from mnist_hpo.trainer import default_threads, usable_cores, use_threads, wait_passively
from mnist_hpo.trainer._threads import cgroup_cores

AFFINITY = len(os.sched_getaffinity(0))


def tree(root: Path, cgroup: str, files: dict[str, str]) -> Path:
    """A made-up /proc/self/cgroup holding ``cgroup`` and cgroup files by path under root."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_cgroup_v2_quota_rounds_up_to_whole_cores(tmp_path):
    root = tree(tmp_path, "0::/job.slice/step.scope\n", {"sys/fs/cgroup/job.slice/step.scope/cpu.max": "150000 100000\n"})
    assert cgroup_cores(root) == 2


def test_cgroup_v2_a_parents_quota_limits_its_children(tmp_path):
    root = tree(
        tmp_path,
        "0::/user.slice/user-1000.slice/session-3.scope\n",
        {
            "sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope/cpu.max": "max 100000\n",
            "sys/fs/cgroup/user.slice/user-1000.slice/cpu.max": "50000 100000\n",  # half a core: still one thread
            "sys/fs/cgroup/user.slice/cpu.max": "400000 100000\n",
            "sys/fs/cgroup/cpu.max": "max 100000\n",
        },
    )
    assert cgroup_cores(root) == 1


def test_cgroup_v2_max_everywhere_is_no_limit(tmp_path):
    root = tree(tmp_path, "0::/a/b\n", {"sys/fs/cgroup/a/b/cpu.max": "max 100000\n", "sys/fs/cgroup/a/cpu.max": "max 100000\n"})
    assert cgroup_cores(root) is None
    assert usable_cores(root) == AFFINITY


def test_cgroup_v1_container_sees_its_own_cgroup_at_the_mount_root(tmp_path):
    """Docker on cgroup v1: /proc/self/cgroup names the host's path, the mount is the container's own cgroup."""
    root = tree(
        tmp_path,
        "12:pids:/docker/0123abcd\n4:cpu,cpuacct:/docker/0123abcd\n3:cpuset:/docker/0123abcd\n1:name=systemd:/docker/0123abcd\n",
        {"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "300000\n", "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
    )
    assert cgroup_cores(root) == 3


def test_cgroup_v1_minus_one_is_no_limit(tmp_path):
    root = tree(
        tmp_path,
        "2:cpu:/\n",
        {"sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n", "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"},
    )
    assert cgroup_cores(root) is None


def test_no_cgroup_files_is_no_limit(tmp_path):
    assert cgroup_cores(tmp_path) is None
    assert usable_cores(tmp_path) == AFFINITY


def test_usable_cores_is_the_smaller_of_affinity_and_quota(tmp_path):
    root = tree(tmp_path, "0::/\n", {"sys/fs/cgroup/cpu.max": "100000 100000\n"})
    assert usable_cores(root) == 1
    many = tree(tmp_path / "many", "0::/\n", {"sys/fs/cgroup/cpu.max": f"{(AFFINITY + 8) * 100000} 100000\n"})
    assert usable_cores(many) == AFFINITY


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_an_affinity_of_one_core_is_one_core():
    """The real machine, through a real process: `taskset -c 0` leaves it one core, whatever the machine has."""
    code = "from mnist_hpo.trainer import usable_cores; print(usable_cores())"
    pinned = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert pinned.stdout.strip() == "1", pinned.stderr
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert free.stdout.strip() == str(min(AFFINITY, cgroup_cores() or AFFINITY)), free.stderr


def test_waiting_is_passive_unless_the_user_chose():
    environ: dict[str, str] = {}
    wait_passively(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}, {"KMP_BLOCKTIME": "200"}):
        environ = dict(chosen)
        wait_passively(environ)
        assert environ == chosen


def test_default_threads_are_the_users_omp_num_threads_else_a_share_of_the_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    assert default_threads(share=4) == 3  # the user's figure is per process
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads() == usable_cores()
    assert default_threads(share=usable_cores() * 2) == 1


def test_use_threads_sets_torch_and_refuses_zero():
    before = torch.get_num_threads()
    try:
        assert use_threads(1) == 1
        assert torch.get_num_threads() == 1
        with pytest.raises(UserError, match="--threads must be at least 1, got 0"):
            use_threads(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
