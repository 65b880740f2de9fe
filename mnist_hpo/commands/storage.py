"""`mnist-hpo storage upgrade` and `mnist-hpo storage-proxy`."""

from __future__ import annotations

from mnist_hpo import storage as stores
from mnist_hpo.console import console


def upgrade(url: str | None) -> None:
    """Bring the Optuna schema up to date, then every mnist-hpo study's stored settings."""
    from mnist_hpo.search.settings import upgrade_settings

    console.print(stores.upgrade_storage(url))
    storage = stores.open_storage(url, must_exist=True)
    for name in stores.list_study_names(storage):
        line = upgrade_settings(stores.load_study(storage, name))
        if line:
            console.print(line)


def proxy(url: str | None, host: str, port: int) -> None:
    stores.run_storage_proxy(url, host, port)
