"""Every sampler and pruner, the multi-objective path, --timeout and --max-params, each run once by the real `mnist-hpo search`.

Runs use the smoke profile with a tiny fixed network (tests/distributed/tiny_space.toml: about a
second per epoch on one thread), so the samplers search the training settings. Where an Optuna
sampler or pruner leaves a documented trace in the study (CMA-ES's generation, GP's and TPE's
relative parameters, NSGA-II's generation, QMC's sample counter, successive halving's rungs), the
test requires that trace: the option was not only accepted but used.
"""

from __future__ import annotations

import re

import optuna
import pytest
from outside import TINY_SPACE, error_line, load, ok, run, settings_of, sqlite_url

from mnist_hpo.tuning.space import Space

pytestmark = pytest.mark.slow  # real studies or several processes: `-m 'not slow'` leaves it out

TrialState = optuna.trial.TrialState
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def search(folder, *args: str, trials: int, study: str = "x"):
    done = ok(
        run(
            folder,
            "search",
            "--profile",
            "smoke",
            "--space",
            str(TINY_SPACE),
            "--study",
            study,
            "--seed",
            "0",
            "--n-trials",
            str(trials),
            *args,
        )
    )
    return done, load(sqlite_url(folder), study)


def study_system_attrs(folder, study: str) -> dict:
    storage = optuna.storages.RDBStorage(sqlite_url(folder), skip_table_creation=True)
    try:
        return storage.get_study_system_attrs(storage.get_study_id_from_name(study))
    finally:
        storage.engine.dispose()


