"""`mnist-hpo storage upgrade` and `mnist-hpo storage-proxy`."""

from __future__ import annotations

from mnist_hpo import storage as stores
from mnist_hpo.console import console


def upgrade(url: str | None) -> None:
    """Bring the Optuna schema up to date, then every study's stored settings; mask the secrets older releases stored."""
    from mnist_hpo.dashboards.publish import scrub_study_note
    from mnist_hpo.tuning.settings import scrub_secrets, upgrade_settings

    console.print(stores.upgrade_storage(url))
    storage = stores.open_storage(url, must_exist=True)
    scrubbed = False
    for name in stores.list_study_names(storage):
        study = stores.load_study(storage, name)
        line = upgrade_settings(study)
        if line:
            console.print(line)
        masked = scrub_secrets(study) + (["its note"] if scrub_study_note(study) else [])
        if masked:
            console.print(f"study {name!r}: masked the secrets stored in {', '.join(masked)}")
            scrubbed = True
    if scrubbed:
        console.print(stores.compact_storage(url))


def proxy(url: str | None, host: str, port: int) -> None:
    stores.run_storage_proxy(url, host, port)
