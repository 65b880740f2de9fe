"""docs/quickstart.ipynb runs top to bottom in a real Jupyter kernel, as a notebook user runs it.

Only its parameters cell changes (papermill's convention): a tiny space, one epoch, two trials, so
the run takes seconds; every other cell runs as written, in a fresh folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from outside import REPO, TINY_SPACE

NOTEBOOK = REPO / "docs" / "quickstart.ipynb"


def test_the_quickstart_notebook_runs_in_a_real_kernel(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(cell for cell in notebook.cells if cell.source.startswith("# Parameters"))
    parameters.source = f'PROFILE = "smoke"\nN_TRIALS = 2\nEPOCHS = 1\nSPACE = {str(TINY_SPACE)!r}'
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # the kernel's `mnist-hpo`
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    text = "\n".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs)
    errors = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"]
    assert not errors
    assert "best trial" in text and "validation accuracy" in text
    images = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs if "image/png" in out.get("data", {})]
    assert len(images) == 1  # the learning curve
    predicted = [line for line in text.splitlines() if line.startswith("samples/") and "->" in line]
    assert len(predicted) == 8
    assert (tmp_path / "best.onnx").is_file() and (tmp_path / "notebook.db").is_file()
    onnx_labels = next(line for line in text.splitlines() if line.startswith("best.onnx"))
    assert onnx_labels.endswith(str([int(line.split("-> ")[1].split()[0]) for line in predicted]))  # onnxruntime agrees with predict
