"""Where studies and artifacts live: Optuna storages opened from URLs, with one-line UserErrors.

Storage URLs: sqlite:///PATH (default sqlite:///mnist-hpo.db, WAL mode, 60 s busy timeout),
postgresql://USER:PASSWORD@HOST:PORT/DB (psycopg 3), journal:PATH, grpc://HOST:PORT. Artifacts: a folder, or s3://BUCKET/PREFIX (an S3-compatible store).
Passwords never appear in messages: use mask_url() / describe() to show a storage.
What Optuna has no public API for lives in ``_optuna_internals`` alone.
"""

from mnist_hpo.storage._artifacts import (
    DEFAULT_ARTIFACTS,
    AtomicFileSystemArtifactStore,
    check_artifacts,
    download_bytes,
    existing_artifacts,
    find_artifact,
    open_artifacts,
    read_blob,
    remove_blob,
    upload_bytes,
    write_blob,
)
from mnist_hpo.storage._faults import storage_fault
from mnist_hpo.storage._locks import study_lock
from mnist_hpo.storage._object_store import is_object_store
from mnist_hpo.storage._open import compact_storage, describe, open_storage, upgrade_storage
from mnist_hpo.storage._optuna_internals import (
    OptunaInternalsChanged,
    check_optuna,
    count_states,
    is_sql,
    running_attrs,
    running_without_heartbeat,
    take_waiting_trial,
    trial_handle,
    trial_id_of,
)
from mnist_hpo.storage._proxy import run_storage_proxy
from mnist_hpo.storage._reconnect import RECONNECT_ENV, is_connection_lost, ride_out
from mnist_hpo.storage._sql import WORKER_POOL
from mnist_hpo.storage._studies import list_study_names, load_study, study_summary
from mnist_hpo.storage._urls import DEFAULT_STORAGE, STORAGE_ENV, Pasteable, mask_url, pasteable, resolve_url

__all__ = [
    "DEFAULT_ARTIFACTS",
    "DEFAULT_STORAGE",
    "RECONNECT_ENV",
    "STORAGE_ENV",
    "WORKER_POOL",
    "AtomicFileSystemArtifactStore",
    "OptunaInternalsChanged",
    "Pasteable",
    "check_artifacts",
    "check_optuna",
    "compact_storage",
    "count_states",
    "describe",
    "download_bytes",
    "existing_artifacts",
    "find_artifact",
    "is_connection_lost",
    "is_object_store",
    "is_sql",
    "list_study_names",
    "load_study",
    "mask_url",
    "open_artifacts",
    "open_storage",
    "pasteable",
    "read_blob",
    "remove_blob",
    "resolve_url",
    "ride_out",
    "run_storage_proxy",
    "running_attrs",
    "running_without_heartbeat",
    "storage_fault",
    "study_lock",
    "study_summary",
    "take_waiting_trial",
    "trial_handle",
    "trial_id_of",
    "upgrade_storage",
    "upload_bytes",
    "write_blob",
]
