"""Training beside a busy neighbour: the same `mnist-hpo train` alone and beside a process spinning on every core.

A fair share of the cores beside a neighbour that keeps them all busy is about 2× slower. OpenMP
threads that spin at every barrier while the neighbour holds the cores made a 2-core training 80×
slower (issue 24). Each setting trains alone and beside the neighbour, interleaved in this one run;
"beside / alone" is the slowdown, "alone vs default" compares a setting's alone time with the
default's. The time is the training phase (the epoch lines' images ÷ images/s, start-up and
validation left out); "wall" is the whole command.

    python -m benchmarks.threads [--model tiny-cnn] [--epochs 3] [--subset 4000] [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import describe
from mnist_hpo.trainer import usable_cores

CLI = [sys.executable, "-m", "mnist_hpo"]
EPOCH_LINE = re.compile(r"^epoch \d+/\d+ .* ([\d,]+) images/s", re.MULTILINE)
SPIN = "while True: pass"
#: (label, extra environment, extra arguments); OMP_NUM_THREADS is never set, so mnist-hpo chooses the thread count.
SETTINGS = [
    ("default: usable cores, OMP_WAIT_POLICY=PASSIVE", {}, []),
    ("--threads 1", {}, ["--threads", "1"]),
    ("before: usable cores, libgomp's spin (GOMP_SPINCOUNT=300000)", {"GOMP_SPINCOUNT": "300000"}, []),
    ("usable cores, OMP_WAIT_POLICY=ACTIVE", {"OMP_WAIT_POLICY": "ACTIVE"}, []),
]


def train_once(args: argparse.Namespace, env: dict[str, str], extra: list[str]) -> tuple[float, float]:
    """(training seconds, wall seconds) of one `mnist-hpo train`; the training seconds from its epoch lines."""
    command = [*CLI, "train", "--model", args.model, "--epochs", str(args.epochs), "--subset", str(args.subset)]
    command += ["--data", args.data, "--device", "cpu", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.limit, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    rates = [float(rate.replace(",", "")) for rate in EPOCH_LINE.findall(done.stdout)]
    if done.returncode != 0 or len(rates) != args.epochs:
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    images = int(re.search(r"([\d,]+) train / ", done.stdout).group(1).replace(",", ""))
    return sum(images / rate for rate in rates), wall


def neighbour(cores: int) -> list[subprocess.Popen]:
    """One process spinning per core: a neighbour that keeps every core this process may use busy."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(cores)]
    time.sleep(0.5)
    return spinners


def stop(spinners: list[subprocess.Popen]) -> None:
    for spinner in spinners:
        spinner.kill()
        spinner.wait()


def measure(args: argparse.Namespace, cores: int) -> dict[str, dict[str, list[float]]]:
    """Every setting alone and beside the neighbour, --repeats times, interleaved so drift hits all alike."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    times: dict[str, dict[str, list[float]]] = {
        label: {"alone": [], "beside": [], "wall alone": [], "wall beside": []} for label, *_ in SETTINGS
    }
    for repeat in range(args.repeats):
        for label, env, extra in SETTINGS:
            for where in ("alone", "beside"):
                spinners = neighbour(cores) if where == "beside" else []
                try:
                    seconds, wall = train_once(args, {**base, **env}, extra)
                finally:
                    stop(spinners)
                times[label][where].append(seconds)
                times[label][f"wall {where}"].append(wall)
                print(f"  repeat {repeat + 1}: {label}, {where}: {seconds:.2f} s training, {wall:.1f} s wall", flush=True)
    return times


def table(times: dict[str, dict[str, list[float]]]) -> list[dict[str, float | str]]:
    """Print medians, the worst run beside the neighbour (the spin's slowdowns come and go) and the ratios."""
    default_alone = statistics.median(times[SETTINGS[0][0]]["alone"])
    print(
        f"{'setting':<62} {'alone s':>8} {'beside s':>9} {'worst beside s':>15} {'beside / alone':>15} {'worst / alone':>14} "
        f"{'alone vs default':>17} {'wall alone':>11} {'wall beside':>12}"
    )
    rows = []
    for label, *_ in SETTINGS:
        alone, beside = statistics.median(times[label]["alone"]), statistics.median(times[label]["beside"])
        worst = max(times[label]["beside"])
        walls = statistics.median(times[label]["wall alone"]), statistics.median(times[label]["wall beside"])
        rows.append({"setting": label, "alone_s": alone, "beside_s": beside, "worst_beside_s": worst, "vs_default": alone / default_alone})
        print(
            f"{label:<62} {alone:>8.2f} {beside:>9.2f} {worst:>15.2f} {beside / alone:>14.1f}× {worst / alone:>13.1f}× "
            f"{alone / default_alone:>16.2f}× {walls[0]:>10.1f}s {walls[1]:>11.1f}s"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-cnn")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--subset", type=int, default=4000, help="training images per epoch")
    parser.add_argument("--data", default="fixture")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=float, default=900, help="seconds one training may take before the run fails")
    parser.add_argument("--out", type=Path, default=None, help="result file (default: threads-DATE-TIME.json here)")
    parser.add_argument("--read", type=Path, default=None, help="run nothing: print the table of this result file")
    args = parser.parse_args()
    if args.read:
        result = json.loads(args.read.read_text())
        print(f"machine: {result['machine']}; {result['cores']} cores; {result['args']}")
        table(result["times"])
        return
    cores = usable_cores()
    print(f"machine: {describe()}; this process may use {cores} cores; load average before: {os.getloadavg()[0]:.2f}")
    print(f"workload: mnist-hpo train --model {args.model} --epochs {args.epochs} --subset {args.subset} --data {args.data}")
    print(f"neighbour: {cores} processes spinning in Python ({SPIN!r}); median of {args.repeats}")
    times = measure(args, cores)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    rows = table(times)
    out = args.out or Path(f"threads-{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
    result = {"machine": describe(), "cores": cores, "args": {**vars(args), "out": str(out), "read": None}, "rows": rows, "times": times}
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
