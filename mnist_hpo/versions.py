"""The versions of what produced a study or a checkpoint, read without importing torch."""

from __future__ import annotations

import platform
from importlib import metadata

#: This mnist-hpo's version (``mnist_hpo.__version__``), kept here so the layers below the API can read it.
VERSION = "0.1.0"

LIBRARIES = ("mnist-hpo", "torch", "torchvision", "optuna")


def library_versions() -> dict[str, str]:
    """Installed versions of mnist-hpo and the libraries whose behaviour a result depends on, and Python's."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.replace("-", "_")] = "not installed"
    versions["python"] = platform.python_version()
    return versions
