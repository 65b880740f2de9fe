"""The README's "Using an exported model" snippets work as written, on a real Kaggle-style test.csv.

The onnxruntime and torch.export snippets run where mnist_hpo cannot be imported; the safetensors
one uses mnist-hpo, as the README says. Each must print the labels `predict` gives.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from export_helpers import without_mnist_hpo
from test_export_files import write_kaggle_csv

from mnist_hpo.inference import predict_pixels

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Using an exported model"


def readme_snippets() -> dict[str, str]:
    text = README.read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    runtimes = {"onnxruntime": "onnxruntime as ort", "torch.export": "torch.export.load", "safetensors": "safe_open("}
    found = {name: [b for b in blocks if marker in b] for name, marker in runtimes.items()}
    assert all(len(matches) == 1 for matches in found.values()), found
    return {name: matches[0] for name, matches in found.items()}


def printed_labels(stdout: str) -> list[int]:
    return [int(d) for d in re.findall(r"\d+", stdout[stdout.rindex("[") :])]


@pytest.fixture(scope="module")
def folder(study, real_images, tmp_path_factory) -> Path:
    here = tmp_path_factory.mktemp("readme")
    write_kaggle_csv(here / "test.csv", real_images[:200])
    for fmt in ("onnx", "pt2", "safetensors"):
        shutil.copy(study.exports[fmt], here / f"best.{fmt}")
    return here


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch.export", "safetensors"])
def test_readme_snippet_runs_as_written(runtime, folder, study, real_images):
    code = readme_snippets()[runtime]
    if runtime == "safetensors":
        done = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=300)
    else:
        done = without_mnist_hpo(code, folder)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = predict_pixels(study.exports["pt"], real_images[:200])[0].tolist()
    assert printed_labels(done.stdout) == expected
