"""Storage layer: URLs, SQLite/journal/PostgreSQL opening, studies, artifacts. Real files, no mocks."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys

import optuna
import pytest
from sqlalchemy.engine import make_url

from mnist_hpo.errors import UserError
from mnist_hpo.storage import (
    DEFAULT_ARTIFACTS,
    DEFAULT_STORAGE,
    STORAGE_ENV,
    AtomicFileSystemArtifactStore,
    describe,
    download_bytes,
    find_artifact,
    list_study_names,
    load_study,
    mask_url,
    open_artifacts,
    open_storage,
    pasteable,
    resolve_url,
    study_summary,
    upgrade_storage,
    upload_bytes,
)


def sqlite_url(tmp_path, name="studies.db"):
    return f"sqlite:///{tmp_path / name}"


def journal_mode(path) -> str:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        connection.close()


def run_study(storage, name, n_trials=2, directions=("minimize",)):
    study = optuna.create_study(storage=storage, study_name=name, directions=list(directions))
    study.optimize(lambda t: tuple(t.suggest_float(f"x{i}", 0, 1) for i in range(len(directions))), n_trials=n_trials)
    return study


# --- URLs -----------------------------------------------------------------------------------


def test_resolve_url_prefers_argument_then_environment_then_default(monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert resolve_url(None) == DEFAULT_STORAGE == "sqlite:///mnist-hpo.db"
    monkeypatch.setenv(STORAGE_ENV, "journal:env.log")
    assert resolve_url(None) == "journal:env.log"
    assert resolve_url("sqlite:///arg.db") == "sqlite:///arg.db"
    monkeypatch.setenv(STORAGE_ENV, "  ")
    assert resolve_url(None) == DEFAULT_STORAGE
    assert resolve_url("") == DEFAULT_STORAGE


def test_mask_url_hides_password_of_parseable_url():
    masked = mask_url("postgresql+psycopg://user:secret@host:5432/db")
    assert masked == "postgresql+psycopg://user:***@host:5432/db"
    assert "secret" not in masked


@pytest.mark.parametrize(
    "url, secret",
    [
        ("postgresql://u:hunter2@h:notaport/db", "hunter2"),  # SQLAlchemy cannot parse the port
        ("postgresql://u:p@ss+w0rd@h/db", "ss+w0rd"),  # unescaped '@' in the password
        ("user:hunter2@host/db", "hunter2"),  # no scheme at all
        ("postgresql://h/db?user=u&password=hunter2", "hunter2"),  # libpq-style query parameter
    ],
)
def test_mask_url_hides_password_of_odd_strings(url, secret):
    masked = mask_url(url)
    assert secret not in masked
    assert "***" in masked


def test_mask_url_leaves_urls_without_password_alone():
    for url in ("sqlite:///mnist-hpo.db", "journal:/tmp/a@b.log", "postgresql://u@h/db", "foo"):
        assert mask_url(url) == url


# --- SQLite ---------------------------------------------------------------------------------


def test_sqlite_storage_is_created_in_wal_mode(tmp_path):
    storage = open_storage(sqlite_url(tmp_path))
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert (tmp_path / "studies.db").is_file()
    assert journal_mode(tmp_path / "studies.db") == "wal"
    assert storage.engine.url.database == str(tmp_path / "studies.db")
    storage.engine.dispose()


def test_sqlite_must_exist_on_missing_file_raises_and_creates_nothing(tmp_path):
    with pytest.raises(UserError, match="no study database at .*missing.db; run `mnist-hpo search` first"):
        open_storage(sqlite_url(tmp_path, "missing.db"), must_exist=True)
    assert list(tmp_path.iterdir()) == []


def test_sqlite_in_missing_directory_raises(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_storage(sqlite_url(tmp_path, "nowhere/studies.db"))
    assert not (tmp_path / "nowhere").exists()


def test_sqlite_file_that_is_not_a_database_raises(tmp_path):
    (tmp_path / "notes.db").write_text("not a database\n" * 100)
    with pytest.raises(UserError, match="notes.db: file is not a database"):
        open_storage(sqlite_url(tmp_path, "notes.db"))


def test_sqlite_study_round_trip(tmp_path, monkeypatch):
    url = sqlite_url(tmp_path)
    written = run_study(open_storage(url), "round-trip", n_trials=3)
    monkeypatch.setenv(STORAGE_ENV, url)  # and open it the way the CLI does: through the environment
    storage = open_storage(None, must_exist=True)
    assert list_study_names(storage) == ["round-trip"]
    study = load_study(storage, "round-trip")
    assert [t.params for t in study.trials] == [t.params for t in written.trials]
    assert study.best_value == written.best_value
    summary = study_summary(url, "round-trip")
    assert summary["counts"]["COMPLETE"] == 3 and summary["counts"]["FAIL"] == 0
    assert set(summary["counts"]) == {s.name for s in optuna.trial.TrialState}
    assert summary["directions"] == ["minimize"] and summary["best_values"] == [written.best_value]
    assert summary["best_trials"] == [{"number": written.best_trial.number, "values": [written.best_value], "params": written.best_params}]


def test_study_summary_of_multi_objective_study_and_of_an_empty_one(tmp_path):
    storage = open_storage(sqlite_url(tmp_path))
    written = run_study(storage, "two", n_trials=4, directions=("minimize", "maximize"))
    optuna.create_study(storage=storage, study_name="empty")
    summary = study_summary(storage, "two")
    assert summary["directions"] == ["minimize", "maximize"]
    values = [t.values for t in written.trials]
    assert summary["best_values"] == [min(v[0] for v in values), max(v[1] for v in values)]
    front = summary["best_trials"]
    assert [b["number"] for b in front] == sorted(t.number for t in written.best_trials)
    empty = study_summary(storage, "empty")
    assert empty["n_trials"] == 0 and empty["best_trials"] == [] and empty["best_values"] is None


def test_load_study_with_unknown_name_lists_existing_studies(tmp_path):
    url = sqlite_url(tmp_path)
    storage = open_storage(url)
    with pytest.raises(UserError, match=r"no study 'c' in sqlite:///.*; the storage holds no studies"):
        load_study(storage, "c")
    optuna.create_study(storage=storage, study_name="a")
    optuna.create_study(storage=storage, study_name="b")
    with pytest.raises(UserError, match=r"no study 'c' in sqlite:///.*studies.db; existing studies: a, b$"):
        load_study(url, "c")


def test_outdated_schema_asks_for_upgrade_and_upgrade_fixes_it(tmp_path):
    url = sqlite_url(tmp_path)
    run_study(open_storage(url), "old", n_trials=1)
    # Turn the file into a genuine Optuna 3.0 schema: the last migration only adds this index.
    connection = sqlite3.connect(tmp_path / "studies.db")
    connection.execute("DROP INDEX ix_trials_study_id")
    connection.execute("UPDATE alembic_version SET version_num = 'v3.0.0.d'")
    connection.commit()
    connection.close()
    with pytest.raises(UserError, match="older Optuna database schema.*`mnist-hpo storage upgrade`"):
        open_storage(url)
    summary = upgrade_storage(url)
    assert summary.endswith("schema upgraded from v3.0.0.d to v3.2.0.a") and "\n" not in summary
    assert list_study_names(open_storage(url, must_exist=True)) == ["old"]
    assert upgrade_storage(url).endswith("already up to date (v3.2.0.a)")


def test_upgrade_of_missing_database_creates_nothing(tmp_path):
    with pytest.raises(UserError, match="no study database"):
        upgrade_storage(sqlite_url(tmp_path, "missing.db"))
    assert list(tmp_path.iterdir()) == []


# --- other schemes --------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["mysql://u:hunter2@h/db", "foo", "sqlite:/bad", "redis://h:6379", "sqlite://"])
def test_unknown_scheme_lists_accepted_forms(url):
    with pytest.raises(UserError) as info:
        open_storage(url)
    message = str(info.value)
    for form in ("sqlite:///", "postgresql://", "journal:", "grpc://"):
        assert form in message
    assert "hunter2" not in message and "\n" not in message


def test_unreachable_postgres_fails_without_showing_the_password():
    with pytest.raises(UserError) as info:
        open_storage("postgresql://u:pw@127.0.0.1:1/db")  # nothing listens on port 1: refused, not retried
    message = str(info.value)
    assert "***" in message and "pw" not in message and "\n" not in message
    assert "127.0.0.1" in message


def test_journal_round_trip(tmp_path):
    url = f"journal:{tmp_path / 'x.log'}"
    written = run_study(open_storage(url), "journal", n_trials=2)
    storage = open_storage(url, must_exist=True)
    assert isinstance(storage, optuna.storages.JournalStorage)
    assert describe(storage) == url
    study = load_study(storage, "journal")
    assert [t.values for t in study.trials] == [t.values for t in written.trials]
    assert len(study.trials) == 2


def test_journal_must_exist_and_missing_directory(tmp_path):
    with pytest.raises(UserError, match="no study journal at"):
        open_storage(f"journal:{tmp_path / 'missing.log'}", must_exist=True)
    with pytest.raises(UserError, match="does not exist"):
        open_storage(f"journal:{tmp_path / 'nowhere' / 'x.log'}")
    assert list(tmp_path.iterdir()) == []


NO_GRPC = "import sys; sys.modules['grpc'] = None  # as if grpcio were not installed\n"


def test_grpc_without_grpcio_says_what_to_install(tmp_path):
    """In a fresh process where `import grpc` fails, as on an install without the grpc extra."""
    worker = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_GRPC + "from mnist_hpo.cli import main; main(sys.argv[1:])",
            "worker",
            "--study",
            "x",
            "--storage",
            "grpc://localhost:13000",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 2, worker.stderr
    assert worker.stderr.startswith("error: grpc:// storages need the grpcio and protobuf packages; run pip install 'mnist-hpo[grpc]'")
    assert len(worker.stderr.splitlines()) == 1 and "Traceback" not in worker.stderr
    proxy = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_GRPC + "from mnist_hpo.cli import main; main(sys.argv[1:])",
            "storage-proxy",
            "--storage",
            sqlite_url(tmp_path),
            "--port",
            "13999",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proxy.returncode == 2, proxy.stderr
    assert proxy.stderr.startswith("error: the gRPC proxy needs grpcio and protobuf: pip install 'mnist-hpo[grpc]'"), proxy.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is created before the refusal"


def test_live_postgres_round_trip_and_wrong_password(pg_url):
    """The session's throwaway PostgreSQL server (tests/conftest.py), with password authentication."""
    name = "storage-test"
    storage = open_storage(pg_url, heartbeat_interval=60)
    written = run_study(storage, name, n_trials=2)
    assert name in list_study_names(open_storage(pg_url, must_exist=True))
    assert study_summary(pg_url, name)["counts"]["COMPLETE"] == 2
    password = make_url(pg_url).password
    assert password and password not in describe(storage) and "***" in describe(storage)
    wrong = make_url(pg_url).set(password="definitely-wrong").render_as_string(hide_password=False)
    with pytest.raises(UserError, match="password authentication failed") as info:
        open_storage(wrong)
    assert "definitely-wrong" not in str(info.value)
    assert [t.values for t in load_study(pg_url, name).trials] == [t.values for t in written.trials]


