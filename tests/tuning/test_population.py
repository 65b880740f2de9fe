"""`mnist-hpo search --pbt` from outside: one worker, two workers, a worker killed mid-segment, then export, ensemble
and predict.

What each study must show, read back through Optuna's API: exactly population x generations finished
trials, each member placed once per generation on the epochs of that generation; a generation starts
only after every member finished the one before; an exploiting member has its donor's network, and
perturbed values within the space; the others keep their parameters; no training state is left behind.
"""

from __future__ import annotations

import datetime
import math
import re
import signal
from pathlib import Path

import optuna
import pytest
import torch
from outside import (
    FAST,
    TINY_SPACE,
    assert_exact_budget,
    finish,
    kill,
    ok,
    run,
    running_past_epoch,
    start,
    stop_all,
    trials_of,
    wait_for,
    worker_pid,
)

pytestmark = pytest.mark.slow
MUTABLE = {"lr", "weight_decay", "dropout_in", "dropout_hidden", "rotation", "translation", "label_smoothing"}
COMPLETE = optuna.trial.TrialState.COMPLETE
# two generations of two epochs for the tests where one worker waits for another's member
TWO_GENERATIONS = ["--profile", "smoke", "--space", str(TINY_SPACE), "--epochs", "4", "--exploit-every", "2"]


def check_population(trials: list[optuna.trial.FrozenTrial], population: int, generations: int, interval: int) -> int:
    """The invariants of a finished PBT study; returns how many exploits it made."""
    assert_exact_budget(trials, population * generations)
    counted = [t for t in trials if t.state == COMPLETE]
    places = sorted((t.user_attrs["pbt_segment"]["member"], t.user_attrs["pbt_segment"]["generation"]) for t in counted)
    assert places == [(m, g) for m in range(population) for g in range(generations)], places
    by_number = {t.number: t for t in trials}
    exploits = 0
    for trial in counted:
        segment = trial.user_attrs["pbt_segment"]
        epochs = [point["epoch"] for point in trial.user_attrs["learning_curve"]]
        first = segment["generation"] * interval + 1
        assert epochs[-1] == segment["last_epoch"] == first + interval - 1 and segment["first_epoch"] == first, segment
        if segment["generation"] == 0:
            assert segment["source"] is None
            continue
        source = by_number[segment["source"]]
        assert source.state == COMPLETE and source.user_attrs["pbt_segment"]["generation"] == segment["generation"] - 1
        before = [t for t in counted if t.user_attrs["pbt_segment"]["generation"] == segment["generation"] - 1]
        placed = datetime.datetime.fromtimestamp(segment["placed_at"])  # synchronous generations:
        assert placed >= max(t.datetime_complete for t in before)  # placed once the one before is over
        network = {k: v for k, v in trial.params.items() if k not in MUTABLE}
        assert network == {k: v for k, v in source.params.items() if k not in MUTABLE}  # the weights fit their network
        if segment["donor"] is None:
            assert trial.params == source.params and source.user_attrs["pbt_segment"]["member"] == segment["member"]
        else:
            exploits += 1
            assert source.user_attrs["pbt_segment"]["member"] == segment["donor"] != segment["member"]
            assert any(trial.params[k] != source.params[k] for k in MUTABLE & set(trial.params))
            for name in MUTABLE & set(trial.params):
                distribution = trial.distributions[name]
                assert distribution.low <= trial.params[name] <= distribution.high
    return exploits


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("pbt")
    url = f"sqlite:///{folder / 'mnist-hpo.db'}"
    done = ok(run(folder, "search", "--study", "p", "--profile", "smoke", "--pbt", "--population", "4", "--epochs", "3", "--seed", "1"))
    assert "with a budget of 12 trials" in done.stdout
    return folder, url


def test_one_worker_trains_the_population_generation_by_generation(one_worker):
    folder, url = one_worker
    trials = trials_of(url, "p")
    assert check_population(trials, population=4, generations=3, interval=1) >= 2  # one quantile of 4 each generation
    assert not list((folder / "mnist-hpo-artifacts").glob("pbt-*")), "training states left behind"
    settings = optuna.load_study(study_name="p", storage=url).user_attrs["mnist_hpo"]
    assert settings["pbt"]["population"] == 4 and settings["pbt"]["interval"] == 1 and settings["pruner"] == "none"


