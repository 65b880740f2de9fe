"""Running things as users do: the `mnist-hpo` command, and Python where mnist-hpo cannot be imported."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("pt", "safetensors", "onnx", "pt2")
STUDY = "mnist-smoke"
MNIST_HPO = shutil.which("mnist-hpo", path=os.path.dirname(sys.executable)) or "mnist-hpo"

#: Put first in a subprocess: any import of mnist_hpo fails, so what runs there needs only its runtime.
BLOCK_MNIST_HPO = """
import sys
class _BlockMnistHpo:
    def find_spec(self, name, path=None, target=None):
        if name == "mnist_hpo" or name.startswith("mnist_hpo."):
            raise ModuleNotFoundError(f"import of {name} blocked: this must run without mnist-hpo")
sys.meta_path.insert(0, _BlockMnistHpo())
try:
    import mnist_hpo
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the mnist_hpo import blocker does not work")
"""


@dataclass(frozen=True)
class Study:
    """A real smoke study made through the CLI, and its exports."""

    root: Path
    exports: dict[str, Path]

    @property
    def url(self) -> str:
        return f"sqlite:///{self.root / 'x.db'}"

    @property
    def artifacts(self) -> Path:
        return self.root / "art"

    def args(self) -> list[str]:
        return ["--study", STUDY, "--storage", self.url, "--artifacts", str(self.artifacts)]


def cli(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([MNIST_HPO, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def without_mnist_hpo(code: str, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python whose imports of mnist_hpo fail; ``args`` become sys.argv[1:]."""
    return subprocess.run([sys.executable, "-c", BLOCK_MNIST_HPO + code, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def json_result(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def error_line(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """The one-line `error: ...` a user sees for bad input: exit 2, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def copy_study(study: Study, target: Path) -> Study:
    """A private copy of the database (SQLite's backup API) and the artifacts, to damage freely."""
    target.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(study.root / "x.db") as src, sqlite3.connect(target / "x.db") as dst:
        src.backup(dst)
    shutil.copytree(study.artifacts, target / "art")
    return Study(target, {})


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
