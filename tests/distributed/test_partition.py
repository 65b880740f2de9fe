"""A real network partition: one worker in its own network namespace, talking to PostgreSQL over a veth
link that the test cuts (`ip link set ... down`) and restores, while another worker on this host goes on.

Cut for longer than the grace period: the other worker fails the cut-off trial and retries it from its
checkpoint, the budget ends exact, and once the link is back the cut-off worker's late writes are
refused (nothing overwritten, duplicated or brought back) and it exits cleanly. Cut for less than the
grace period: the trial rides it out, with no retry and every epoch recorded.
"""

from __future__ import annotations

import subprocess
import time

from dist_helpers import TINY, assert_exact_budget, cli, finish, ok, running_trial_past_epoch, start, trials_of, wait_for
from optuna.trial import TrialState

EPOCHS = 8  # tiny epochs (1-4 s on 2 busy cores): room for the other worker to start and for the cut to land mid-trial
CUT_S = 6  # the short cut: several heartbeats lost, well inside its 20 s grace period


def _two_workers(tmp_path, url: str, study: str, heartbeat: list[str], network) -> tuple[subprocess.Popen, subprocess.Popen]:
    """The namespaced worker takes the study's one trial; then the other worker joins, on this host, and watches."""
    ok(
        cli(
            tmp_path,
            "study",
            "create",
            "--storage",
            url,
            "--study",
            study,
            *TINY,
            "--n-trials",
            "1",
            "--epochs",
            str(EPOCHS),
            "--pruner",
            "none",
        )
    )
    cut_off = start(
        tmp_path, "worker", "--storage", url, "--study", study, "--seed", "0", *heartbeat, log="cut-off.log", inside=tuple(network.prefix)
    )
    wait_for(
        lambda: any(t.state == TrialState.RUNNING and "worker" in t.user_attrs for t in trials_of(url, study)),
        "the namespaced worker's trial",
        processes=(cut_off,),
    )
    other = start(tmp_path, "worker", "--storage", url, "--study", study, "--seed", "1", *heartbeat, log="other.log")
    wait_for(lambda: "joined study" in (tmp_path / "other.log").read_text(), "the other worker", processes=(cut_off, other))
    return cut_off, other


def _logs(tmp_path) -> dict[str, str]:
    return {name: (tmp_path / f"{name}.log").read_text() for name in ("cut-off", "other")}


def _stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_worker_cut_off_past_the_grace_period_is_retried_elsewhere_and_refused_when_it_returns(pg_url, worker_network, tmp_path):
    cut_off, other = _two_workers(tmp_path, pg_url, "cut", ["--heartbeat-interval", "1", "--grace-period", "4"], worker_network)
    try:
        victim = wait_for(lambda: running_trial_past_epoch(pg_url, "cut"), "a trial past epoch 1", processes=(cut_off, other))
        worker_network.cut()
        retry = wait_for(
            lambda: next(
                (
                    t
                    for t in trials_of(pg_url, "cut")
                    if t.user_attrs.get("retry_of") == victim.number and t.state == TrialState.RUNNING and t.intermediate_values
                ),
                None,
            ),
            "the other worker's retry, past its first epoch",
            processes=(other,),
        )
        failed = next(t for t in trials_of(pg_url, "cut") if t.number == victim.number)
        assert failed.state == TrialState.FAIL
        worker_network.restore()  # the cut-off worker comes back while the retry still trains
        codes = [finish(cut_off), finish(other)]
    finally:
        worker_network.restore()
        _stop(cut_off, other)
    logs = _logs(tmp_path)
    assert codes == [0, 0], logs

    trials = trials_of(pg_url, "cut")
    assert_exact_budget(trials, 1)
    assert len(trials) == 2, "the cut-off trial and its one retry: nothing duplicated"
    after = next(t for t in trials if t.number == victim.number)
    assert after.state == TrialState.FAIL, "not resurrected"
    assert after.intermediate_values == failed.intermediate_values and after.user_attrs == failed.user_attrs, "not overwritten"
    done = next(t for t in trials if t.number == retry.number)
    resumed = done.user_attrs["resumed_from"]
    assert done.state == TrialState.COMPLETE and resumed["trial"] == victim.number and resumed["epoch"] >= 1
    assert min(done.intermediate_values) == resumed["epoch"] + 1 and max(done.intermediate_values) == EPOCHS
    assert done.user_attrs["worker"] != victim.user_attrs["worker"]
    assert f"trial {victim.number} was failed by another worker meanwhile" in logs["cut-off"], logs["cut-off"]
    assert "late result was refused" in logs["cut-off"]

    artifacts = tmp_path / "mnist-hpo-artifacts"
    assert not list(artifacts.glob("resume-*")), "no resume state is left behind by either worker"
    registered = {key.removeprefix("artifacts:") for t in trials for key in t.system_attrs if key.startswith("artifacts:")}
    assert {p.name for p in artifacts.iterdir() if p.is_file()} == registered, "every file there is a registered artifact: no orphans"


def test_a_cut_shorter_than_the_grace_period_is_ridden_out_without_a_retry_or_a_lost_epoch(pg_url, worker_network, tmp_path):
    cut_off, other = _two_workers(tmp_path, pg_url, "blip", ["--heartbeat-interval", "1", "--grace-period", "20"], worker_network)
    try:
        wait_for(lambda: running_trial_past_epoch(pg_url, "blip"), "a trial past epoch 1", processes=(cut_off, other))
        worker_network.cut()
        time.sleep(CUT_S)  # meanwhile the other worker looks for dead trials on every idle poll
        worker_network.restore()
        codes = [finish(cut_off), finish(other)]
    finally:
        worker_network.restore()
        _stop(cut_off, other)
    logs = _logs(tmp_path)
    assert codes == [0, 0], logs
    trials = trials_of(pg_url, "blip")
    assert_exact_budget(trials, 1)
    assert [t.state for t in trials] == [TrialState.COMPLETE], "no retry: the trial was never failed"
    assert sorted(trials[0].intermediate_values) == list(range(1, EPOCHS + 1)), "every epoch recorded, none lost or repeated"
    assert trials[0].user_attrs["epochs_run"] == EPOCHS and "resumed_from" not in trials[0].user_attrs
    assert "refused" not in logs["cut-off"] + logs["other"]
