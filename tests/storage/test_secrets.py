"""Secrets are stored nowhere: masked in what a command records, never echoed by an error, scrubbed from old studies.

The end-to-end scan (a real study on a password-protected PostgreSQL with an S3 bucket, then every byte
of a pg_dump, the bucket, the logs, the exports, the report and `ps` searched) is in
tests/distributed/test_object_store.py; here are the pieces a scan of one run cannot reach.
"""

from __future__ import annotations

import sqlite3

import optuna
import pytest
from optuna_dashboard import get_note, save_note
from outside import error_line, ok, run
from pg_cluster import PASSWORD as PG_PASSWORD

from mnist_hpo.redact import command_line, redact

PASSWORD = "Tr0ub4dor&3-horse"
ENV = {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY", "HOME": "/root"}


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "--storage", f"postgresql+psycopg://u:{PASSWORD}@db.example/hpo"],
        ["search", f"--storage=postgresql://u:{PASSWORD}@db.example:5432/hpo?sslmode=require"],
        ["status", "--storage", f"postgresql://u:p@{PASSWORD}@db.example/hpo"],  # an unescaped '@' in the password
        ["status", "--storage", f"postgresql://u:pass word{PASSWORD}@h/db"],  # quoted by the shell: spaces too
        ["status", "--storage", f"postgresql://u@h/db?password={PASSWORD}&sslmode=require"],
        ["report", "--study", "s", "--out", f"/tmp/{ENV['AWS_SECRET_ACCESS_KEY']}.html"],  # a secret environment value
    ],
)
def test_the_recorded_command_line_masks_every_secret(argv):
    recorded = command_line(argv, environ=ENV)
    assert PASSWORD not in recorded and ENV["AWS_SECRET_ACCESS_KEY"] not in recorded, recorded
    assert "***" in recorded and recorded.startswith(f"mnist-hpo {argv[0]} "), recorded


def test_redact_masks_urls_inside_text_and_leaves_the_rest():
    note = f"Created by:\n```\nmnist-hpo search --storage 'postgresql+psycopg://optuna:{PASSWORD}@10.0.0.5/hpo' --study s\n```"
    assert redact(note, environ={}) == note.replace(PASSWORD, "***")
    plain = "mnist-hpo search --storage sqlite:///mnist-hpo.db --artifacts s3://bucket/prefix --study a@b"
    assert redact(plain, environ={}) == plain


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://u:p@{PASSWORD}@nohost.invalid/db",  # the host would be the password's tail
        f"postgresql+psycopg://u:{PASSWORD}@nohost.invalid:notaport/db",
        f"postgresql+psycopg://u:{PASSWORD}@[::1/db",
        f"postgresql+psycopg://u:{PASSWORD}@nohost.invalid/db",
        f"mysql://u:{PASSWORD}@nohost.invalid/db",
    ],
)
def test_a_bad_storage_url_is_one_line_that_echoes_no_part_of_the_password(tmp_path, url):
    line = error_line(run(tmp_path, "status", "--storage", url))
    pieces = {PASSWORD[i : i + 4] for i in range(len(PASSWORD) - 3)}
    assert not [piece for piece in pieces if piece in line], line


def _an_old_study(url: str, name: str, typed: str) -> None:
    """A study as mnist-hpo 0.1 left it: the command line as typed in its settings and in its dashboard note."""
    study = optuna.create_study(storage=url, study_name=name)
    old = {"schema": 2, "profile": "smoke", "space": {}, "objectives": ["accuracy"], "epochs": 2, "data": "fixture", "train_subset": 2000}
    study.set_user_attr("mnist_hpo", {**old, "command": typed})
    save_note(study, f"## Study {name}\n\nCreated by:\n\n```\n{typed}\n```\n" + "x" * 5000)  # a note of three chunks


def test_storage_upgrade_masks_what_older_releases_stored_on_postgresql(pg_url, postgres, tmp_path):
    typed = f"mnist-hpo search --storage {pg_url} --study old"
    _an_old_study(pg_url, "old", typed)
    assert postgres.dump(pg_url.rsplit("/", 1)[1]).count(PG_PASSWORD.encode()) >= 2, "the old study holds it"
    done = ok(run(tmp_path, "storage", "upgrade", MNIST_HPO_STORAGE=pg_url))
    # the settings are rewritten in the current schema (the command masked as it is saved), then the note is scrubbed
    assert "study 'old': settings schema 2 -> " in done.stdout and "study 'old': masked the secrets stored in its note" in done.stdout
    assert "VACUUM FULL" in done.stdout, done.stdout
    assert PG_PASSWORD.encode() not in postgres.dump(pg_url.rsplit("/", 1)[1])
    study = optuna.load_study(study_name="old", storage=pg_url)
    assert study.user_attrs["mnist_hpo"]["command"] == typed.replace(PG_PASSWORD, "***")
    assert "postgres:***@127.0.0.1" in get_note(study) and get_note(study).endswith("x" * 100)
    again = ok(run(tmp_path, "storage", "upgrade", MNIST_HPO_STORAGE=pg_url))
    assert "masked" not in again.stdout, "a second upgrade finds nothing to do"


def test_storage_upgrade_leaves_no_byte_of_the_secret_in_an_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    typed = f"mnist-hpo search --storage postgresql://optuna:{PASSWORD}@db.example/hpo --study copied"  # copied from a server
    _an_old_study(url, "copied", typed)
    ok(run(tmp_path, "storage", "upgrade", "--storage", url))
    files = [path for path in tmp_path.glob("old.db*") if path.is_file()]
    assert files and not [path.name for path in files if PASSWORD.encode() in path.read_bytes()], "VACUUM left no old page behind"
    with sqlite3.connect(tmp_path / "old.db") as db:
        stored = " ".join(str(value) for (value,) in db.execute("SELECT value_json FROM study_user_attributes"))
    assert "optuna:***@db.example" in stored, stored