# --- artifacts ------------------------------------------------------------------------------


def test_artifact_round_trip_keeps_one_file_per_name_and_leaves_no_temp_files(tmp_path):
    store = open_artifacts(tmp_path / "artifacts")
    assert isinstance(store, AtomicFileSystemArtifactStore)
    storage = open_storage(sqlite_url(tmp_path))
    study = optuna.create_study(storage=storage, study_name="art")
    trial = study.ask()
    data = os.urandom(200_000)
    first = upload_bytes(trial, store, "weights.bin", data)
    with pytest.raises(ValueError, match="already has an artifact called 'weights.bin'"):  # Optuna keeps no order to tell them apart
        upload_bytes(trial, store, "weights.bin", b"new" * 1000)
    upload_bytes(trial, store, "curve.json", b"{}", "application/json")
    study.tell(trial, 0.5)

    frozen = study.trials[0]
    assert find_artifact(storage, frozen, "weights.bin") == first
    assert find_artifact(storage, frozen, "missing.bin") is None
    assert download_bytes(store, first) == data
    metas = optuna.artifacts.get_all_artifact_meta(frozen, storage=storage)
    assert {m.mimetype for m in metas if m.filename == "curve.json"} == {"application/json"}
    # Only the two artifacts themselves: no temporary files in the store, nothing else written.
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == sorted(m.artifact_id for m in metas)


