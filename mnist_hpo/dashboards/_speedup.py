"""The one place that reaches into optuna-dashboard's internals: a faster search-space cache.

optuna-dashboard 0.21 walks every trial of a study on each study-page request, polls included,
once all of them are finished: its cursor only ever moves to an unfinished trial. At 10,000 trials
that walk is about 40 % of each request (BENCHMARKS.md). Folding a finished trial into the union
and intersection search spaces twice changes nothing, so after upstream's own update the cursor
may move past the newest trial when every trial it walked had finished. On an optuna-dashboard
this was not tested with, nothing is changed and a warning says so.
"""

from __future__ import annotations

import itertools
from typing import Any

TESTED = ("0.21",)  # optuna-dashboard minor versions this was tested with


def fold_in_only_new_trials() -> list[str]:
    """Install the speed-up if optuna-dashboard is a tested version; returns warning lines otherwise."""
    import optuna_dashboard

    version = getattr(optuna_dashboard, "__version__", "?")
    if not any(version == tested or version.startswith(tested + ".") for tested in TESTED):
        return [
            f"warning: optuna-dashboard {version} is not the tested {', '.join(TESTED)}: "
            "its study pages are served without mnist-hpo's speed-up (slower beyond a few thousand trials)"
        ]
    try:
        from optuna_dashboard._inmemory_cache import _CachedExtraStudyProperty as cache
    except ImportError:
        return [f"warning: optuna-dashboard {version} has no _CachedExtraStudyProperty; serving without the speed-up"]
    if getattr(cache, "_mnist_hpo_original", None) is not None:
        return []
    original = cache.update

    def update(self: Any, trials: list) -> None:
        cursor = self._cursor
        original(self, trials)
        walked = itertools.takewhile(lambda trial: trial.number >= cursor, reversed(trials))
        if trials and all(trial.state.is_finished() for trial in walked):
            self._cursor = max(self._cursor, trials[-1].number + 1)

    cache._mnist_hpo_original = original
    cache.update = update
    return []
