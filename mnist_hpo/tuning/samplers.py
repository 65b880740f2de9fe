"""Samplers by name, configured for this search (TPE multivariate and grouped, with a short start-up)."""

from __future__ import annotations

import optuna

from mnist_hpo.errors import UserError

SAMPLERS = ("tpe", "cmaes", "gp", "random", "nsga2", "qmc")
TPE_STARTUP_TRIALS = 5


def make_sampler(
    name: str, seed: int | None, multi_objective: bool, constant_liar: bool = False, startup_trials: int = TPE_STARTUP_TRIALS
) -> optuna.samplers.BaseSampler:
    """``constant_liar``: concurrent workers' TPE treats running trials as bad, so it does not sample them again.
    ``startup_trials``: TPE's random trials before it models (the peers benchmark measures Optuna's 10)."""
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    if multi_objective and name == "cmaes":
        raise UserError("the cmaes sampler handles one objective only; use tpe or nsga2 with --objectives accuracy,params")
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=startup_trials, constant_liar=constant_liar
        )
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
