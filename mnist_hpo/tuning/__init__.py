"""Optuna studies over the paper's CNN family: the space, the objective, and the one trial engine.

This layer joins the trainer, the storage and Optuna. Names are imported on first use, so a command
that only reads a study (`status`) starts without loading torch. The names of the study and trial
attributes it writes are in ``mnist_hpo.tuning.attrs``; import them from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_hpo._lazy import lazy_face

if TYPE_CHECKING:
    from mnist_hpo.tuning._budget import (
        BudgetView as BudgetView,
        budget_view as budget_view,
        ensure_budget_study as ensure_budget_study,
    )
    from mnist_hpo.tuning._display import print_outcome as print_outcome, trial_line as trial_line
    from mnist_hpo.tuning._engine import Worker as Worker, WorkerReport as WorkerReport
    from mnist_hpo.tuning._prepare import (
        SearchRequest as SearchRequest,
        new_settings as new_settings,
        resolve_profile as resolve_profile,
    )
    from mnist_hpo.tuning._retries import Faults as Faults, RetryDeadTrial as RetryDeadTrial, retry_history as retry_history
    from mnist_hpo.tuning._run import open_for_workers as open_for_workers, quiet_optuna as quiet_optuna, work as work
    from mnist_hpo.tuning._search import (
        Prepared as Prepared,
        SearchHooks as SearchHooks,
        apply_stop_rules as apply_stop_rules,
        create as create,
        join as join,
        prepare as prepare,
        run as run,
    )
    from mnist_hpo.tuning._spec import EngineHooks as EngineHooks, WorkerSpec as WorkerSpec
    from mnist_hpo.tuning.baseline import baseline_comparison as baseline_comparison
    from mnist_hpo.tuning.copies import (
        is_copied as is_copied,
        own_pareto_front as own_pareto_front,
        own_study as own_study,
        own_trials as own_trials,
        warm_start_source as warm_start_source,
        warm_start_trials as warm_start_trials,
    )
    from mnist_hpo.tuning.objective import MODEL_ARTIFACT as MODEL_ARTIFACT, Objective as Objective, TrialEnd as TrialEnd
    from mnist_hpo.tuning.profiles import PROFILES as PROFILES, get_profile as get_profile
    from mnist_hpo.tuning.settings import StudySettings as StudySettings
    from mnist_hpo.tuning.space import Space as Space, load_space_file as load_space_file
    from mnist_hpo.tuning.tracking import MLFLOW_ENV as MLFLOW_ENV, MlflowTracker as MlflowTracker, require_mlflow as require_mlflow

__getattr__, __all__ = lazy_face(__name__, __file__)
