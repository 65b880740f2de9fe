"""Artifacts (checkpoints, plots) of trials and studies, kept in a directory next to the study database.

Optuna's FileSystemArtifactStore.write opens the final path and copies into it, so a reader can
see a half-written file; AtomicFileSystemArtifactStore writes a temporary file in the same
directory and os.replace()s it. optuna.artifacts.upload_artifact also records the artifact's
metadata *before* it writes the file, and trial system attributes come back in no defined order,
so upload_bytes additionally records "latest artifact called NAME" once the file is complete, and
find_artifact reads that first.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from mnist_hpo.errors import UserError
from mnist_hpo.files import atomic_write

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

DEFAULT_ARTIFACTS = "mnist-hpo-artifacts"
LATEST_ATTR_PREFIX = "mnist_hpo:latest_artifact:"


class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
    """A FileSystemArtifactStore whose write() is atomic: readers see the old file, no file, or the whole new file."""

    def __init__(self, base_path: str | Path) -> None:
        super().__init__(base_path)
        self.directory = Path(base_path)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        atomic_write(self._path(artifact_id), content_body)

    def _path(self, artifact_id: str) -> Path:
        # Same rule as Optuna's store: a relative id that stays inside the base directory.
        base = os.path.abspath(self.directory)
        path = os.path.abspath(os.path.join(base, artifact_id))
        if os.path.isabs(artifact_id) or os.path.commonpath([base, path]) != base or path == base:
            raise ValueError(f"Invalid artifact_id: {artifact_id}")
        return Path(path)


def open_artifacts(directory: str | Path | None = None) -> FileSystemArtifactStore:
    """The artifact store in `directory` (default ./mnist-hpo-artifacts), created if missing."""
    path = Path(directory if directory is not None else DEFAULT_ARTIFACTS).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"artifact directory {path} is a file; pass a directory for the artifacts")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create artifact directory {path}: {exc.strerror or exc}") from None
    return AtomicFileSystemArtifactStore(path)


def _storage_of(target: optuna.Study | optuna.Trial | FrozenTrial, storage: BaseStorage | None) -> BaseStorage:
    if storage is not None:
        return storage
    if isinstance(target, optuna.Trial):
        return target.storage
    if isinstance(target, optuna.Study):
        return target._storage
    raise ValueError("pass storage= when the target is a FrozenTrial")


def upload_bytes(
    target: optuna.Study | optuna.Trial | FrozenTrial,
    store: ArtifactStore,
    name: str,
    data: bytes,
    mimetype: str = "application/octet-stream",
    *,
    storage: BaseStorage | None = None,
) -> str:
    """Store `data` as artifact file `name` of a (running) trial or a study; returns the artifact id."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name:
        raise ValueError(f"artifact name must be a plain file name, got {name!r}")
    storage = _storage_of(target, storage)
    with tempfile.TemporaryDirectory(prefix="mnist-hpo-upload-") as tmp:
        path = os.path.join(tmp, name)  # upload_artifact records the file's basename
        with open(path, "wb") as f:
            f.write(data)
        artifact_id = upload_artifact(
            artifact_store=store, file_path=path, study_or_trial=target, storage=storage, mimetype=mimetype
        )
    if isinstance(target, optuna.Study):
        storage.set_study_system_attr(target._study_id, LATEST_ATTR_PREFIX + name, artifact_id)
    else:
        storage.set_trial_system_attr(target._trial_id, LATEST_ATTR_PREFIX + name, artifact_id)
    return artifact_id


def find_artifact(
    source: optuna.Study | BaseStorage,
    trial: int | FrozenTrial | optuna.Trial | None,
    name: str,
) -> str | None:
    """Id of the latest artifact called `name` of `trial` (a trial id, or None for the study's own); None if absent."""
    storage = source._storage if isinstance(source, optuna.Study) else source
    if trial is None:
        if not isinstance(source, optuna.Study):
            raise ValueError("pass a Study to find a study-level artifact")
        attrs = storage.get_study_system_attrs(source._study_id)
        holder: optuna.Study | FrozenTrial = source
    else:
        trial_id = trial if isinstance(trial, int) else trial._trial_id
        attrs = storage.get_trial_system_attrs(trial_id)
        holder = storage.get_trial(trial_id)
    latest = attrs.get(LATEST_ATTR_PREFIX + name)
    if isinstance(latest, str):
        return latest
    # Uploaded by something else than upload_bytes: the last one listed (insertion order, best effort).
    matches = [m.artifact_id for m in get_all_artifact_meta(holder, storage=storage) if m.filename == name]
    return matches[-1] if matches else None


def download_bytes(store: ArtifactStore, artifact_id: str) -> bytes:
    """The content of artifact `artifact_id`."""
    try:
        with store.open_reader(artifact_id) as f:
            return f.read()
    except ArtifactNotFound:
        where = getattr(store, "directory", None)
        place = f"the artifact directory {where}" if where is not None else "the artifact store"
        raise UserError(
            f"artifact {artifact_id} is not in {place}; pass the artifact directory the search wrote to"
        ) from None