def assert_ran_to_the_end(study: optuna.Study, trials: int) -> None:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert len(states) == trials and all(s in FINISHED for s in states), [
        (t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in study.trials
    ]
    for trial in study.trials:
        if trial.state == TrialState.PRUNED and trial.user_attrs["epochs_run"] > 0:  # stopped by the pruner, and it says when
            epoch = trial.user_attrs["epochs_run"]
            reason = trial.user_attrs["stopped"]  # which pruner, when, and where the trial ranked then
            said = re.match(r"pruned by (\S+) after epoch (\d+)(?::| at) (?:validation accuracy )?([\d.]+)%", reason)
            assert said and said[1] == settings_of(study)["pruner"] and int(said[2]) == epoch < settings_of(study)["epochs"], reason
            assert said[3] == f"{100 * trial.intermediate_values[epoch]:.2f}", reason
            assert sorted(trial.intermediate_values) == list(range(1, epoch + 1))


def traced(study: optuna.Study, prefix: str) -> list[int]:
    return [t.number for t in study.trials if any(key.startswith(prefix) for key in t.system_attrs)]


# sampler, pruner, trials, the trial system attribute the sampler or pruner leaves (None: it leaves none).
# Median, percentile and patient pruning judge from the fourth trial on (three start-up trials).
# None: the option left out, so the study records the default (tpe, sha).
RUNS = {
    "cmaes+median": ("cmaes", "median", 4, "cma:generation"),
    "qmc+percentile": ("qmc", "percentile", 4, None),
    "defaults": (None, None, 3, "completed_rung_0"),
    "tpe+hyperband": ("tpe", "hyperband", 3, "completed_rung_0"),
    "nsga2+wilcoxon": ("nsga2", "wilcoxon", 3, "NSGAIISampler:generation"),
}


@pytest.mark.parametrize("sampler, pruner, trials, trace", list(RUNS.values()), ids=list(RUNS))
def test_sampler_and_pruner_run_a_study(tmp_path, sampler, pruner, trials, trace):
    chosen = [*(["--sampler", sampler] if sampler else []), *(["--pruner", pruner] if pruner else [])]
    done, study = search(tmp_path, *chosen, trials=trials)
    assert_ran_to_the_end(study, trials)
    assert (settings_of(study)["sampler"], settings_of(study)["pruner"]) == (sampler or "tpe", pruner or "sha")
    if trace:
        assert traced(study, trace), f"no trial carries {trace!r}: was {sampler}/{pruner} used at all?"
    if sampler == "qmc":
        counters = [v for k, v in study_system_attrs(tmp_path, "x").items() if k.startswith("qmc:")]
        assert counters and counters[0] >= trials - 2, counters  # one QMC point drawn per sampled trial
    free = [t for t in study.trials if not t.user_attrs.get("published_baseline")]
    assert len({tuple(sorted(t.params.items())) for t in free}) == len(free), "the sampler proposed the same point twice"
    assert f"best trial {study.best_trial.number}: validation accuracy {100 * study.best_value:.2f}%" in done.stdout


def test_random_sampler_patient_pruner_and_a_parameter_budget(tmp_path):
    """--max-params between the smoke space's small and large networks: those over it are never trained."""
    budget = 50_000
    done = ok(
        run(
            tmp_path,
            "search",
            "--profile",
            "smoke",
            "--study",
            "x",
            "--seed",
            "0",
            "--n-trials",
            "6",
            "--sampler",
            "random",
            "--pruner",
            "patient",
            "--max-params",
            str(budget),
        )
    )
    study = load(sqlite_url(tmp_path), "x")
    assert_ran_to_the_end(study, 6)
    assert (settings_of(study)["sampler"], settings_of(study)["pruner"], settings_of(study)["max_params"]) == ("random", "patient", budget)
    over = [t for t in study.trials if t.user_attrs["parameters"] > budget]
    under = [t for t in study.trials if t.user_attrs["parameters"] <= budget]
    assert over and under, [t.user_attrs["parameters"] for t in study.trials]
    for trial in over:
        assert trial.state == TrialState.PRUNED and trial.user_attrs["epochs_run"] == 0 and not trial.intermediate_values
        assert trial.user_attrs["stopped"] == f"over the parameter budget ({trial.user_attrs['parameters']:,} > {budget:,}); not trained"
    assert all(t.intermediate_values for t in under)
    assert f"best trial {study.best_trial.number}:" in done.stdout


def test_gp_sampler_models_the_study_after_its_start_up_trials(tmp_path):
    """Optuna's GPSampler samples at random for its first 10 trials; the 11th is the first it models."""
    _, study = search(tmp_path, "--sampler", "gp", "--pruner", "none", "--epochs", "1", trials=11)
    assert_ran_to_the_end(study, 11)
    assert traced(study, "gp:relative_params") == [10], "the GP never proposed a trial"


def test_multi_objective_search_stops_trials_below_the_validation_threshold(tmp_path):
    """`--pruner threshold` (MO-ASHA is the default for two objectives): under 50 % after an epoch, a trial stops there."""
    hopeless = tmp_path / "hopeless.toml"
    hopeless.write_text(
        TINY_SPACE.read_text() + '[optimizer]\nvalue = "sgd"\n[lr]\nvalue = 0.0001\n'
    )  # learns next to nothing in one epoch
    done, study = search(
        tmp_path, "--sampler", "nsga2", "--objectives", "accuracy,params", "--pruner", "threshold", "--space", str(hopeless), trials=3
    )
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert settings_of(study)["min_accuracy"] == 0.5
    for trial in study.trials:
        curve = trial.user_attrs["learning_curve"]
        assert trial.state == TrialState.PRUNED and len(curve) == 1 and trial.user_attrs["epochs_run"] == 1, "no second epoch"
        assert curve[0]["val_accuracy"] < 0.5
        assert trial.user_attrs["stopped"] == f"validation accuracy {curve[0]['val_accuracy']:.4f} < 0.5 after epoch 1"
    assert traced(study, "NSGAIISampler:generation")
    assert "no trial completed yet" in done.stdout


def test_timeout_stops_starting_trials_and_leaves_none_running(tmp_path):
    # --timeout counts from the command's start (imports, data, queueing the budget too): 15 s leave time for trials
    done, study = search(tmp_path, "--timeout", "15", trials=200)
    trials = study.get_trials(deepcopy=False)
    ran = [t for t in trials if t.state != TrialState.WAITING]  # the budget is queued up front; the rest wait for the next run
    assert len(trials) == 200 and 1 <= len(ran) < 200 and all(t.state in FINISHED for t in ran), [t.state for t in ran]
    assert "--timeout reached, starting no more trials" in done.stdout, done.stdout
    assert re.search(r"budget 200 trials: \d+ finished .*, 0 running, \d+ waiting", done.stdout) and "best trial" in done.stdout


def test_no_baseline_searches_every_trial_and_the_study_keeps_that_choice(tmp_path):
    done, study = search(tmp_path, "--no-baseline", trials=3)
    assert "(no baseline trial: every trial is searched)" in done.stdout, done.stdout
    assert "no published baseline to compare with: the study was made without one (--baseline adds it" in done.stdout, done.stdout
    assert settings_of(study)["baseline"] is False
    published = Space.from_dict(settings_of(study)["space"]).published()
    assert [t.user_attrs.get("published_baseline") for t in study.trials] == [None] * 3
    assert all(t.params != published for t in study.trials), [t.params for t in study.trials]

    refused = run(tmp_path, "search", "--study", "x", "--baseline", "--n-trials", "1")
    error_line(refused, "study 'x' exists with baseline False; leave those options out to keep it")
    assert len(load(sqlite_url(tmp_path), "x").trials) == 3

    ok(run(tmp_path, "search", "--study", "x", "--n-trials", "1"))  # continuing adds a searched trial, not the baseline
    trials = load(sqlite_url(tmp_path), "x").trials
    assert len(trials) == 4 and not any(t.user_attrs.get("published_baseline") for t in trials)
