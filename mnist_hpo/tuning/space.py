"""The search space: what each trial samples, and how a TOML file can fix, narrow, widen or drop it.

Parameters are plain data (``Param``), so the effective space can be printed, stored in the
study and compared. Conditional parameters are sampled only where they apply: the head width
only with a head, the EMA decay only with the EMA, the depth per kernel size (the depth rule).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from mnist_hpo.errors import UserError
from mnist_hpo.models import FamilyConfig, max_conv_layers

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class SpaceError(UserError):
    """A space file that cannot be used."""


@dataclass(frozen=True)
class Param:
    """One searchable parameter: a float or int range (optionally log scale) or a list of choices.

    ``fixed`` pins it to a value; ``dropped`` takes it out of the search, leaving ``default``.
    """

    kind: str  # "float", "int" or "categorical"
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = None
    choices: tuple = ()
    fixed: Any = None
    dropped: bool = False

    def validate(self, name: str, origin: str = "space") -> None:
        where = f"{origin}: [{name}]"
        if self.dropped:
            return
        values = [self.fixed] if self.fixed is not None else list(self.choices) if self.kind == "categorical" else [self.low, self.high]
        if self.fixed is None and self.kind == "categorical" and not self.choices:
            raise SpaceError(f"{where} has an empty list of choices; give at least one")
        if self.fixed is None and self.kind != "categorical":
            if self.low is None or self.high is None:
                raise SpaceError(f"{where} needs both low and high")
            if self.low > self.high:
                raise SpaceError(f"{where} has low {self.low} > high {self.high}; swap them")
            if self.log and self.low <= 0:
                raise SpaceError(f"{where} is on a log scale, so low must be > 0 (got {self.low})")
            if self.log and (self.step or 1) > 1:
                raise SpaceError(f"{where} cannot be on a log scale with step {self.step}; drop one of them")
        allowed, meaning = CHOICES.get(name, (None, ""))
        for value in values if allowed is not None else ():
            if value not in allowed:
                raise SpaceError(f"{where}: {value!r} is not {meaning}; choose from {', '.join(map(str, allowed))}")
        lowest, highest, meaning = LIMITS.get(name, (None, None, ""))
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if (lowest is not None and value < lowest) or (highest is not None and value > highest):
                raise SpaceError(f"{where}: {value} is outside what the network allows ({meaning})")

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.dropped:
            return self.default
        if self.fixed is not None:
            return self.fixed
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def describe(self) -> str:
        if self.dropped:
            return f"dropped (uses {self.default!r})"
        if self.fixed is not None:
            return f"fixed at {self.fixed!r}"
        if self.kind == "categorical":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        scale = ", log" if self.log else ""
        step = f", step {self.step}" if self.step and self.step > 1 else ""
        return f"{self.kind} in [{self.low:g}, {self.high:g}]{scale}{step}"


def default_space() -> dict[str, Param]:
    """The full space over the paper's family; profiles narrow the widths and depths."""
    return {
        "lr": Param("float", 1e-3, 1e-4, 1e-2, log=True),
        "optimizer": Param("categorical", "adam", choices=("adam", "adamw", "sgd")),
        "weight_decay": Param("float", 1e-6, 1e-6, 1e-2, log=True),
        "batch_size": Param("categorical", 120, choices=(64, 120, 256)),
        "kernel_size": Param("categorical", 3, choices=(3, 5, 7)),
        # The depth rule: unpadded k×k convolutions shrink the image by k-1 each.
        "conv_layers_k3": Param("int", 10, 6, max_conv_layers(3)),
        "conv_layers_k5": Param("int", 5, 3, max_conv_layers(5)),
        "conv_layers_k7": Param("int", 4, 2, max_conv_layers(7)),
        "first_channels": Param("int", 32, 16, 64, step=8),
        "growth": Param("int", 16, 8, 48, step=8),
        "dropout_in": Param("float", 0.0, 0.0, 0.5),
        "head": Param("categorical", False, choices=(False, True)),
        "head_width": Param("int", 128, 32, 512, log=True),
        "dropout_hidden": Param("float", 0.0, 0.0, 0.5),
        "ema": Param("categorical", True, choices=(True, False)),
        "ema_decay": Param("float", 0.999, 0.99, 0.9995),
        "schedule": Param("categorical", "exponential", choices=("exponential", "cosine")),
        "lr_gamma": Param("float", 0.98, 0.85, 1.0),
        "rotation": Param("float", 20.0, 0.0, 25.0),
        "translation": Param("float", 0.2, 0.0, 0.25),
        "label_smoothing": Param("float", 0.0, 0.0, 0.2),
    }


