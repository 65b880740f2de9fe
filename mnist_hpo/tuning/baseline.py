"""The published baseline (trial 0 of every study): how the best trial compares with it.

Read by the search's summary and by the HTML report, so both say the same thing.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState

from mnist_hpo.console import accuracy
from mnist_hpo.tuning.copies import own_trials

__all__ = ["baseline_comparison"]


def baseline_comparison(best: FrozenTrial, trials: list[FrozenTrial]) -> str:
    """The best trial against trial 0, the published configuration: validation accuracy, parameters, time (own trials only)."""
    finished = (TrialState.COMPLETE, TrialState.PRUNED)  # a failed baseline was replaced by a retry that carries its label
    baseline = next((t for t in own_trials(trials) if t.user_attrs.get("published_baseline") and t.state in finished), None)
    if baseline is None:
        return "the published baseline (trial 0) has not finished yet"
    if baseline.number == best.number:
        return "the best trial is the published baseline itself"
    b, s = baseline.user_attrs, best.user_attrs
    if baseline.state == TrialState.COMPLETE:
        gain = f"{100 * (best.values[0] - baseline.values[0]):+.2f} pp validation accuracy against it ({accuracy('validation', baseline.values[0])})"
    else:
        gain = f"the baseline was {baseline.state.name.lower()} ({b.get('stopped') or 'no final value'})"
    ours, theirs = s.get("parameters", 0), b.get("parameters", 0)
    size = f"{theirs / ours:.1f}x fewer" if 0 < ours <= theirs else f"{ours / max(1, theirs):.1f}x more"
    return (
        f"against the published baseline (trial {baseline.number}): {gain}; {size} parameters "
        f"({ours:,} vs {theirs:,}); {s.get('seconds', 0):.0f} s vs {b.get('seconds', 0):.0f} s of training"
    )
