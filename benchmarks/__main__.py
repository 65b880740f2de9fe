"""Run every benchmark, print its table and append the output to BENCHMARKS.md with the machine.

    python -m benchmarks [--only train_throughput,search_efficiency,dashboard_latency,storage_overhead,gpu_packing]

gpu_packing runs only where a GPU is visible; `bash benchmarks/gpu.sh` runs the GPU set on its own.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.machine import describe

BENCHMARKS = ("train_throughput", "search_efficiency", "dashboard_latency", "storage_overhead", "gpu_packing")
GPU_ONLY = {"gpu_packing"}
RESULTS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    args = parser.parse_args()
    sections = []
    for name in args.only.split(","):
        if not (Path(__file__).parent / f"{name}.py").exists():
            print(f"skipping {name}: not present")
            continue
        if name in GPU_ONLY and not torch.cuda.is_available():
            print(f"skipping {name}: it needs a GPU and none is visible")
            continue
        print(f"== {name}", flush=True)
        done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], capture_output=True, text=True)
        print(done.stdout + done.stderr[-2000:] if done.returncode else done.stdout, flush=True)
        status = "" if done.returncode == 0 else f" (exit {done.returncode})"
        sections.append(f"### {name}{status}\n\n```\n{done.stdout.strip()}\n```\n")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## Run of {stamp} — {describe()}\n\n" + "\n".join(sections))
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
