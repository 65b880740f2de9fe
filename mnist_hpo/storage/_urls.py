"""Storage URLs: which one to use, and how to show it without its password."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from mnist_hpo.redact import mask_url, without_secrets

__all__ = ["ACCEPTED_FORMS", "DEFAULT_STORAGE", "STORAGE_ENV", "Pasteable", "mask_url", "pasteable", "resolve_url"]

DEFAULT_STORAGE = "sqlite:///mnist-hpo.db"
STORAGE_ENV = "MNIST_HPO_STORAGE"

ACCEPTED_FORMS = (
    "sqlite:///RELATIVE/PATH.db or sqlite:////ABSOLUTE/PATH.db, "
    "postgresql://USER:PASSWORD@HOST:PORT/DB (driven by psycopg 3), "
    "journal:PATH (an Optuna journal file) or grpc://HOST:PORT (an Optuna gRPC proxy)"
)


def resolve_url(url: str | None) -> str:
    """The storage URL to use: `url`, else $MNIST_HPO_STORAGE, else DEFAULT_STORAGE (blank counts as unset)."""
    for candidate in (url, os.environ.get(STORAGE_ENV)):
        if candidate is not None and candidate.strip():
            return candidate.strip()
    return DEFAULT_STORAGE


@dataclass(frozen=True)
class Pasteable:
    """The options a printed command needs to reach the same storage and artifacts, and how to supply a secret."""

    storage: str  # " --storage URL", empty where the default (or $MNIST_HPO_STORAGE) already is that storage
    artifacts: str  # " --artifacts PLACE", empty for the default folder
    secret_note: str | None  # said once, above the commands, when the URL's password was left out


def pasteable(given_storage: str | None, given_artifacts: str | os.PathLike | None) -> Pasteable:
    """Options for the commands mnist-hpo suggests, so that each runs as printed in the user's shell.

    A storage that came from $MNIST_HPO_STORAGE is left to it (the same shell resolves it alike);
    a typed URL is repeated without its password, which libpq then reads from $PGPASSWORD or
    ~/.pgpass: a masked ``***`` pasted back would be sent as the password.
    """
    storage, artifacts, note = "", "", None
    if given_storage is not None and given_storage.strip() and given_storage.strip() != DEFAULT_STORAGE:
        url = given_storage.strip()
        bare = without_secrets(url)
        storage = f" --storage {shlex.quote(bare)}"
        if bare != url:
            note = (
                "the storage password is not printed: set PGPASSWORD (or use ~/.pgpass) before running the commands below, "
                f"or export {STORAGE_ENV} with the whole URL and leave --storage out"
            )
    if given_artifacts is not None and str(given_artifacts).strip():
        artifacts = f" --artifacts {shlex.quote(str(given_artifacts).strip())}"
    return Pasteable(storage, artifacts, note)