def test_the_best_member_exports_and_a_done_study_is_not_extended(one_worker):
    folder, url = one_worker
    ok(run(folder, "export", "--study", "p", "--out", "best.pt"))
    assert (folder / "best.pt").stat().st_size > 0
    done = run(folder, "search", "--study", "p")
    assert done.returncode == 2 and "study 'p' is done: its 4 members trained their 3 generations" in done.stderr
    assert len(trials_of(url, "p")) == 12


def test_an_ensemble_takes_the_best_members_one_segment_each_and_predict_reads_it(one_worker):
    """Ranked by validation, a member's later generations crowd the top; an ensemble of them would be one network."""
    folder, url = one_worker
    ranked = sorted((t for t in trials_of(url, "p") if t.state == COMPLETE), key=lambda t: (-t.value, t.number))
    member = {t.number: t.user_attrs["pbt_segment"]["member"] for t in ranked}
    assert len({member[t.number] for t in ranked[:3]}) < 3, "the study must have one member twice in its top 3"
    best_segments: dict[int, int] = {}
    for trial in ranked:
        best_segments.setdefault(member[trial.number], trial.number)
    done = ok(run(folder, "ensemble", "--study", "p", "--top-k", "3", "--out", "members.pt", "--device", "cpu"))
    chosen = [(int(n), int(m)) for n, m in re.findall(r"trial (\d+) \(member (\d+)\)", done.stdout)]
    assert chosen == [(n, member[n]) for n in list(best_segments.values())[:3]], done.stdout
    ok(run(folder, "data", "samples", "--data", "fixture", "--count", "6", "--out", "samples"))
    ok(run(folder, "export", "--study", "p", "--out", "best-member.pt"))
    for model in ("members.pt", "best-member.pt"):
        ok(run(folder, "predict", "--checkpoint", model, "--kaggle-csv", "samples/test.csv", "--out", f"{model}.csv"))
        assert len((folder / f"{model}.csv").read_text().splitlines()) == 1 + 6  # header and one label per digit


