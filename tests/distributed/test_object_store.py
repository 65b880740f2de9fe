"""Artifacts on an object store: a study on PostgreSQL whose checkpoints, pictures and resume states live
in a bucket of a real S3-compatible server (moto's, over HTTP on loopback), nothing on a shared disk.

Two real worker processes, one killed with SIGKILL mid-trial: its retry resumes from the resume
state read back from the bucket. Then `export`, `best --test`, `ensemble`, `report` and the dashboard
read the same bucket.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from pathlib import Path

from dist_helpers import FAST, TINY, assert_exact_budget, cli, finish, ok, running_trial_past_epoch, start, trials_of, wait_for
from optuna.trial import TrialState
from pg_cluster import PASSWORD

from mnist_hpo import storage


def test_two_workers_keep_everything_in_a_bucket_and_a_killed_trial_resumes_from_it(pg_url, postgres, s3, tmp_path):
    bucket = s3.bucket("hpo-kill")
    location = f"s3://{bucket}/studies/kill"
    prefix = "studies/kill/"
    ok(
        cli(
            tmp_path,
            "study",
            "create",
            "--storage",
            pg_url,
            "--study",
            "kill",
            *TINY,
            "--n-trials",
            "2",
            "--epochs",
            "5",
            "--pruner",
            "none",
        )
    )
    workers = [
        start(
            tmp_path,
            "worker",
            "--storage",
            pg_url,
            "--study",
            "kill",
            "--artifacts",
            location,
            "--seed",
            str(i),
            *FAST,
            log=f"w{i}.log",
            **s3.env,
        )
        for i in range(2)
    ]
    try:
        victim = wait_for(lambda: running_trial_past_epoch(pg_url, "kill"), "a trial past its first epoch", processes=workers)
        titles = {w.pid: Path(f"/proc/{w.pid}/cmdline").read_bytes() for w in workers}  # what `ps` shows
        resume_key = f"{prefix}resume-kill-{victim.number}.pt"
        assert resume_key in s3.keys(bucket, prefix), "the resume state is written to the bucket after every better epoch"
        pid = int(victim.user_attrs["worker"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
        codes = {w.pid: finish(w) for w in workers}
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
    assert codes[pid] == -signal.SIGKILL and [c for p, c in codes.items() if p != pid] == [0], logs
    assert f"artifacts in s3://{bucket}/{prefix}" in logs

    trials = trials_of(pg_url, "kill")
    assert_exact_budget(trials, 2)
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim.number)
    resumed = retry.user_attrs["resumed_from"]
    assert retry.state == TrialState.COMPLETE and resumed["trial"] == victim.number and resumed["epoch"] >= 1
    assert min(retry.intermediate_values) == resumed["epoch"] + 1, "the retry went on from the checkpoint it read from the bucket"

    keys = s3.keys(bucket)
    assert keys and all(key.startswith(prefix) for key in keys), keys
    assert not [k for k in keys if "resume-" in k], "resume states are removed once the retry finished"
    registered = {key for t in trials for key in t.system_attrs if key.startswith("artifacts:")}
    assert {f"artifacts:{k.removeprefix(prefix)}" for k in keys} == registered, "every object is a registered artifact, none is missing"
    assert not (tmp_path / "mnist-hpo-artifacts").exists(), "nothing went to a local artifact folder"

    on_bucket = ["--study", "kill", "--storage", pg_url, "--artifacts", location]
    exported = ok(cli(tmp_path, "export", *on_bucket, "--out", "best.pt", **s3.env))
    assert (tmp_path / "best.pt").stat().st_size > 0 and "sha256" in exported.stdout
    best = ok(cli(tmp_path, "best", *on_bucket, "--test", **s3.env))
    assert re.search(r"test accuracy \d+\.\d\d% \([\d,]+ test images\), reported only", best.stdout), best.stdout
    ensemble = ok(cli(tmp_path, "ensemble", *on_bucket, "--top-k", "2", "--out", "ensemble.pt", **s3.env))
    assert "ensemble of 2" in ensemble.stdout and (tmp_path / "ensemble.pt").stat().st_size > 0, ensemble.stdout
    ok(cli(tmp_path, "report", *on_bucket, "--out", "report.html", **s3.env))
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text(), "the best trial's pictures came from the bucket"
    _dashboard_serves_the_bucket(tmp_path, pg_url, location, s3, bucket, prefix, retry)
    _no_secret_stored_anywhere(tmp_path, pg_url, postgres, s3, bucket, titles)


def _no_secret_stored_anywhere(tmp_path, pg_url, postgres, s3, bucket, titles) -> None:
    """The password was on every command line and the S3 secret in every environment: neither is in any byte kept."""
    secrets = {"the database password": PASSWORD.encode(), "the S3 secret key": s3.env["AWS_SECRET_ACCESS_KEY"].encode()}
    dump = postgres.dump(pg_url.rsplit("/", 1)[1])
    assert b"kill" in dump and b"Created by:" in dump, "the dump holds the study, its settings and its note"
    kept = {"pg_dump": dump, **{f"s3://{bucket}/{key}": s3.read(bucket, key) for key in s3.keys(bucket)}}
    kept |= {str(path.relative_to(tmp_path)): path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}  # logs, exports, report
    kept |= {f"/proc/{pid}/cmdline": title for pid, title in titles.items()}
    leaks = [(what, where) for where, data in kept.items() for what, secret in secrets.items() if secret in data]
    assert not leaks, leaks
    assert all(t.startswith(b"mnist-hpo worker --storage 'postgresql+psycopg://postgres:***@") for t in titles.values()), titles


def _dashboard_serves_the_bucket(tmp_path, pg_url, location, s3, bucket, prefix, retry) -> None:
    """optuna-dashboard's own API lists the retry's artifacts, and serves each one's bytes out of the bucket."""
    dashboard = start(tmp_path, "dashboard", "--storage", pg_url, "--artifacts", location, "--port", "0", log="dashboard.log", **s3.env)
    try:
        url = wait_for(
            lambda: re.search(r"http://127\.0\.0\.1:\d+", (tmp_path / "dashboard.log").read_text()),
            "the dashboard's URL",
            processes=(dashboard,),
        ).group(0)
        assert f"artifacts s3://{bucket}/{prefix}" in (tmp_path / "dashboard.log").read_text()
        studies = json.load(_get(f"{url}/api/studies"))["study_summaries"]
        study_id = next(s["study_id"] for s in studies if s["study_name"] == "kill")
        detail = json.load(_get(f"{url}/api/studies/{study_id}"))
        trial = next(t for t in detail["trials"] if t["number"] == retry.number)
        listed = {a["filename"]: a["artifact_id"] for a in trial["artifacts"]}
        assert {"model.pt", "learning-curves.png", "confusion-matrix.png"} <= set(listed), listed
        for artifact_id in listed.values():
            served = _get(f"{url}/artifacts/{study_id}/{trial['trial_id']}/{artifact_id}").read()
            assert served == s3.read(bucket, prefix + artifact_id)
    finally:
        dashboard.terminate()
        finish(dashboard, timeout=30)


