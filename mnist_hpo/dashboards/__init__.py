"""What a study looks like: pictures and notes per trial, optuna-dashboard, and an offline HTML report.

This layer reads the storage (and the search's settings, space and own-trials helpers for the notes
and the report: trials copied by a warm start are never counted or ranked). The search
commands hand ``publish_trial`` to the objective as its "trial finished" hook; the search itself
never imports this package. Names load on first use, so `mnist-hpo dashboard` starts without
torch, and matplotlib/plotly load only where they draw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_hpo._lazy import lazy_names

if TYPE_CHECKING:
    from mnist_hpo.dashboards.publish import ensure_study_note, note_study_stop, publish_trial
    from mnist_hpo.dashboards.report import write_report
    from mnist_hpo.dashboards.server import serve_dashboard

_WHERE = {
    "ensure_study_note": "publish",
    "note_study_stop": "publish",
    "publish_trial": "publish",
    "write_report": "report",
    "serve_dashboard": "server",
}
__all__ = ["ensure_study_note", "note_study_stop", "publish_trial", "serve_dashboard", "write_report"]
__getattr__ = lazy_names(__name__, _WHERE)
