"""s3:// artifact locations against moto's S3-compatible server over HTTP, and the PostgreSQL network settings."""

from __future__ import annotations

import os
import re
import socket

import pytest
import sqlalchemy

from mnist_hpo import storage
from mnist_hpo.errors import UserError
from mnist_hpo.tuning import Faults, open_for_workers


@pytest.fixture
def aws(s3, monkeypatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3


def test_blobs_and_artifacts_live_under_the_prefix_and_two_prefixes_do_not_meet(aws):
    bucket = aws.bucket("hpo-prefixes")
    one, two = storage.open_artifacts(f"s3://{bucket}/studies/one"), storage.open_artifacts(f"s3://{bucket}/studies/two/")
    assert str(one) == f"s3://{bucket}/studies/one/"
    storage.write_blob(one, "resume-a-0.pt", b"state")
    assert storage.read_blob(one, "resume-a-0.pt") == b"state" and storage.read_blob(two, "resume-a-0.pt") is None
    assert aws.keys(bucket) == ["studies/one/resume-a-0.pt"]
    storage.remove_blob(one, "resume-a-0.pt")
    storage.remove_blob(one, "resume-a-0.pt")  # gone already: still fine
    assert aws.keys(bucket) == [] and storage.read_blob(one, "resume-a-0.pt") is None
    with pytest.raises(UserError, match="is not in the artifact store s3://hpo-prefixes/studies/one/"):
        storage.download_bytes(one, "no-such-id")
    with pytest.raises(ValueError):
        one.write("../escape", None)


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("s3://Bad_Bucket/x", "is not an S3 bucket name"),
        ("s3://hpo-prefixes/a//b", "has an empty, '.' or '..' part"),
        ("s3://hpo-prefixes/../b", "has an empty, '.' or '..' part"),
        ("gs://bucket/x", "unsupported location; use a folder or s3://BUCKET/PREFIX"),
        ("s3://no-such-bucket-here/x", "bucket 'no-such-bucket-here' does not exist at http://127.0.0.1:"),
    ],
)
def test_bad_locations_are_one_line_errors(aws, location, message):
    aws.bucket("hpo-prefixes")
    with pytest.raises(UserError, match=re.escape(message)):
        storage.open_artifacts(location)
    with pytest.raises(UserError):
        storage.existing_artifacts(location)  # readers do not shrug off a wrong bucket as "no pictures"


def test_refused_and_missing_credentials_and_an_unreachable_endpoint_are_one_line_errors(aws, monkeypatch):
    bucket = aws.bucket("hpo-keys")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(UserError, match=f"refused access to bucket '{bucket}'") as refused:
        storage.open_artifacts(f"s3://{bucket}/p")
    assert "wrong-secret" not in str(refused.value)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(UserError, match="no AWS credentials"):
        storage.open_artifacts(f"s3://{bucket}/p")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws.env["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws.env["AWS_SECRET_ACCESS_KEY"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard: nothing listens
    with pytest.raises(UserError, match=re.escape("cannot reach the object store at http://127.0.0.1:9")):
        storage.open_artifacts(f"s3://{bucket}/p")


def test_a_missing_folder_is_only_a_warning_for_readers(tmp_path):
    store, shown = storage.existing_artifacts(tmp_path / "none")
    assert store is None and shown == str(tmp_path / "none")


def test_postgresql_sessions_give_up_on_a_silent_peer_and_workers_keep_one_connection(pg_url):
    """The libpq and server-side TCP settings are really in force on the server, and a URL's query overrides them."""
    faults = Faults(1, 4, 1).validated()
    rdb = open_for_workers(pg_url, faults, must_exist=False)
    with rdb.engine.connect() as connection:
        shown = {
            name: connection.execute(sqlalchemy.text(f"SHOW {name}")).scalar()
            for name in ("tcp_user_timeout", "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
        }
        fd = connection.connection.dbapi_connection.pgconn.socket  # this worker's own socket, as the kernel has it
        with socket.socket(fileno=os.dup(fd)) as sock:
            kernel = (
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            )
    assert kernel == (20_000, 1, 10, 5, 3), "a silent peer is given up after 20 s of unacknowledged data; idle ones are probed"
    assert shown == {"tcp_user_timeout": "20000", "tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}
    assert rdb.engine.pool.size() == storage.WORKER_POOL[0] == 1, "one connection kept open per worker"
    rdb.engine.dispose()
    other = storage.open_storage(pg_url + "?tcp_user_timeout=45000")
    connect_args = other.engine.dialect.create_connect_args(other.engine.url)[1]
    assert connect_args.get("tcp_user_timeout") == "45000", connect_args
    other.engine.dispose()
