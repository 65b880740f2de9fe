"""Every `mnist-hpo` command ran at least once in a real subprocess of the test run; exit 1 naming any that did not.

Reads the coverage data .ci/run collects. Lines run inside pytest's own processes carry the coverage
context "pytest" (tests/conftest.py switches to it); lines run by the `mnist-hpo` processes the tests
start keep the empty context. A command counts when a statement of its function body ran there.
Commands are found wherever the package defines them: functions decorated with `<typer>.command(...)`,
named through the `add_typer(..., name=...)` calls that mount their groups.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parent.parent


def _groups(tree: ast.Module) -> dict[str, str]:
    """Typer variable -> the command prefix its add_typer(name=...) gives it ("" for the top-level app)."""
    prefixes: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_typer" and node.args:
            name = next((k.value.value for k in node.keywords if k.arg == "name" and isinstance(k.value, ast.Constant)), None)
            if isinstance(node.args[0], ast.Name) and name:
                prefixes[node.args[0].id] = name
    return prefixes


def commands() -> list[tuple[str, Path, list[int]]]:
    """(command, file, the line numbers of its body's statements) for every CLI command of mnist_hpo."""
    found = []
    for path in sorted((ROOT / "mnist_hpo").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        prefixes = _groups(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute) and decorator.func.attr == "command"):
                    continue
                typer = decorator.func.value.id if isinstance(decorator.func.value, ast.Name) else ""
                name = (
                    decorator.args[0].value
                    if decorator.args and isinstance(decorator.args[0], ast.Constant)
                    else node.name.replace("_", "-")
                )
                body = node.body[1:] if ast.get_docstring(node) else node.body
                lines = sorted({n.lineno for statement in body for n in ast.walk(statement) if isinstance(n, ast.stmt)})
                found.append((" ".join(filter(None, [prefixes.get(typer, ""), name])), path, lines))
    return found


def main() -> int:
    data = coverage.CoverageData(basename=str(ROOT / ".coverage"))
    data.read()
    if not data.measured_files():
        print("no coverage data: run .ci/run (or the suite with COVERAGE_PROCESS_START=pyproject.toml) first")
        return 1
    data.set_query_contexts(["^$"])  # the `mnist-hpo` subprocesses, not pytest's processes
    missing = []
    for command, path, lines in commands():
        ran = set(data.lines(str(path)) or ())
        if not ran & set(lines):
            missing.append(command)
    listed = len(commands())
    if missing:
        print(f"{len(missing)} of {listed} mnist-hpo commands never ran in a subprocess of the tests: {', '.join(missing)}")
        return 1
    print(f"all {listed} mnist-hpo commands ran in a real subprocess of the tests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
