"""Where studies and artifacts live: Optuna storages opened from URLs, with one-line UserErrors.

Storage URLs: sqlite:///PATH (default sqlite:///mnist-hpo.db, WAL mode, 60 s busy timeout),
postgresql://USER:PASSWORD@HOST:PORT/DB (psycopg 3), journal:PATH, grpc://HOST:PORT.
Passwords never appear in messages: use mask_url() / describe_storage() to show a storage.
"""

from mnist_hpo.storage._artifacts import (
    DEFAULT_ARTIFACTS,
    AtomicFileSystemArtifactStore,
    download_bytes,
    find_artifact,
    open_artifacts,
    upload_bytes,
)
from mnist_hpo.storage._open import is_connection_error, open_storage, upgrade_storage
from mnist_hpo.storage._proxy import run_storage_proxy
from mnist_hpo.storage._studies import describe_storage, list_study_names, load_study, study_summary
from mnist_hpo.storage._urls import DEFAULT_STORAGE, STORAGE_ENV, mask_url, resolve_url

__all__ = [
    "DEFAULT_ARTIFACTS",
    "DEFAULT_STORAGE",
    "STORAGE_ENV",
    "AtomicFileSystemArtifactStore",
    "describe_storage",
    "download_bytes",
    "find_artifact",
    "is_connection_error",
    "list_study_names",
    "load_study",
    "mask_url",
    "open_artifacts",
    "open_storage",
    "resolve_url",
    "run_storage_proxy",
    "study_summary",
    "upgrade_storage",
    "upload_bytes",
]
