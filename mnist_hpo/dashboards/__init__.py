"""What a study looks like: pictures and notes per trial, optuna-dashboard, and an offline HTML report.

This layer reads the storage (and the search's settings, space and own-trials helpers for the notes
and the report: trials copied by a warm start are never counted or ranked). The search
commands hand ``publish_trial`` to the objective as its "trial finished" hook; the search itself
never imports this package. Names load on first use, so `mnist-hpo dashboard` starts without
torch, and matplotlib/plotly load only where they draw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_hpo._lazy import lazy_face

if TYPE_CHECKING:
    from mnist_hpo.dashboards.publish import (
        ensure_study_note as ensure_study_note,
        note_study_stop as note_study_stop,
        publish_trial as publish_trial,
    )
    from mnist_hpo.dashboards.report import write_report as write_report
    from mnist_hpo.dashboards.server import serve_dashboard as serve_dashboard

__getattr__, __all__ = lazy_face(__name__, __file__)