# What the model and trainer accept, whatever a space file says: (lowest, highest, why).
LIMITS: dict[str, tuple[float | None, float | None, str]] = {
    **{
        f"conv_layers_k{k}": (1, max_conv_layers(k), f"1 to {max_conv_layers(k)} unpadded {k}x{k} convolutions fit a 28x28 image")
        for k in (3, 5, 7)
    },
    "first_channels": (1, None, "at least 1 channel"),
    "growth": (0, None, "growth of 0 or more channels per layer"),
    "head_width": (1, None, "at least 1 hidden unit"),
    "dropout_in": (0.0, 0.95, "a dropout rate in [0, 0.95]"),
    "dropout_hidden": (0.0, 0.95, "a dropout rate in [0, 0.95]"),
    "ema_decay": (0.0, 0.99999, "an EMA decay in [0, 1)"),
    "lr": (1e-8, 10.0, "a learning rate in [1e-8, 10]"),
    "weight_decay": (0.0, 1.0, "a weight decay in [0, 1]"),
    "lr_gamma": (0.01, 1.0, "a per-epoch learning-rate factor in (0, 1]"),
    "rotation": (0.0, 180.0, "a rotation of 0 to 180 degrees"),
    "translation": (0.0, 1.0, "a translation of 0 to 1 image side"),
    "label_smoothing": (0.0, 0.99, "label smoothing in [0, 1)"),
    "batch_size": (1, None, "a batch of at least 1 image"),
}

#: The categorical values the network builder and the trainer accept (trainer.OPTIMIZERS, trainer.SCHEDULES:
#: tests/tuning/test_space.py checks they agree; importing the trainer here would load torch).
CHOICES: dict[str, tuple[tuple, str]] = {
    "kernel_size": ((3, 5, 7), "a kernel size the network has (each has its own depth parameter)"),
    "optimizer": (("adam", "adamw", "sgd"), "an optimizer the trainer has"),
    "schedule": (("exponential", "cosine", "plateau"), "a learning-rate schedule the trainer has"),
}


@dataclass(frozen=True)
class Space:
    params: dict[str, Param] = field(default_factory=default_space)

    def with_overrides(self, overrides: dict[str, dict[str, Any]], origin: str = "space file") -> Space:
        """Apply a TOML-style table ``{name: {low|high|log|step|choices|value|drop}}``."""
        params = dict(self.params)
        allowed = {"low", "high", "log", "step", "choices", "value", "drop"}
        for name, table in overrides.items():
            if name not in params:
                raise SpaceError(f"{origin}: unknown parameter {name!r}; known: {', '.join(params)}")
            if not isinstance(table, dict):
                raise SpaceError(f"{origin}: [{name}] must be a table such as `low = 1e-4`")
            unknown = set(table) - allowed
            if unknown:
                raise SpaceError(f"{origin}: [{name}] has unknown key(s) {', '.join(sorted(unknown))}; use {', '.join(sorted(allowed))}")
            params[name] = _override(name, params[name], table, origin)
            params[name].validate(name, origin)
        return Space(params)

    def sample(self, trial: optuna.Trial) -> tuple[FamilyConfig, dict[str, Any]]:
        """Draw one configuration: the network and the training options (conditionals included)."""
        p = self.params
        kernel = p["kernel_size"].suggest(trial, "kernel_size")
        head = p["head"].suggest(trial, "head")
        ema = p["ema"].suggest(trial, "ema")
        optimizer = p["optimizer"].suggest(trial, "optimizer")
        family = FamilyConfig(
            conv_layers=p[f"conv_layers_k{kernel}"].suggest(trial, f"conv_layers_k{kernel}"),
            kernel_size=kernel,
            first_channels=p["first_channels"].suggest(trial, "first_channels"),
            growth=p["growth"].suggest(trial, "growth"),
            head_width=p["head_width"].suggest(trial, "head_width") if head else 0,
            dropout_in=p["dropout_in"].suggest(trial, "dropout_in"),
            dropout_hidden=p["dropout_hidden"].suggest(trial, "dropout_hidden") if head else 0.0,
        )
        training = {
            "optimizer": optimizer,
            "lr": p["lr"].suggest(trial, "lr"),
            "weight_decay": p["weight_decay"].suggest(trial, "weight_decay"),
            "batch_size": p["batch_size"].suggest(trial, "batch_size"),
            "ema_decay": p["ema_decay"].suggest(trial, "ema_decay") if ema else 0.0,
            "schedule": p["schedule"].suggest(trial, "schedule"),
            "lr_gamma": p["lr_gamma"].suggest(trial, "lr_gamma"),
            "rotation": p["rotation"].suggest(trial, "rotation"),
            "translation": p["translation"].suggest(trial, "translation"),
            "label_smoothing": p["label_smoothing"].suggest(trial, "label_smoothing"),
        }
        return family, training

    def published(self) -> dict[str, Any]:
        """The paper's M3 recipe in this space's terms (clipped to its ranges): the first trial."""
        paper = {
            "kernel_size": 3,
            "head": False,
            "ema": True,
            "optimizer": "adam",
            "conv_layers_k3": 10,
            "first_channels": self.params["first_channels"].default,
            "growth": self.params["growth"].default,
            "dropout_in": 0.0,
            "lr": 1e-3,
            "weight_decay": 1e-6,
            "batch_size": 120,
            "ema_decay": 0.999,
            "schedule": "exponential",
            "lr_gamma": 0.98,
            "rotation": 20.0,
            "translation": 0.2,
            "label_smoothing": 0.0,
        }
        kernel, ema = (self.params[n].fixed if self.params[n].fixed is not None else paper[n] for n in ("kernel_size", "ema"))
        inactive = {f"conv_layers_k{k}" for k in (3, 5, 7) if k != kernel} | (set() if ema else {"ema_decay"})
        searched = {}
        for name, value in paper.items():
            param = self.params[name]
            if param.dropped or param.fixed is not None or name in inactive:  # Optuna would never ask for these
                continue
            if param.kind == "categorical":
                if value not in param.choices:
                    numeric = [c for c in param.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
                    if not numeric or isinstance(value, (bool, str)):
                        continue
                    value = min(numeric, key=lambda choice: abs(choice - value))  # batch 120 -> nearest offered
            else:
                value = min(max(value, param.low), param.high)
                if param.kind == "int" and (param.step or 1) > 1:  # onto the grid Optuna samples from
                    steps = min(round((value - param.low) / param.step), int((param.high - param.low) // param.step))
                    value = int(param.low + steps * param.step)
            searched[name] = value
        return searched

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain data for the study's attributes; ``from_dict`` rebuilds the same space."""
        return {name: {**asdict(p), "choices": list(p.choices)} for name, p in self.params.items()}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, Any]]) -> Space:
        return cls({name: Param(**{**fields, "choices": tuple(fields["choices"])}) for name, fields in data.items()})

    def describe(self) -> list[tuple[str, str]]:
        return [(name, param.describe()) for name, param in self.params.items()]