def test_study_level_artifacts_and_plain_file_names(tmp_path):
    store = open_artifacts(tmp_path / "artifacts")
    storage = open_storage(sqlite_url(tmp_path))
    study = optuna.create_study(storage=storage, study_name="art")
    artifact_id = upload_bytes(study, store, "report.txt", b"hello", "text/plain")
    assert find_artifact(storage, study, "report.txt") == artifact_id
    trial = study.ask()
    with pytest.raises(ValueError, match="plain file name"):
        upload_bytes(trial, store, "../escape.bin", b"x")


def test_artifact_written_by_plain_optuna_upload_is_found(tmp_path):
    store = open_artifacts(tmp_path / "artifacts")
    storage = open_storage(sqlite_url(tmp_path))
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    source = tmp_path / "model.pt"
    source.write_bytes(b"plain")
    artifact_id = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(source), study_or_trial=trial)
    study.tell(trial, 1.0)
    assert find_artifact(storage, study.trials[0], "model.pt") == artifact_id


def test_failed_atomic_write_leaves_nothing_behind(tmp_path):
    store = open_artifacts(tmp_path / "artifacts")

    class Broken(io.RawIOBase):
        calls = 0

        def readable(self):
            return True

        def readinto(self, buffer):
            self.calls += 1
            if self.calls > 2:
                raise OSError("disk went away")
            buffer[:4] = b"data"
            return 4

    with pytest.raises(OSError, match="disk went away"):
        store.write("some-id", io.BufferedReader(Broken()))
    assert list((tmp_path / "artifacts").iterdir()) == []
    with pytest.raises(UserError, match="artifact some-id is not in the artifact store"):
        download_bytes(store, "some-id")
    with pytest.raises(ValueError):
        store.write("../outside", io.BytesIO(b"x"))


