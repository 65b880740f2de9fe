"""Packages whose names load on first use, so that reading a study does not import torch.

A package's face is written once, as the imports of its ``if TYPE_CHECKING:`` block: type checkers
read them there (``import name as name`` marks a re-export), and at run time ``lazy_face`` serves
each name from its module the first time it is asked for.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any


def lazy_face(package: str, init_file: str) -> tuple[Callable[[str], Any], list[str]]:
    """The package's ``__getattr__`` and ``__all__``, read from the ``if TYPE_CHECKING:`` imports of ``init_file``."""
    where: dict[str, str] = {}
    for node in ast.parse(Path(init_file).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
                    where.update({alias.asname or alias.name: statement.module for alias in statement.names})
    if not where:
        raise ImportError(f"{package}: no `if TYPE_CHECKING:` imports to serve (mnist_hpo/_lazy.py)")

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name]), name)

    return __getattr__, sorted(where)
