"""What a study looks like: pictures and notes per trial, optuna-dashboard, and an offline HTML report.

This layer reads the storage (and builds models from their specs for the notes); the search calls
``publish_trial`` at the end of every trial. Names are imported on first use, so `mnist-hpo
dashboard` starts without loading torch, and matplotlib/plotly load only where they draw.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnist_hpo.dashboards.publish import ensure_study_note, publish_trial
    from mnist_hpo.dashboards.report import write_report
    from mnist_hpo.dashboards.server import serve_dashboard

_WHERE = {
    "ensure_study_note": "publish",
    "publish_trial": "publish",
    "write_report": "report",
    "serve_dashboard": "server",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"mnist_hpo.dashboards.{_WHERE[name]}"), name)