def test_open_artifacts_defaults_to_cwd_and_rejects_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_artifacts()
    assert (tmp_path / DEFAULT_ARTIFACTS).is_dir()
    assert store.directory == type(store.directory)(DEFAULT_ARTIFACTS)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        open_artifacts(tmp_path / "file")


@pytest.mark.parametrize(
    ("given", "storage", "needs_secret"),
    [
        (None, "", False),  # the default, or $MNIST_HPO_STORAGE: the same shell finds it again
        ("sqlite:///mnist-hpo.db", "", False),
        ("journal:runs/s.log", " --storage journal:runs/s.log", False),
        ("sqlite:///my studies/a.db", " --storage 'sqlite:///my studies/a.db'", False),
        ("postgresql+psycopg://optuna:s3cr%40t@db:5432/hpo", " --storage postgresql+psycopg://optuna@db:5432/hpo", True),
        ("postgresql://u@db/hpo?sslmode=require&password=s3cret", " --storage 'postgresql://u@db/hpo?sslmode=require'", True),
    ],
)
def test_suggested_commands_carry_the_storage_without_its_secret(given, storage, needs_secret):
    paste = pasteable(given, "s3://bucket/runs")
    assert (paste.storage, paste.artifacts) == (storage, " --artifacts s3://bucket/runs")
    assert (paste.secret_note is not None) == needs_secret
    assert "s3cr" not in paste.storage and "***" not in paste.storage
