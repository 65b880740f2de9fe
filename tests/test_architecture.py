"""The architecture holds: layers (import-linter), sizes, and the two modules that touch private APIs."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp  # import-linter's own import graph
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mnist_hpo"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60
# The one module for Optuna's internals, the one for optuna-dashboard's.
PRIVATE_API = {
    re.compile(
        r"optuna\.storages\._|_CachedStorage|\._study_id\b|\._thread_local\b|\._storage\b|\._trial_id\b"
    ): "storage/_optuna_internals.py",
    re.compile(r"optuna_dashboard\._"): "dashboards/_speedup.py",
}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_import_linter_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([exe], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_module_over_400_lines_and_no_function_body_over_60():
    long_modules = {str(p.relative_to(PACKAGE)): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long_modules, long_modules
    long_functions = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (lines := body_lines(node)) > MAX_FUNCTION_LINES:
                long_functions.append(f"{path.relative_to(PACKAGE)}:{node.name} ({lines} lines)")
    assert not long_functions, long_functions


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of the body after the docstring: a typer command's option declarations are not logic."""
    body = function.body
    first = body[1] if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else body[0]
    return function.end_lineno - first.lineno + 1


def test_private_apis_of_optuna_and_optuna_dashboard_are_used_in_one_module_each():
    offenders = []
    for path in modules():
        relative = str(path.relative_to(PACKAGE))
        code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        for pattern, allowed in PRIVATE_API.items():
            if relative != allowed and pattern.search(code):
                offenders.append(f"{relative}: {pattern.search(code).group(0)}")
    assert not offenders, offenders


def test_tests_mirror_the_package():
    tests = Path(__file__).resolve().parent
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert {"models", "tuning", "storage", "dashboards", "data", "trainer", "commands", "cli", "exports"} <= packages
    unmirrored = packages - {"api"} - {path.name for path in tests.iterdir() if path.is_dir()}  # the face: tests/test_api.py
    assert not unmirrored, f"subpackages without a tests/ folder: {sorted(unmirrored)}"


#: What the dashboards may read of the search: its settings, space, own-trials helpers, the baseline sentence,
#: PBT's pure lineage and schedule (the population picture) and the attribute names; never the engine, samplers or
#: objective (an allow-list: a new tuning module is refused until named here).
DASHBOARDS_MAY_IMPORT = {"attrs", "baseline", "copies", "mo_asha", "pbt", "settings", "space"}


def test_dashboards_import_only_the_allowed_parts_of_the_search():
    graph = grimp.build_graph("mnist_hpo")
    dashboards = graph.find_descendants("mnist_hpo.dashboards") | {"mnist_hpo.dashboards"}
    read = set().union(*(graph.find_upstream_modules(module) for module in dashboards))  # directly or through others
    searched = {m for m in read if m == "mnist_hpo.tuning" or m.startswith(("mnist_hpo.tuning.", "mnist_hpo.trainer"))}
    assert searched, "no dashboards module reads the search: the graph is not what this test expects"
    refused = sorted(m for m in searched if m.removeprefix("mnist_hpo.tuning.") not in DASHBOARDS_MAY_IMPORT)
    assert not refused, f"the dashboards reach {refused}; allowed: {sorted(DASHBOARDS_MAY_IMPORT)}"
