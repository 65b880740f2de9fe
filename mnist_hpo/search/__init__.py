"""Optuna studies over the paper's CNN family: the space, the objective, and the one trial engine.

This layer joins the trainer, the storage and Optuna. Names are imported on first use, so a command
that only reads a study (`status`) starts without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_hpo._lazy import lazy_names

if TYPE_CHECKING:
    from mnist_hpo.search._budget import BudgetView, budget_view, ensure_budget_study, is_half_made
    from mnist_hpo.search._display import print_outcome, trial_line
    from mnist_hpo.search._engine import Worker, WorkerReport
    from mnist_hpo.search._launcher import in_process, launch_workers, plan_slots, refuse_shared_sqlite
    from mnist_hpo.search._prepare import (
        STUDY_DEFINING,
        SearchRequest,
        check_same_study,
        create_budget,
        new_settings,
        resolve_profile,
        search_budget,
    )
    from mnist_hpo.search._retries import Faults, RetryDeadTrial, retry_history
    from mnist_hpo.search._run import open_for_workers, quiet_optuna, study_settings, work
    from mnist_hpo.search.baseline import baseline_comparison
    from mnist_hpo.search.copies import (
        COPIED_ATTR,
        is_copied,
        own_pareto_front,
        own_study,
        own_trials,
        warm_start_source,
        warm_start_trials,
    )
    from mnist_hpo.search.objective import MODEL_ARTIFACT, Objective, TrialEnd
    from mnist_hpo.search.profiles import PROFILES, get_profile
    from mnist_hpo.search.settings import StudySettings
    from mnist_hpo.search.space import Space, load_space_file
    from mnist_hpo.search.stopping import LIFTED_ATTR, STOPPED_ATTR, rules_given, set_stop_rules

_WHERE = {
    "BudgetView": "_budget",
    "budget_view": "_budget",
    "ensure_budget_study": "_budget",
    "is_half_made": "_budget",
    "baseline_comparison": "baseline",
    "print_outcome": "_display",
    "trial_line": "_display",
    "Worker": "_engine",
    "WorkerReport": "_engine",
    "in_process": "_launcher",
    "launch_workers": "_launcher",
    "plan_slots": "_launcher",
    "refuse_shared_sqlite": "_launcher",
    "STUDY_DEFINING": "_prepare",
    "SearchRequest": "_prepare",
    "check_same_study": "_prepare",
    "create_budget": "_prepare",
    "new_settings": "_prepare",
    "resolve_profile": "_prepare",
    "search_budget": "_prepare",
    "Faults": "_retries",
    "RetryDeadTrial": "_retries",
    "retry_history": "_retries",
    "open_for_workers": "_run",
    "quiet_optuna": "_run",
    "study_settings": "_run",
    "work": "_run",
    "MODEL_ARTIFACT": "objective",
    "Objective": "objective",
    "TrialEnd": "objective",
    "PROFILES": "profiles",
    "get_profile": "profiles",
    "StudySettings": "settings",
    "Space": "space",
    "load_space_file": "space",
    "COPIED_ATTR": "copies",
    "is_copied": "copies",
    "own_pareto_front": "copies",
    "own_study": "copies",
    "own_trials": "copies",
    "warm_start_source": "copies",
    "warm_start_trials": "copies",
    "LIFTED_ATTR": "stopping",
    "STOPPED_ATTR": "stopping",
    "rules_given": "stopping",
    "set_stop_rules": "stopping",
}
__all__ = [
    "COPIED_ATTR",
    "LIFTED_ATTR",
    "MODEL_ARTIFACT",
    "PROFILES",
    "STOPPED_ATTR",
    "STUDY_DEFINING",
    "BudgetView",
    "Faults",
    "Objective",
    "RetryDeadTrial",
    "SearchRequest",
    "Space",
    "StudySettings",
    "TrialEnd",
    "Worker",
    "WorkerReport",
    "baseline_comparison",
    "budget_view",
    "check_same_study",
    "create_budget",
    "ensure_budget_study",
    "get_profile",
    "in_process",
    "is_copied",
    "is_half_made",
    "launch_workers",
    "load_space_file",
    "new_settings",
    "open_for_workers",
    "own_pareto_front",
    "own_study",
    "own_trials",
    "plan_slots",
    "print_outcome",
    "quiet_optuna",
    "refuse_shared_sqlite",
    "resolve_profile",
    "retry_history",
    "rules_given",
    "search_budget",
    "set_stop_rules",
    "study_settings",
    "trial_line",
    "warm_start_source",
    "warm_start_trials",
    "work",
]
__getattr__ = lazy_names(__name__, _WHERE)
