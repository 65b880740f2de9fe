"""The README's short tour, run top to bottom as a new user pastes it, on the smoke profile.

After the README's first block a user has the quick study `mnist-quick` (about 10 minutes); here the
tour's own `search --profile smoke` line makes `mnist-smoke`, and the lines that name `mnist-quick`
use it instead. Everything else runs exactly as written, in a fresh folder, through bash, with the
installed `mnist-hpo` first on PATH, so a file the tour names but never makes fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from outside import REPO, cli_env

pytestmark = [pytest.mark.slow, pytest.mark.network]  # full MNIST: `data fetch`, `train`, `data samples`


def tour() -> list[str]:
    """The commands of the README's "A short tour" block, comments dropped."""
    section = (REPO / "README.md").read_text().split("\n## A short tour\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_tour_is_a_list_of_mnist_hpo_commands():
    commands = tour()
    assert len(commands) >= 10 and all(command.startswith("mnist-hpo ") for command in commands), commands


def test_the_readme_tour_runs_top_to_bottom_in_a_fresh_folder(tmp_path: Path, mnist_root: Path) -> None:
    env = cli_env(MNIST_HPO_DATA=str(mnist_root), PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    for command in tour():
        line = command.replace("mnist-quick", "mnist-smoke")
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"`{line}` exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, done.stderr
    made = {"tiny.pt", "best.onnx", "ensemble.onnx", "final.pt", "submission.csv", "mnist-hpo.db"}
    assert made <= {path.name for path in tmp_path.iterdir()}, sorted(path.name for path in tmp_path.iterdir())
    labels = (tmp_path / "samples" / "labels.csv").read_text().splitlines()
    assert len((tmp_path / "submission.csv").read_text().splitlines()) == len(labels), "one prediction per sample digit"
