"""Markdown notes that optuna-dashboard shows beside a trial and a study.

A trial's note: outcome (completed, or pruned/stopped and at which epoch), validation accuracy,
parameters, mult-adds, device, images/s, epochs run, hyperparameters and the architecture table.
The study's note: the command line that created it, its profile and settings, the data it saw and
the search space. Both are plain functions of plain data, so they are cheap and testable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mnist_hpo import redact
from mnist_hpo.models import build_model
from mnist_hpo.tuning.attrs import (
    BEST_EPOCH_ATTR,
    DATA_SOURCE_ATTR,
    DEVICE_ATTR,
    EPOCHS_RUN_ATTR,
    IMAGES_PER_S_ATTR,
    LIFTED_ATTR,
    MODEL_SPEC_ATTR,
    MULT_ADDS_ATTR,
    PARAMETERS_ATTR,
    PUBLISHED_BASELINE_ATTR,
    RESUMED_FROM_ATTR,
    SECONDS_ATTR,
    SEED_ATTR,
    SETTINGS_ATTR,
    STOPPED_ATTR,
    TRIAL_STOPPED_ATTR,
    WARM_START_ATTR,
)
from mnist_hpo.tuning.settings import stop_rule_rows
from mnist_hpo.tuning.space import Space

METRIC_NAMES = {"accuracy": "validation accuracy", "params": "parameters"}
STOPS_HEADING = "### Stopped early"
POPULATION_HEADING = "### Population"


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cell(value: Any) -> str:
    return _number(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    align = align or "l" * len(header)
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _mult_adds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value / 1e6:,.2f} M" if value >= 1e5 else f"{int(value):,}"


# ----------------------------------------------------------------------------------- architecture


def architecture_rows(model: nn.Module) -> list[tuple[str, str, int, int]]:
    """(layer, output shape, parameters, mult-adds) per layer with weights, for one 1×28×28 image.

    Mult-adds are counted as torchinfo counts them (what `mnist-hpo summary` prints), so the totals agree.

    A BatchNorm directly after a convolution or linear layer is folded into its row ("+ BN"), so a
    ten-layer network reads as ten lines. Runs one image through a CPU copy: a few milliseconds.
    """
    model = model.eval()
    rows: list[list[Any]] = []
    hooks = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        shape = "×".join(str(d) for d in output.shape[1:])
        params = sum(p.numel() for p in module.parameters(recurse=False))
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            macs = output.numel() * kernel * module.in_channels // module.groups + (output.numel() if module.bias is not None else 0)
            name = f"Conv2d {module.kernel_size[0]}×{module.kernel_size[1]}, {module.in_channels}→{module.out_channels}"
        elif isinstance(module, nn.Linear):
            macs = module.in_features * module.out_features + (module.out_features if module.bias is not None else 0)
            name = f"Linear {module.in_features}→{module.out_features}"
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and rows and "BN" not in rows[-1][0]:
            rows[-1][0] += " + BN"
            rows[-1][2] += params
            rows[-1][3] += params  # torchinfo's convention: a scale and a shift per channel
            return
        elif params:
            macs = 0
            name = type(module).__name__
        else:
            return
        rows.append([name, shape, params, macs])

    for module in model.modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, 28, 28))
    finally:
        for handle in hooks:
            handle.remove()
    return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


def architecture_table(spec: Mapping[str, Any]) -> str:
    """The markdown layer table of the network described by ``spec`` (a model spec dict)."""
    rows = architecture_rows(build_model(dict(spec)))
    total_params = sum(r[2] for r in rows)
    total_macs = sum(r[3] for r in rows)
    body = [(name, shape, params, _mult_adds(macs)) for name, shape, params, macs in rows]
    body.append(("**total**", "", total_params, _mult_adds(total_macs)))
    return _table(("layer", "output", "parameters", "mult-adds"), body, "llrr")


# ------------------------------------------------------------------------------------------- trial


def trial_note(
    number: int,
    user_attrs: Mapping[str, Any],
    curve: Sequence[Mapping[str, Any]],
    *,
    completed: bool,
    stopped: str | None = None,
    val_accuracy: float | None = None,
    epochs: int | None = None,
) -> str:
    """The trial's markdown note; ``user_attrs`` are those the objective records (parameters, device...).

    Hyperparameters and per-epoch values are left out: the dashboard lists the former beside the
    note and the learning-curve picture shows the latter.
    """
    epochs_run = len(curve) or int(user_attrs.get(EPOCHS_RUN_ATTR) or 0)
    of = f" of {epochs}" if epochs else ""
    if completed:
        outcome = "completed"
        epoch_line = f"{epochs_run}{of}"
    else:
        reason = stopped or user_attrs.get(TRIAL_STOPPED_ATTR) or "pruned"
        outcome = f"stopped: {reason}"
        epoch_line = f"{epochs_run}{of}, stopped after epoch {epochs_run}" if epochs_run else f"0{of} (not trained)"
    accuracies = [float(p["val_accuracy"]) for p in curve]
    if val_accuracy is None and accuracies:
        val_accuracy = max(accuracies)
    best_epoch = user_attrs.get(BEST_EPOCH_ATTR) or (accuracies.index(max(accuracies)) + 1 if accuracies else None)
    summary = [
        ("outcome", outcome),
        ("validation accuracy (best epoch)", f"{100 * val_accuracy:.2f}% (epoch {best_epoch})" if val_accuracy is not None else "-"),
        ("epochs run", epoch_line),
        ("parameters", user_attrs.get(PARAMETERS_ATTR, "-")),
        ("mult-adds per image", _mult_adds(user_attrs.get(MULT_ADDS_ATTR))),
        ("device", user_attrs.get(DEVICE_ATTR, "-")),
        (
            "training images/s (last epoch)",
            f"{round(user_attrs[IMAGES_PER_S_ATTR]):,}" if isinstance(user_attrs.get(IMAGES_PER_S_ATTR), (int, float)) else "-",
        ),
        ("seed", user_attrs.get(SEED_ATTR, "-")),
    ]
    if user_attrs.get(SECONDS_ATTR) is not None:
        summary.append(("seconds", user_attrs[SECONDS_ATTR]))
    if user_attrs.get(RESUMED_FROM_ATTR):
        resumed = user_attrs[RESUMED_FROM_ATTR]
        summary.append(("resumed from", f"trial {resumed.get('trial')} after epoch {resumed.get('epoch')}"))
    if user_attrs.get(PUBLISHED_BASELINE_ATTR):
        summary.append(("configuration", "the published one (baseline)"))
    parts = [f"## Trial {number}: {outcome}", _table(("", ""), summary, "ll")]
    spec = user_attrs.get(MODEL_SPEC_ATTR)
    if isinstance(spec, Mapping):
        try:
            parts += ["### Architecture", architecture_table(spec)]
        except Exception as exc:  # a spec this version cannot build: the note still says the rest
            parts += ["### Architecture", f"(cannot build the model spec: {exc})"]
    pictures = (
        "learning curves, confusion matrix and misclassified validation digits, and the checkpoint" if completed else "learning curves"
    )
    parts.append(f"This trial's artifacts hold its {pictures}. All accuracies are on the validation split.")
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------- study


def study_note(name: str, user_attrs: Mapping[str, Any]) -> str:
    """The study's markdown note: how it was launched, its settings, its data, its search space."""
    settings = user_attrs.get(SETTINGS_ATTR) or {}
    parts = [f"## Study {name}"]
    command = settings.get("command")
    if command:
        parts += ["Created by:", f"```\n{redact.redact(command)}\n```"]
    rows = [
        (key, settings.get(key))
        for key in ("profile", "objectives", "epochs", "sampler", "pruner", "seed", "max_params", "n_trials", "train_subset")
        if settings.get(key) is not None
    ]
    rows += stop_rule_rows(settings)
    if settings.get("pbt"):
        rows.append(("population-based training", pbt_line(settings["pbt"])))
    warm = user_attrs.get(WARM_START_ATTR) or {}
    if warm:
        copied = sum((warm.get("copied") or {}).values())
        rows.append(
            (
                "warm start",
                f"{copied} finished trials copied from study {warm.get('study')} (labelled copied_from; "
                "they seed the sampler and count in no budget, best or front)",
            )
        )
    if user_attrs.get(DATA_SOURCE_ATTR):
        rows.append(("data", user_attrs[DATA_SOURCE_ATTR]))
    versions = settings.get("versions") or {}
    if versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    if rows:
        parts.append(_table(("setting", "value"), [(k, ", ".join(v) if isinstance(v, list) else v) for k, v in rows], "ll"))
    space = settings.get("space") or {}
    if space:
        parts += ["### Search space", _table(("parameter", "searched as"), Space.from_dict(space).describe(), "ll")]
    parts.append(
        "Trial 0 is the published configuration. Trials are chosen on the validation split; "
        "the test set is only reported (`mnist-hpo best --test`), labelled as test."
    )
    stops = [f"- stopped early: {reason}" for reason in user_attrs.get(LIFTED_ATTR) or []]
    if user_attrs.get(STOPPED_ATTR):
        stops.append(f"- stopped early: {user_attrs[STOPPED_ATTR]}")
    if stops:
        parts += [STOPS_HEADING, "\n".join(stops)]
    return "\n\n".join(parts) + "\n"