def test_two_workers_on_a_journal_file_place_each_member_once_per_generation(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    args = ["search", "--study", "p", "--storage", url, "--profile", "smoke", "--space", str(TINY_SPACE), "--pbt"]
    ok(run(tmp_path, *args, "--population", "3", "--epochs", "4", "--exploit-every", "2", "--workers", "2", "--seed", "1"))
    check_population(trials_of(url, "p"), population=3, generations=2, interval=2)
    assert not list((tmp_path / "mnist-hpo-artifacts").glob("pbt-*"))


def test_a_member_whose_worker_is_killed_resumes_its_segment_in_its_place(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    search = start(
        tmp_path,
        *["search", "--study", "p", "--storage", url, "--profile", "smoke", "--space", str(TINY_SPACE), "--pbt", "--workers", "2"],
        *["--population", "3", "--epochs", "4", "--exploit-every", "2", "--seed", "2", *FAST],
        log="search.log",
    )
    try:
        victim = wait_for(lambda: running_past_epoch(url, "p"), "a segment past its first epoch", processes=(search,))
        kill(worker_pid(victim))
        code = finish(search)
    finally:
        stop_all(search)
    out = (tmp_path / "search.log").read_text()
    assert code == 0 and "exited with status -9" in out and "Traceback" not in out, out
    trials = trials_of(url, "p")
    check_population(trials, population=3, generations=2, interval=2)
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim.number)
    assert retry.state == COMPLETE and retry.user_attrs["pbt_segment"] == victim.user_attrs["pbt_segment"]
    assert retry.user_attrs["resumed_from"]["trial"] == victim.number and retry.params == victim.params
    assert retry.datetime_complete > victim.datetime_start > datetime.datetime(2000, 1, 1)


def test_train_from_study_replays_the_best_members_schedule_epoch_by_epoch(one_worker):
    folder, url = one_worker
    trials = trials_of(url, "p")
    best = max((t for t in trials if t.state == COMPLETE), key=lambda t: (t.value, -t.number))
    chain, current = [], best
    while current is not None:  # the segments that made the best weights, through every copy
        chain.insert(0, current)
        source = current.user_attrs["pbt_segment"]["source"]
        current = next((t for t in trials if t.number == source), None) if source is not None else None
    assert any(t.user_attrs["pbt_segment"]["donor"] is not None for t in chain), "seed 1: the best member copied another"
    done = ok(run(folder, "train", "--from-study", "p", "--save", "replay.pt"))
    assert f"replaying trial {best.number}'s schedule" in done.stdout and "Traceback" not in done.stdout
    record = torch.load(folder / "replay.pt", weights_only=True)
    schedule = record["schedule"]
    assert [e["epoch"] for e in schedule] == [1, 2, 3] and [e["trial"] for e in schedule] == [t.number for t in chain]
    for epoch, segment in zip(schedule, chain):
        assert {k: epoch[k] for k in segment.params} == segment.params
        kind, e = segment.params.get("schedule", "exponential"), epoch["epoch"]
        factor = segment.params.get("lr_gamma", 0.98) ** (e - 1) if kind == "exponential" else (1 + math.cos(math.pi * e / 3)) / 2
        assert epoch["lr_used"] == pytest.approx(segment.params["lr"] * factor, rel=1e-6, abs=1e-12)  # the schedule, rescaled
    assert "test_accuracy" in record["metrics"] and "val_accuracy" not in record["metrics"]
    refused = run(folder, "train", "--from-study", "p", "--lr", "0.01")
    assert refused.returncode == 2 and "--lr cannot be used with a population-based study" in refused.stderr


def test_three_workers_on_postgresql_decide_alike_whatever_their_seeds(pg_url, tmp_path):
    """`study create --pbt` once, then three `mnist-hpo worker` processes, each with its own sampler seed."""
    tiny = ["--profile", "smoke", "--space", str(TINY_SPACE), "--epochs", "3", "--exploit-every", "1"]
    ok(run(tmp_path, "study", "create", "--study", "pg", "--storage", pg_url, "--pbt", "--population", "4", *tiny))
    workers = [start(tmp_path, "worker", "--study", "pg", "--storage", pg_url, "--seed", str(i), *FAST, log=f"w{i}.log") for i in range(3)]
    try:
        codes = [finish(worker) for worker in workers]
    finally:
        stop_all(*workers)
    logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(3))
    assert codes == [0, 0, 0] and "Traceback" not in logs, logs
    trials = trials_of(pg_url, "pg")
    check_population(trials, population=4, generations=3, interval=1)
    assert len({t.user_attrs["worker"] for t in trials}) >= 2  # the segments really were shared out


def test_a_pbt_study_interrupted_by_ctrl_c_is_continued_to_its_exact_budget(tmp_path):
    url = f"sqlite:///{tmp_path / 'mnist-hpo.db'}"
    args = ["search", "--study", "p", "--profile", "smoke", "--space", str(TINY_SPACE), "--pbt", "--population", "3", "--epochs", "4"]
    search = start(tmp_path, *args, "--exploit-every", "1", "--seed", "3", log="first.log")
    try:
        wait_for(lambda: finished_segments(url) >= 4, "four finished segments", processes=(search,))
        search.send_signal(signal.SIGINT)
        code = finish(search)
    finally:
        stop_all(search)
    out = (tmp_path / "first.log").read_text()
    assert code == 130 and "mnist-hpo search --study p" in out and "Traceback" not in out, out
    assert finished_segments(url) < 12
    ok(run(tmp_path, "search", "--study", "p"))
    check_population(trials_of(url, "p"), population=3, generations=4, interval=1)
    assert not list((tmp_path / "mnist-hpo-artifacts").glob("pbt-*"))


def finished_segments(url: str) -> int:
    try:
        return sum(t.state == COMPLETE for t in trials_of(url, "p"))
    except Exception:  # the study is not created yet
        return 0


