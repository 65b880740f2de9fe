"""`mnist-hpo ARGS` started truly at once: each racer imports everything, then waits for one barrier file.

Run as `python tests/racer.py BARRIER ARGS...`; `race()` starts N of them, waits until every one is
ready (its `BARRIER.ready-PID` file), then creates BARRIER, so the commands meet in the storage
within a millisecond of each other rather than seconds apart (imports take seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def race(cwd: Path, commands: list[list[str]], env: dict[str, str], timeout: float = 180) -> list[subprocess.CompletedProcess]:
    barrier = cwd / f"barrier-{time.monotonic_ns()}"
    racers = [
        subprocess.Popen(
            [sys.executable, __file__, str(barrier), *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for args in commands
    ]
    deadline = time.monotonic() + timeout
    while len(list(cwd.glob(f"{barrier.name}.ready-*"))) < len(racers):
        if time.monotonic() > deadline or any(r.poll() is not None for r in racers):
            break
        time.sleep(0.05)
    barrier.touch()
    done = []
    for racer, args in zip(racers, commands):
        out, err = racer.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(args, racer.returncode, out, err))
    return done


if __name__ == "__main__":
    import mnist_hpo.cli
    import mnist_hpo.commands.search
    import mnist_hpo.storage  # the imports, before the barrier

    go = Path(sys.argv[1])
    Path(f"{go}.ready-{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.0005)
    sys.argv = ["mnist-hpo", *sys.argv[2:]]
    mnist_hpo.cli.main()
