"""A one-line description of the machine, for every figure written to BENCHMARKS.md."""

from __future__ import annotations

import datetime
import os
import platform
import re


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def describe() -> str:
    import torch  # here: tag() is for the harness that starts the runs, which never loads torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu_model()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, {datetime.date.today().isoformat()}"


def tag() -> str:
    """The CPU and its cores as part of a file name ("intel-xeon-2c"): timed runs of different machines never mix."""
    words = re.findall(r"[a-z0-9]+", re.sub(r"\((r|tm)\)", " ", cpu_model().lower()))
    return "-".join(w for w in words if w not in ("processor", "cpu")) + f"-{os.cpu_count()}c"
