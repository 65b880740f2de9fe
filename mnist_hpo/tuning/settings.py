"""What a study records about itself, so it is reproducible and workers need only its name.

The settings carry a schema version. Settings written by an older mnist-hpo are read as they are
(missing fields take their defaults) and rewritten by `mnist-hpo storage upgrade`; settings of a
newer schema are refused with a one-line error naming both versions and what to install.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import optuna

from mnist_hpo import redact
from mnist_hpo.errors import UserError
from mnist_hpo.tuning.attrs import SETTINGS_ATTR
from mnist_hpo.versions import VERSION

DEFAULT_PRUNER = "sha"  # one objective; successive halving since 2026-12-05 (BENCHMARKS.md "Peers")
SCHEMA = 4  # 1: no schema field (mnist-hpo 0.1); 2: schema, stop rules, warm start; 3: population-based training; 4: baseline
OBJECTIVES = {"accuracy": "maximize", "params": "minimize"}


class SettingsVersionError(UserError):
    """Stored settings of a schema this mnist-hpo cannot read."""


@dataclass
class StudySettings:
    profile: str
    space: dict[str, dict[str, Any]]
    objectives: list[str]
    epochs: int
    data: str
    train_subset: int | None
    epoch_images: int | None = None  # images per epoch, a fresh draw from the training split; None: all
    n_trials: int | None = None  # the study's global budget: finished trials across all workers
    max_params: int | None = None
    min_accuracy: float = 0.5  # the threshold pruner: validation accuracy below this after an epoch stops a trial
    seed: int | None = None
    sampler: str = "tpe"
    pruner: str = DEFAULT_PRUNER
    stop_after: int | None = None  # stop when the last N finished trials brought no better best validation
    target: float | None = None  # stop once a trial reaches this validation accuracy
    terminator: bool = False  # stop when Optuna's Terminator says the regret bound is below the noise
    warm_start: str | None = None  # the study whose finished trials seeded this one's sampler
    pbt: dict[str, Any] | None = None  # population-based training (tuning.pbt.Pbt.to_dict), or None
    baseline: bool = True  # the published configuration is queued as trial 0
    data_digest: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    command: str = ""
    schema: int = SCHEMA

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, study: optuna.Study) -> None:
        study.set_user_attr(SETTINGS_ATTR, {**self.to_dict(), "command": redact.redact(self.command)})

    @classmethod
    def load(cls, study: optuna.Study) -> StudySettings:
        data = study.user_attrs.get(SETTINGS_ATTR)
        if not data:
            raise UserError(f"study {study.study_name!r} was not created by mnist-hpo (no settings recorded); use another --study name")
        return cls.from_dict(data, study.study_name)

    @classmethod
    def from_dict(cls, data: dict[str, Any], study_name: str = "?") -> StudySettings:
        """Read stored settings of this schema or an older one; a newer one is a one-line error."""
        schema = int(data.get("schema", 1))
        known = {f.name for f in fields(cls)}
        writer = (data.get("versions") or {}).get("mnist_hpo", "?")
        if schema > SCHEMA or set(data) - known:
            raise SettingsVersionError(
                f"study {study_name!r} was written by mnist-hpo {writer} (settings schema {schema}); this mnist-hpo "
                f"{VERSION} reads schema {SCHEMA} and older: install mnist-hpo>={writer} to use it"
            )
        if schema == 1 and len(data.get("objectives", [])) > 1:
            data = {**data, "pruner": "threshold"}  # schema 1 stopped multi-objective trials by threshold whatever --pruner said
        return cls(**{**data, "schema": SCHEMA})


def upgrade_settings(study: optuna.Study) -> str | None:
    """Rewrite a study's settings in the current schema; a line saying so, or None if there was nothing to do."""
    data = study.user_attrs.get(SETTINGS_ATTR)
    if not data or int(data.get("schema", 1)) == SCHEMA:
        return None
    settings = StudySettings.from_dict(data, study.study_name)
    settings.save(study)
    return f"study {study.study_name!r}: settings schema {data.get('schema', 1)} -> {SCHEMA}"


def scrub_secrets(study: optuna.Study) -> list[str]:
    """Mask every secret an older mnist-hpo stored in the study's attributes; the names of those it changed."""
    changed = []
    for key, value in study.user_attrs.items():
        masked = _redacted(value)
        if masked != value:
            study.set_user_attr(key, masked)
            changed.append(key)
    return changed


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact.redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


#: What a new study may be called: safe in every storage, in artifact names and on a command line.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_study_name(name: str) -> None:
    """A one-line UserError for a name a new study cannot have (studies made elsewhere keep theirs)."""
    if not STUDY_NAME.fullmatch(name):
        shown = name if len(name) <= 40 else f"{name[:40]}... ({len(name)} characters)"
        raise UserError(
            f"study name {shown!r} cannot be used: a new study's name is 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit; e.g. --study mnist-quick-2"
        )


def parse_objectives(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or names[0] != "accuracy" or len(set(names)) != len(names) or any(n not in OBJECTIVES for n in names):
        raise UserError(f"--objectives must be 'accuracy' or 'accuracy,params', got {text!r}")
    return names


def stop_rule_rows(settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The stop rules a study's settings hold, as (name, meaning) rows."""
    rows = []
    if settings.get("stop_after") is not None:
        rows.append(("stop after", f"{settings['stop_after']} finished trials without a better best validation accuracy"))
    if settings.get("target") is not None:
        rows.append(("target", f"stop once a trial reaches {100 * settings['target']:.2f}% validation accuracy"))
    if settings.get("terminator"):
        rows.append(("terminator", "Optuna's Terminator: stop once its regret bound is below the validation noise"))
    return rows