def _get(url: str):
    deadline = time.monotonic() + 60
    while True:
        try:
            return urllib.request.urlopen(url, timeout=30)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_a_missing_bucket_or_refused_credentials_stop_everything_before_any_trial(pg_url, s3, tmp_path):
    bucket = s3.bucket("hpo-refused")
    args = ["--storage", pg_url, *TINY, "--n-trials", "1", "--epochs", "1"]
    missing = cli(tmp_path, "search", "--study", "never", "--artifacts", "s3://no-such-bucket/x", *args, **s3.env)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "error: bucket 'no-such-bucket' does not exist at http://127.0.0.1" in missing.stderr
    assert storage.list_study_names(storage.open_storage(pg_url)) == [], "nothing was written: the study was not created"

    ok(cli(tmp_path, "study", "create", "--study", "refused", *args))
    wrong = {**s3.env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    for command in (["worker", "--study", "refused"], ["export", "--study", "refused", "--out", "x.pt"]):  # dashboard: tests/storage
        done = cli(tmp_path, *command, "--storage", pg_url, "--artifacts", f"s3://{bucket}/p", **wrong)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, (command, done.stderr)
        assert "refused access to bucket 'hpo-refused'" in done.stderr, (command, done.stderr)
        assert "not-the-secret" not in done.stderr + done.stdout
    states = [t.state for t in trials_of(pg_url, "refused")]
    assert states == [TrialState.WAITING], "no trial was taken, none is left RUNNING"
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "mnist-hpo-artifacts").exists()
