"""Optuna studies over the paper's CNN family: the space, the objective, the runner and results."""

from mnist_hpo.search.results import build_ensemble, export_trial, show_best, show_status, train_from_study
from mnist_hpo.search.runner import SearchRequest, run_search, show_space
from mnist_hpo.search.space import Space

__all__ = [
    "SearchRequest",
    "Space",
    "build_ensemble",
    "export_trial",
    "run_search",
    "show_best",
    "show_space",
    "show_status",
    "train_from_study",
]
