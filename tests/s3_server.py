"""A throwaway S3-compatible server: moto's standalone `moto_server` over HTTP on a free loopback port.

It checks credentials like S3 does (INITIAL_NO_AUTH_ACTION_COUNT: after the few set-up calls that
create an IAM user with an S3 policy and its access key, every request must be signed with a key
the server issued), so refused credentials are tested for real. Clients reach it through the usual
AWS environment variables (``env``), exactly as a worker on a cluster would.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SETUP_CALLS = 3  # create_user, put_user_policy, create_access_key: unauthenticated, then auth is on


def moto_server_command() -> list[str] | None:
    """How to start moto's server from this interpreter's environment, or None if moto[server] is missing."""
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script)]
    found = shutil.which("moto_server")
    return [found] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self) -> None:
        command = moto_server_command()
        if command is None:
            raise RuntimeError("moto's server is not installed: pip install 'moto[server]'")
        self.command = command
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="mnist-hpo-moto-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.env: dict[str, str] = {}

    def start(self) -> S3Server:
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS)}
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [*self.command, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        atexit.register(self.stop)
        self._wait_until_up()
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1", **self._issue_key()}
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"moto_server did not answer on {self.endpoint}")

    def _issue_key(self) -> dict[str, str]:
        import boto3

        iam = boto3.session.Session().client(
            "iam", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup"
        )
        iam.create_user(UserName="mnist-hpo")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="mnist-hpo", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="mnist-hpo")["AccessKey"]
        return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    def client(self, **overrides: str):
        """A boto3 S3 client with the issued key (or ``overrides`` of the environment)."""
        import boto3

        env = {**self.env, **overrides}
        return boto3.session.Session().client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.unlink(missing_ok=True)
