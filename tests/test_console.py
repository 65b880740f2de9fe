"""The progress bar's ETA: a search with a time budget never shows more time left than it has."""

from __future__ import annotations

from rich.progress import Task, TimeRemainingColumn

from mnist_hpo.console import TimeLeftColumn, progress


def _task(timeout: float | None, finished: int, elapsed: float) -> Task:
    """A 40-trial task on a fake clock, ``finished`` trials done at an even pace over ``elapsed`` s."""
    clock = [1000.0]
    bar = progress()
    bar.get_time = lambda: clock[0]
    task = bar.add_task("trials", total=40, timeout=timeout)
    for done in range(1, finished + 1):
        clock[0] = 1000.0 + elapsed * done / finished
        bar.update(task, completed=done)
    return bar.tasks[0]


def _eta(task: Task) -> str:
    return TimeLeftColumn().render(task).plain


def test_eta_is_the_time_left_before_the_deadline_until_trials_finish():
    assert _eta(_task(timeout=600.0, finished=0, elapsed=0.0)) == "0:10:00"


def test_eta_from_the_trial_rate_is_capped_by_the_deadline():
    # 4 of 40 trials in 100 s would take 900 s more; the deadline leaves 500.
    assert _eta(_task(timeout=600.0, finished=4, elapsed=100.0)) == "0:08:20"
    assert _eta(_task(timeout=600.0, finished=4, elapsed=600.0)) == "0:00:00"


def test_without_a_deadline_the_eta_is_rich_s_own():
    for finished, elapsed in ((0, 0.0), (4, 100.0)):
        task = _task(timeout=None, finished=finished, elapsed=elapsed)
        assert _eta(task) == TimeRemainingColumn().render(task).plain
    assert _eta(_task(timeout=None, finished=4, elapsed=100.0)) == "0:15:00"
