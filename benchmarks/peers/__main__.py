"""Search efficiency against peers: the same objective driven by mnist-hpo, Optuna, random search, Ray Tune and Syne Tune.

    python -m benchmarks.peers [--tasks quick,small,pareto,paper-space] [--systems mnist-hpo,optuna-default,random,...]
        [--seeds N | --seeds 0,3,4] [--budget-seconds S] [--data mnist|fixture] [--epochs N] [--epoch-images N]
        [--population N] [--exploit-every K] [--results DIR] [--force]
    python -m benchmarks.peers --read [--tasks ...] [--results DIR]

Every run is one (system, task, seed): its own process, alone on the machine (runs go one after
the other, systems interleaved within each seed), trials one at a time on all the cores the process
may use. A run whose result file exists is skipped (runs accumulate over days; --force runs it
again). Result files name the machine (its CPU and cores: a budget in seconds buys more on a faster
one), so runs of different machines accumulate side by side and never share a table. After the runs,
or with --read alone, the tables and one picture per task and machine are rebuilt from every result
file in --results. Systems whose packages are missing are skipped with the reason
(`pip install -e '.[peers]'` installs Ray Tune and Syne Tune).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.peers._tasks import RESULTS, ROOT, SYSTEMS, TASKS, condition, result_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}")
    parser.add_argument(
        "--seeds", type=parse_seeds, help="a count (seeds 0..N-1) or a comma-separated list; default: each task's (quick 5, others 3)"
    )
    parser.add_argument("--budget-seconds", type=float, help="seconds per run (default: each task's, 600)")
    parser.add_argument(
        "--data", choices=("mnist", "fixture"), default="mnist", help="fixture: the bundled 5k-image subset, for short runs"
    )
    parser.add_argument("--epochs", type=int, help="most epochs per trial (default: the task's, else its profile's)")
    parser.add_argument("--epoch-images", type=int, help="training images per epoch (default: the task's, else its profile's)")
    parser.add_argument("--population", type=int, help="mnist-hpo-pbt and ray-pbt: members (default: the profile's, quick 8)")
    parser.add_argument(
        "--exploit-every",
        type=int,
        help="mnist-hpo-pbt and ray-pbt: epochs between exploit steps (default: the task's, else its profile's; quick 2)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the result files are (default: %(default)s)")
    parser.add_argument("--read", action="store_true", help="run nothing: rebuild the tables and pictures from the result files")
    parser.add_argument("--force", action="store_true", help="run again where a result file exists")
    args = parser.parse_args(argv)
    for kind, known in (("tasks", TASKS), ("systems", SYSTEMS)):
        unknown = [n for n in getattr(args, kind).split(",") if n not in known]
        if unknown:
            parser.error(f"unknown {kind}: {', '.join(unknown)}; choose from {', '.join(known)}")
    return args


def parse_seeds(text: str) -> list[int]:
    """`--seeds N` is seeds 0..N-1 and `--seeds 0,3,4` those seeds; refused when it names no seed (`--seeds 0` once ran nothing, silently)."""
    try:
        seeds = [int(s) for s in text.split(",")] if "," in text else list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a count nor a comma-separated list of seeds, e.g. --seeds 5 or --seeds 0,3,4"
        ) from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} names no seed to run: give a count of at least 1 (--seeds 1 runs seed 0) or seeds of 0 and up"
        )
    return seeds


def seeds_of(args: argparse.Namespace, default: int) -> list[int]:
    return list(range(default)) if args.seeds is None else args.seeds


def run_all(args: argparse.Namespace) -> int:
    """Every run asked for that has no result file yet; returns how many failed."""
    from benchmarks.machine import tag
    from benchmarks.peers._adapter import usable_cores

    threads, failed, machine = usable_cores(), 0, tag()
    for task in (TASKS[n] for n in args.tasks.split(",")):
        budget = args.budget_seconds or task.budget_s
        cond = condition(task.name, args.data, budget, machine, args.epochs, args.epoch_images, args.population, args.exploit_every)
        systems = []
        for system in (SYSTEMS[n] for n in args.systems.split(",")):
            if not system.runs(task):
                print(f"{task.name}: {system.name} does not run this task: {system.why_not(task)}")
            elif not system.installed():
                print(f"{task.name}: skipping {system.name}: {system.module} is not installed (pip install -e '.[peers]')")
            else:
                systems.append(system.name)
        for seed in seeds_of(args, task.seeds):
            for name in systems:  # interleaved: machine drift hits every system alike
                out = result_path(args.results, cond, name, seed)
                if out.exists() and not args.force:
                    print(f"{cond} {name} seed {seed}: kept from an earlier run ({out.name})")
                    continue
                spec = {
                    "system": name,
                    "task": task.name,
                    "seed": seed,
                    "data": args.data,
                    "condition": cond,
                    "budget": budget,
                    "threads": threads,
                    "epochs": args.epochs or task.epochs,
                    "epoch_images": args.epoch_images or task.epoch_images,
                    "population": args.population,
                    "exploit_every": args.exploit_every or task.exploit_every,
                    "out": str(out),
                }
                failed += not run_one(spec, out)
    return failed


def run_one(spec: dict, out: Path) -> bool:
    """One run in its own process; its output goes to a log next to the result, kept only if the run fails."""
    started = time.perf_counter()
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "benchmarks.peers._systems", json.dumps(spec)]
    with log.open("w", encoding="utf-8") as f:
        try:
            returncode = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=spec["budget"] * 2 + 900).returncode
        except subprocess.TimeoutExpired:
            returncode = "timed out"
    took = time.perf_counter() - started
    if returncode or not out.exists():
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        print(f"{spec['condition']} {spec['system']} seed {spec['seed']}: FAILED (exit {returncode}, {took:.0f} s); log {log}:\n{tail}")
        return False
    log.unlink()
    result = json.loads(out.read_text(encoding="utf-8"))
    finished = sum(1 for t in result["trials"] if t["end"] is not None and t["end"] <= spec["budget"] and t["state"] != "cut")
    chosen = result["chosen"]
    best = (
        f"{100 * chosen['value']:.2f}% validation, {100 * chosen['test']:.2f}% test"
        if chosen and chosen.get("test")
        else "no completed trial"
    )
    print(
        f"{spec['condition']} {spec['system']} seed {spec['seed']}: {len(result['trials'])} trials started, {finished} finished, "
        f"chosen {best} ({took:.0f} s)",
        flush=True,
    )
    return True


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    failed = 0 if args.read else run_all(args)
    from benchmarks.peers._report import report

    report(args.results, args.tasks.split(","))
    if failed:
        sys.exit(f"{failed} run(s) failed; their logs are next to where their result files would be")


if __name__ == "__main__":
    main()