def _override(name: str, param: Param, table: dict[str, Any], origin: str) -> Param:
    for key in ("drop", "value"):
        if key in table and len(table) > 1:
            raise SpaceError(f"{origin}: [{name}] `{key}` cannot be combined with {', '.join(k for k in table if k != key)}; keep one")
    if "drop" in table:
        if not isinstance(table["drop"], bool):
            raise SpaceError(f"{origin}: [{name}] drop must be true or false")
        return replace(param, dropped=table["drop"])
    if "value" in table:
        return replace(param, fixed=_typed(name, param, table["value"], origin), dropped=False)
    changes: dict[str, Any] = {}
    if "choices" in table:
        if param.kind != "categorical":
            raise SpaceError(f"{origin}: [{name}] is a {param.kind} range; give low/high instead of choices")
        if not isinstance(table["choices"], list):
            raise SpaceError(f"{origin}: [{name}] choices must be a list")
        changes["choices"] = tuple(_typed(name, param, c, origin) for c in table["choices"])
    for key in ("low", "high"):
        if key in table:
            if param.kind == "categorical":
                raise SpaceError(f"{origin}: [{name}] is a list of choices; give `choices = [...]` instead of {key}")
            changes[key] = _typed(name, param, table[key], origin)
    if "log" in table:
        if not isinstance(table["log"], bool):
            raise SpaceError(f"{origin}: [{name}] log must be true or false")
        changes["log"] = table["log"]
    if "step" in table:
        if param.kind != "int" or not isinstance(table["step"], int) or table["step"] < 1:
            raise SpaceError(f"{origin}: [{name}] step must be a positive integer on an int parameter")
        changes["step"] = table["step"]
    return replace(param, **changes)


def _typed(name: str, param: Param, value: Any, origin: str) -> Any:
    expected = type(param.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected or (isinstance(value, float) and not math.isfinite(value)):
        raise SpaceError(f"{origin}: [{name}] expects {expected.__name__} values, got {value!r}")
    return value


def load_space_file(path: Path | None, base: Space) -> Space:
    """Read a TOML space file on top of ``base``; every mistake is a one-line SpaceError."""
    if path is None:
        return base
    path = Path(path)
    try:
        overrides = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpaceError(f"space file {path} does not exist; check the path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpaceError(f"space file {path} is not valid TOML ({str(exc).splitlines()[0]})") from None
    return base.with_overrides(overrides, origin=str(path))
