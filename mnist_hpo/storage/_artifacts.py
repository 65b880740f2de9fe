"""Artifacts (checkpoints, pictures, resume states) of trials: a folder, or an object store (s3://BUCKET/PREFIX).

Optuna's FileSystemArtifactStore.write opens the final path and copies into it, so a reader can
see a half-written file; AtomicFileSystemArtifactStore writes a temporary file in the same folder
and os.replace()s it, so a reader sees the old file, no file, or the whole new one. Artifacts are
registered with Optuna's public ``upload_artifact``; resume states are plain blobs in the same
store under a name of their own (``write_blob``/``read_blob``), never listed as artifacts. An
``s3://`` location opens Optuna's Boto3ArtifactStore instead (``_object_store``): nothing then
needs a disk that every worker shares.
"""

from __future__ import annotations

import contextlib
import io
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
from mnist_hpo.storage._object_store import is_object_store, open_object_store

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

DEFAULT_ARTIFACTS = "mnist-hpo-artifacts"


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

    def __str__(self) -> str:
        return str(self.directory)


def open_artifacts(location: str | Path | None = None, *, create: bool = True) -> ArtifactStore:
    """The artifact store at ``location``: s3://BUCKET/PREFIX (its bucket checked), else a folder
    (default ./mnist-hpo-artifacts, created if missing and ``create``)."""
    if is_object_store(location):
        return open_object_store(str(location))
    path = _folder(location)
    if path.exists() and not path.is_dir():
        raise UserError(f"artifact folder {path} is a file; pass a folder for --artifacts")
    if not create and not path.is_dir():
        raise UserError(f"no artifact folder {path}; pass the --artifacts folder the search wrote to")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create artifact folder {path}: {exc.strerror or exc}") from None
    return AtomicFileSystemArtifactStore(path)


def check_artifacts(location: str | Path | None = None) -> None:
    """Fail early on a location ``open_artifacts`` would refuse, creating nothing: a bucket is checked,
    a folder must be a folder, or not exist yet below a writable one."""
    if is_object_store(location):
        open_object_store(str(location))
        return
    path = _folder(location).absolute()
    if path.exists() and not path.is_dir():
        raise UserError(f"artifact folder {path} is a file; pass a folder for --artifacts")
    parent = next(p for p in (path, *path.parents) if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create artifact folder {path}: {parent} is not a writable folder")


def existing_artifacts(location: str | Path | None = None) -> tuple[ArtifactStore | None, str]:
    """For readers that can do without pictures (dashboard, report): the store, or None for a missing
    folder, and how to name it. An object store is always opened, so a wrong bucket is an error."""
    if is_object_store(location):
        store = open_object_store(str(location))
        return store, str(store)
    path = _folder(location)
    return (AtomicFileSystemArtifactStore(path) if path.is_dir() else None), str(path)


def _folder(location: str | Path | None) -> Path:
    text = str(location if location is not None else DEFAULT_ARTIFACTS)
    if "://" in text:
        raise UserError(f"--artifacts {text}: unsupported location; use a folder or s3://BUCKET/PREFIX")
    return Path(text).expanduser()


def upload_bytes(
    target: optuna.Study | optuna.Trial, store: ArtifactStore, name: str, data: bytes, mimetype: str = "application/octet-stream"
) -> str:
    """Store ``data`` as artifact file ``name`` of a (running) trial or a study; returns the artifact id.

    A name is written once per holder: Optuna keeps no upload order, so a second file of the same
    name could not be told from the first (``find_artifact``).
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name:
        raise ValueError(f"artifact name must be a plain file name, got {name!r}")
    if any(meta.filename == name for meta in get_all_artifact_meta(target)):
        raise ValueError(f"{target!r} already has an artifact called {name!r}")
    with tempfile.TemporaryDirectory(prefix="mnist-hpo-upload-") as tmp:
        path = os.path.join(tmp, name)  # upload_artifact records the file's basename
        with open(path, "wb") as f:
            f.write(data)
        return upload_artifact(artifact_store=store, file_path=path, study_or_trial=target, mimetype=mimetype)


def find_artifact(storage: BaseStorage, holder: FrozenTrial | optuna.Study, name: str) -> str | None:
    """Id of the artifact called ``name`` of a trial or a study (``upload_bytes`` writes a name once); None if it has none."""
    metas = get_all_artifact_meta(holder, storage=storage) if isinstance(holder, FrozenTrial) else get_all_artifact_meta(holder)
    matches = [meta.artifact_id for meta in metas if meta.filename == name]
    return matches[-1] if matches else None


def download_bytes(store: ArtifactStore, artifact_id: str) -> bytes:
    """The content of artifact ``artifact_id``; a UserError naming the store when it is not there."""
    try:
        with store.open_reader(artifact_id) as f:
            return f.read()
    except ArtifactNotFound:
        raise UserError(f"artifact {artifact_id} is not in the artifact store {store}; pass the --artifacts the search wrote to") from None


def write_blob(store: ArtifactStore, key: str, data: bytes) -> None:
    """Write a blob that is not a trial's artifact (a resume state), atomically where the store allows."""
    store.write(key, io.BytesIO(data))


def read_blob(store: ArtifactStore, key: str) -> bytes | None:
    """The blob under ``key``, or None if there is none."""
    try:
        with store.open_reader(key) as f:
            return f.read()
    except ArtifactNotFound:
        return None


def remove_blob(store: ArtifactStore, key: str) -> None:
    with contextlib.suppress(ArtifactNotFound):
        store.remove(key)
