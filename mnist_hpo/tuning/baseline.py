"""The published baseline (trial 0 of every study): how the best trial compares with it.

Read by the search's summary and by the HTML report, so both say the same thing.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState

from mnist_hpo.console import accuracy
from mnist_hpo.tuning.attrs import PARAMETERS_ATTR, PUBLISHED_BASELINE_ATTR, SECONDS_ATTR, TRIAL_STOPPED_ATTR
from mnist_hpo.tuning.copies import own_trials

__all__ = ["baseline_comparison"]


def baseline_comparison(best: FrozenTrial, trials: list[FrozenTrial], queued: bool = True) -> str:
    """The best trial against trial 0, the published configuration: validation accuracy, parameters, time (own trials only).

    ``queued``: the study queued the baseline (False: made with --no-baseline, so there is nothing to compare with).
    """
    finished = (TrialState.COMPLETE, TrialState.PRUNED)  # a failed baseline was replaced by a retry that carries its label
    baseline = next((t for t in own_trials(trials) if t.user_attrs.get(PUBLISHED_BASELINE_ATTR) and t.state in finished), None)
    if baseline is None:
        if not queued:
            return "no published baseline to compare with: the study was made without one (--baseline adds it as trial 0)"
        return "the published baseline (trial 0) has not finished yet"
    if baseline.number == best.number:
        return "the best trial is the published baseline itself"
    b, s = baseline.user_attrs, best.user_attrs
    if baseline.state == TrialState.COMPLETE:
        gain = f"{100 * (best.values[0] - baseline.values[0]):+.2f} pp validation accuracy against it ({accuracy('validation', baseline.values[0])})"
    else:
        gain = f"the baseline was {baseline.state.name.lower()} ({b.get(TRIAL_STOPPED_ATTR) or 'no final value'})"
    ours, theirs = s.get(PARAMETERS_ATTR, 0), b.get(PARAMETERS_ATTR, 0)
    if ours == theirs:  # the same network: the search changed only how it trains
        size = f"the same {ours:,} parameters"
    elif ours > 0 and round(theirs / ours, 1) == 1.0:  # not "1.0x fewer"
        size = f"about as many parameters ({ours:,} vs {theirs:,})"
    else:
        size = f"{theirs / ours:.1f}x fewer" if 0 < ours < theirs else f"{ours / max(1, theirs):.1f}x more"
        size += f" parameters ({ours:,} vs {theirs:,})"
    return (
        f"against the published baseline (trial {baseline.number}): {gain}; {size}; "
        f"{s.get(SECONDS_ATTR, 0):.0f} s vs {b.get(SECONDS_ATTR, 0):.0f} s of training"
    )
