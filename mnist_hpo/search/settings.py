"""What a study records about itself, so it is reproducible and workers need only its name."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from mnist_hpo.errors import UserError

ATTR = "mnist_hpo"
OBJECTIVES = {"accuracy": "maximize", "params": "minimize"}


@dataclass
class StudySettings:
    profile: str
    space: dict[str, dict[str, Any]]
    objectives: list[str]
    epochs: int
    data: str
    train_subset: int | None
    n_trials: int | None = None  # the study's global trial budget, if any
    max_params: int | None = None
    min_accuracy: float = 0.5  # multi-objective: validation accuracy below this after epoch 1 stops a trial
    seed: int | None = None
    sampler: str = "tpe"
    pruner: str = "hyperband"
    data_digest: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    command: str = ""

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def save(self, study: optuna.Study) -> None:
        study.set_user_attr(ATTR, asdict(self))

    @classmethod
    def load(cls, study: optuna.Study) -> StudySettings:
        data = study.user_attrs.get(ATTR)
        if not data:
            raise UserError(f"study {study.study_name!r} was not created by mnist-hpo (no settings recorded); use another --study name")
        return cls(**data)


def parse_objectives(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or names[0] != "accuracy" or len(set(names)) != len(names) or any(n not in OBJECTIVES for n in names):
        raise UserError(f"--objectives must be 'accuracy' or 'accuracy,params', got {text!r}")
    return names
