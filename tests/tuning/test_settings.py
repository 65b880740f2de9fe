"""Stored study settings carry a schema version: older ones load, newer ones are refused in one line."""

from __future__ import annotations

import optuna
import pytest

from mnist_hpo.tuning import SearchRequest, StudySettings, get_profile, new_settings
from mnist_hpo.tuning.attrs import SETTINGS_ATTR
from mnist_hpo.tuning.settings import SCHEMA, SettingsVersionError, upgrade_settings


def stored(**changes) -> dict:
    data = new_settings(SearchRequest(profile="smoke"), get_profile("smoke", False)).to_dict()
    data.update(changes)
    return data


def test_settings_of_schema_1_load_and_are_rewritten_by_upgrade():
    old = stored()
    for key in ("schema", "stop_after", "target", "terminator", "warm_start", "epoch_images"):
        old.pop(key)
    old["objectives"], old["pruner"] = ["accuracy", "params"], "hyperband"  # schema 1 ignored --pruner with two objectives
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="old")
    study.set_user_attr(SETTINGS_ATTR, old)
    settings = StudySettings.load(study)
    assert settings.schema == SCHEMA and settings.pruner == "threshold" and settings.stop_after is None
    assert upgrade_settings(study) == f"study 'old': settings schema 1 -> {SCHEMA}"
    assert study.user_attrs[SETTINGS_ATTR]["schema"] == SCHEMA and upgrade_settings(study) is None


def test_settings_of_a_newer_mnist_hpo_are_refused_with_both_versions_and_the_fix():
    newer = stored(schema=SCHEMA + 1, versions={"mnist_hpo": "9.0.0"})
    with pytest.raises(
        SettingsVersionError,
        match=rf"written by mnist-hpo 9.0.0 \(settings schema {SCHEMA + 1}\).*reads schema {SCHEMA} and older: install mnist-hpo>=9.0.0",
    ) as error:
        StudySettings.from_dict(newer, "future")
    assert "\n" not in str(error.value)
    with pytest.raises(SettingsVersionError, match="install mnist-hpo>="):
        StudySettings.from_dict(stored(sampler_options={"x": 1}), "future")  # a field this version does not know
