"""Storage URLs: which one to use, and how to show it without its password."""

from __future__ import annotations

import os

from mnist_hpo.redact import mask_url

__all__ = ["ACCEPTED_FORMS", "DEFAULT_STORAGE", "STORAGE_ENV", "mask_url", "resolve_url"]

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
