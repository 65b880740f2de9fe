"""Artifacts on an S3-compatible object store: ``--artifacts s3://BUCKET/PREFIX``.

Workers on many machines need no shared disk when checkpoints, pictures and resume states live in
a bucket. The store is Optuna's own ``Boto3ArtifactStore``, with every key under PREFIX so that
several studies (or projects) can share one bucket. Endpoint and credentials come from the usual
AWS environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, an instance role...), read by boto3 itself. The bucket is checked when the store is
opened, so a missing bucket or refused credentials is one line before any trial runs. An S3 PUT
replaces an object whole, so a reader sees the old object, none, or the whole new one, as with the
atomic folder store.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any, BinaryIO

from optuna.artifacts import Boto3ArtifactStore

from mnist_hpo.errors import UserError

S3_SCHEME = "s3://"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")  # S3's bucket naming rules, in short
CONNECT_TIMEOUT_S, READ_TIMEOUT_S, ATTEMPTS = 10, 60, 5


def is_object_store(location: object) -> bool:
    """Whether an --artifacts value names an object store (s3://...) rather than a folder."""
    return isinstance(location, str) and location.strip().lower().startswith(S3_SCHEME)


def split_s3(location: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://BUCKET/PREFIX``; the prefix ends with '/' unless empty."""
    rest = location.strip()[len(S3_SCHEME) :]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise UserError(f"--artifacts {location}: {bucket!r} is not an S3 bucket name; use s3://BUCKET/PREFIX")
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise UserError(f"--artifacts {location}: the prefix {prefix!r} has an empty, '.' or '..' part; use s3://BUCKET/PREFIX")
    return bucket, f"{prefix}/" if prefix else ""


class PrefixedBoto3ArtifactStore(Boto3ArtifactStore):
    """Optuna's Boto3ArtifactStore with every object under ``prefix`` (artifact ids stay as Optuna made them)."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        super().__init__(bucket, client)
        self.prefix = prefix

    def _key(self, artifact_id: str) -> str:
        if not artifact_id or artifact_id.startswith("/") or ".." in artifact_id.split("/"):
            raise ValueError(f"Invalid artifact_id: {artifact_id}")
        return self.prefix + artifact_id

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return super().open_reader(self._key(artifact_id))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        super().write(self._key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        super().remove(self._key(artifact_id))

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}"


def open_object_store(location: str) -> PrefixedBoto3ArtifactStore:
    """The store behind ``s3://BUCKET/PREFIX``, its bucket checked; every fixable problem is a one-line UserError."""
    bucket, prefix = split_s3(location)
    if importlib.util.find_spec("boto3") is None:
        raise UserError("s3:// artifacts need boto3; run pip install 'mnist-hpo[s3]', or pass a folder for --artifacts")
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S, retries={"max_attempts": ATTEMPTS, "mode": "standard"})
    try:
        client = boto3.session.Session().client("s3", config=config)  # the environment as it is now, not a cached session
    except Exception as exc:  # a malformed AWS_ENDPOINT_URL, an unknown AWS_PROFILE
        raise UserError(f"cannot set up the S3 client for {location}: {_first_line(exc)}; check the AWS_* environment variables") from None
    _check_bucket(client, bucket, location)
    return PrefixedBoto3ArtifactStore(bucket, prefix, client)


def _check_bucket(client: Any, bucket: str, location: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    endpoint = client.meta.endpoint_url
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise UserError(f"no AWS credentials for {location}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket") or status == 404:
            raise UserError(
                f"bucket {bucket!r} does not exist at {endpoint}; create it (aws s3 mb s3://{bucket}) or pass another --artifacts"
            ) from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId") or status == 403:
            raise UserError(
                f"{endpoint} refused access to bucket {bucket!r} ({code or status}); check AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY and the bucket's policy"
            ) from None
        raise UserError(f"cannot use bucket {bucket!r} at {endpoint}: {code or status} {error.get('Message', '')}".rstrip()) from None
    except BotoCoreError as exc:  # unreachable endpoint, timeouts, bad URL
        raise UserError(f"cannot reach the object store at {endpoint} for {location}: {_first_line(exc)}; check AWS_ENDPOINT_URL") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