def test_a_worker_waiting_for_a_member_whose_worker_dies_trains_that_member_itself(tmp_path):
    """Two workers, three members: one waits at the generation's end for the other's segment; that worker is SIGKILLed.

    The waiting worker re-queues the dead segment (its check for dead workers runs while it waits), gives its
    own trial's place up, takes the queued segment and finishes the study alone, to its exact budget.
    """
    url = f"journal:{tmp_path / 'study.log'}"
    ok(run(tmp_path, "study", "create", "--study", "w", "--storage", url, "--pbt", "--population", "3", *TWO_GENERATIONS))
    workers = [start(tmp_path, "worker", "--study", "w", "--storage", url, "--seed", str(i), *FAST, log=f"w{i}.log") for i in range(2)]
    try:

        def waiter_and_victim() -> tuple[int, int] | None:
            for i in range(len(workers)):
                if "waiting for one to finish its segment" in (tmp_path / f"w{i}.log").read_text():
                    other = workers[1 - i]
                    running = [t for t in trials_of(url, "w") if t.state.name == "RUNNING" and "pbt_segment" in t.user_attrs]
                    if any(worker_pid(t) == other.pid for t in running if "worker" in t.user_attrs):
                        return i, 1 - i
            return None

        waiter, victim = wait_for(waiter_and_victim, "a worker waiting on the other's segment", processes=tuple(workers))
        kill(workers[victim].pid)
        assert finish(workers[waiter]) == 0, (tmp_path / f"w{waiter}.log").read_text()
    finally:
        stop_all(*workers)
    log = (tmp_path / f"w{waiter}.log").read_text()
    assert "Traceback" not in log and "makes way" in log, log
    check_population(trials_of(url, "w"), population=3, generations=2, interval=2)


def test_a_worker_waiting_for_a_member_keeps_to_its_timeout(tmp_path):
    """A worker whose last member to place is held by a frozen worker gives the place back at its --timeout, not later.

    The frozen worker's heartbeat is within a long grace period, so nothing re-queues its member: only
    the deadline can end the wait. The place goes back to the queue (the trial failed, a fresh one queued),
    and once the frozen worker goes on, it finishes the study to its exact budget.
    """
    url = f"journal:{tmp_path / 'study.log'}"
    ok(run(tmp_path, "study", "create", "--study", "t", "--storage", url, "--pbt", "--population", "3", *TWO_GENERATIONS))
    patient = ["--heartbeat-interval", "1", "--grace-period", "600"]
    frozen = start(tmp_path, "worker", "--study", "t", "--storage", url, "--seed", "0", *patient, log="frozen.log")
    waiter = None
    try:

        def placed() -> optuna.trial.FrozenTrial | None:
            try:
                return next((t for t in trials_of(url, "t") if t.state.name == "RUNNING" and "pbt_segment" in t.user_attrs), None)
            except Exception:  # the journal file is still being written
                return None

        held = wait_for(placed, "the first worker's segment placed", processes=(frozen,))
        frozen.send_signal(signal.SIGSTOP)  # its member stays RUNNING; its heartbeat stops, well within the grace period
        waiter = start(tmp_path, "worker", "--study", "t", "--storage", url, "--seed", "1", *patient, "--timeout", "60", log="w.log")
        assert finish(waiter, timeout=200) == 0, (tmp_path / "w.log").read_text()
        log = (tmp_path / "w.log").read_text()
        assert "waiting for one to finish its segment" in log and "--timeout reached" in log and "Traceback" not in log, log
        trials = {t.number: t for t in trials_of(url, "t")}
        assert trials[held.number].state.name == "RUNNING", "the frozen worker's member was taken from it"
        given_back = [t for t in trials.values() if "--timeout reached while waiting" in t.user_attrs.get("fail_reason", "")]
        assert len(given_back) == 1 and given_back[0].state.name == "FAIL", trials
        frozen.send_signal(signal.SIGCONT)
        assert finish(frozen) == 0, (tmp_path / "frozen.log").read_text()
    finally:
        frozen.send_signal(signal.SIGCONT)
        stop_all(frozen, *([waiter] if waiter else []))
    check_population(trials_of(url, "t"), population=3, generations=2, interval=2)