def pbt_line(pbt: Mapping[str, Any]) -> str:
    """A PBT study's settings in words (the study's note and the report)."""
    interval = int(pbt["interval"])
    share = f"{float(pbt.get('quantile', 0.25)):.0%}"
    return (
        f"{pbt['population']} members; every {interval} epoch{'s' if interval != 1 else ''} the bottom {share} by "
        f"validation accuracy copy a member of the top {share} and perturb its parameters"
    )


def population_section(image: str, title: str) -> str:
    """The study note's population section: the latest picture (``image``: its URL path on the dashboard) and how to read it."""
    return (
        f"{POPULATION_HEADING}\n\n![{title}]({image})\n\n"
        "Left: each member's validation accuracy by epoch; a dashed jump ending in a triangle is an exploit (the member "
        "copied a better member's weights and parameters, from that member's point at the end of the copied segment). "
        "Right: the best trial's learning rate and dropouts epoch by epoch across every copy. Redrawn after each "
        "generation; the study's artifacts keep every one (population-generation-G.png).\n"
    )


def with_section(note: str, heading: str, section: str, before: str = STOPS_HEADING) -> str:
    """``note`` with the section under ``heading`` (up to the next heading of its level) replaced by ``section``.

    A new section goes in before the ``before`` section, else at the end: the stops section stays last,
    where ``publish.note_study_stop`` appends its lines.
    """
    lines = note.rstrip().splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        start = end = next((i for i, line in enumerate(lines) if line.rstrip() == before), len(lines))
    else:
        level = heading.split(" ", 1)[0] + " "
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith((level, "## "))), len(lines))
    head, rest = "".join(lines[:start]).rstrip(), "".join(lines[end:]).rstrip()
    return "\n\n".join(part for part in (head, section.strip(), rest) if part) + "\n"
