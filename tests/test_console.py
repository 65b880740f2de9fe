"""The progress bar's ETA: a search with a time budget never shows more time left than it has."""

from __future__ import annotations

from mnist_hpo.console import TimeLeftColumn, progress


def _eta(deadline: float | None, finished: int, elapsed: float) -> str:
    clock = [1000.0]
    bar = progress()
    bar.get_time = lambda: clock[0]
    task = bar.add_task("trials", total=40, deadline=deadline)
    for done in range(1, finished + 1):  # trials finishing at an even pace
        clock[0] = 1000.0 + elapsed * done / finished
        bar.update(task, completed=done)
    column = next(c for c in bar.columns if isinstance(c, TimeLeftColumn))
    return column.render(bar.tasks[0]).plain


def test_eta_is_the_time_left_before_the_deadline_until_trials_finish():
    assert _eta(deadline=1600.0, finished=0, elapsed=0.0) == "0:10:00"


def test_eta_from_the_trial_rate_is_capped_by_the_deadline():
    # 4 of 40 trials in 100 s would take 900 s more; the deadline leaves 500.
    assert _eta(deadline=1600.0, finished=4, elapsed=100.0) == "0:08:20"
    assert _eta(deadline=1600.0, finished=4, elapsed=600.0) == "0:00:00"


def test_without_a_deadline_the_eta_is_the_trial_rate_one():
    assert _eta(deadline=None, finished=4, elapsed=100.0) == "0:15:00"
    assert _eta(deadline=None, finished=0, elapsed=0.0) == "-:--:--"
