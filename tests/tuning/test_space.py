"""The search space: TOML space files, their validation, conditional sampling and the published trial 0.

In-process and fast (no training): real Optuna studies in memory with seeded RandomSamplers,
real TOML files in tmp_path, networks built (and run on two blank images) but never trained.
One test runs the real `mnist-hpo space show` console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from outside import CLI  # the console script next to this Python (python -m mnist_hpo where there is none)

from mnist_hpo.errors import UserError
from mnist_hpo.models import build_model, max_conv_layers
from mnist_hpo.trainer import OPTIMIZERS, SCHEDULES
from mnist_hpo.tuning.profiles import PROFILES
from mnist_hpo.tuning.space import CHOICES, Space, SpaceError, default_space, load_space_file

optuna.logging.set_verbosity(optuna.logging.WARNING)

DEFAULT_NAMES = list(default_space())
CONDITIONAL = {"head_width", "dropout_hidden", "ema_decay", "conv_layers_k3", "conv_layers_k5", "conv_layers_k7"}
SPACES = ["default", *PROFILES]  # the full space and every profile's narrowing of it


def profile_space(name: str) -> Space:
    return Space() if name == "default" else Space().with_overrides(PROFILES[name].space, origin=f"profile {name}")


def space_file(tmp_path: Path, text: str, name: str = "space.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, base: Space | None = None) -> Space:
    return load_space_file(space_file(tmp_path, text), base or Space())


def draw(space: Space, n: int, seed: int = 0) -> list[tuple[dict, object, dict]]:
    """``n`` samples on a real in-memory study: (trial.params, FamilyConfig, training options)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        family, training = space.sample(trial)
        out.append((dict(trial.params), family, training))
        study.tell(trial, 0.0)
    return out


def in_range(space: Space, name: str, value) -> bool:
    param = space.params[name]
    if param.kind == "categorical":
        return value in param.choices
    ok = param.low <= value <= param.high
    if param.kind == "int":
        ok = ok and isinstance(value, int) and (value - int(param.low)) % (param.step or 1) == 0
    return ok


# ------------------------------------------------------------------------------------ space files


def test_no_space_file_is_the_base_space():
    base = profile_space("smoke")
    assert load_space_file(None, base) is base


def test_value_fixes_a_parameter_and_takes_it_out_of_the_search(tmp_path):
    space = load(tmp_path, '[optimizer]\nvalue = "sgd"\n\n[lr]\nvalue = 0.003\n\n[conv_layers_k3]\nvalue = 7\n')
    assert space.params["optimizer"].fixed == "sgd"
    assert space.params["lr"].fixed == 0.003
    for params, family, training in draw(space, 15):
        assert "optimizer" not in params and "lr" not in params and "conv_layers_k3" not in params
        assert training["optimizer"] == "sgd" and training["lr"] == 0.003
        if family.kernel_size == 3:
            assert family.conv_layers == 7
    assert space.params["optimizer"].describe() == "fixed at 'sgd'"


def test_an_int_literal_fixes_a_float_parameter_as_a_float(tmp_path):
    space = load(tmp_path, "[rotation]\nvalue = 15\n")
    assert space.params["rotation"].fixed == 15.0 and type(space.params["rotation"].fixed) is float


def test_low_and_high_narrow_a_range_and_keep_its_log_scale(tmp_path):
    space = load(tmp_path, "[lr]\nlow = 5e-4\nhigh = 2e-3\n\n[conv_layers_k3]\nlow = 8\nhigh = 9\n")
    lr = space.params["lr"]
    assert (lr.low, lr.high, lr.log) == (5e-4, 2e-3, True)
    samples = draw(space, 30)
    assert all(5e-4 <= params["lr"] <= 2e-3 for params, _, _ in samples)
    depths = {family.conv_layers for _, family, _ in samples if family.kernel_size == 3}
    assert depths and depths <= {8, 9}
    assert lr.describe() == "float in [0.0005, 0.002], log"


def test_low_and_high_widen_a_range(tmp_path):
    base = Space()
    space = load(tmp_path, "[rotation]\nlow = 0\nhigh = 40\n\n[first_channels]\nlow = 8\nhigh = 96\n", base)
    assert (space.params["rotation"].low, space.params["rotation"].high) == (0.0, 40.0)
    assert type(space.params["rotation"].high) is float  # TOML integers become floats for float parameters
    assert (space.params["first_channels"].low, space.params["first_channels"].high) == (8, 96)
    assert space.params["first_channels"].step == base.params["first_channels"].step  # untouched keys stay
    rotations = [params["rotation"] for params, _, _ in draw(space, 40)]
    assert max(rotations) > base.params["rotation"].high  # the widened part is really searched
    assert all(0.0 <= r <= 40.0 for r in rotations)


def test_a_space_file_applies_on_top_of_a_profile(tmp_path):
    smoke = profile_space("smoke")
    space = load(tmp_path, "[growth]\nhigh = 8\n", smoke)
    assert space.params["growth"].high == 8
    assert space.params["growth"].low == smoke.params["growth"].low
    for name in DEFAULT_NAMES:
        if name != "growth":
            assert space.params[name] == smoke.params[name]


def test_drop_takes_a_parameter_out_and_uses_its_default(tmp_path):
    space = load(tmp_path, "[rotation]\ndrop = true\n\n[head]\ndrop = true\n")
    for params, family, training in draw(space, 10):
        assert "rotation" not in params and "head" not in params
        assert training["rotation"] == default_space()["rotation"].default
        assert family.head_width == 0  # head defaults to False, so no hidden layer is sampled either
        assert "head_width" not in params
    assert space.params["rotation"].describe() == "dropped (uses 20.0)"


def test_drop_false_keeps_the_parameter(tmp_path):
    space = load(tmp_path, "[rotation]\ndrop = false\n")
    assert space.params["rotation"] == default_space()["rotation"]


def test_choices_replace_a_categorical_list(tmp_path):
    space = load(tmp_path, '[batch_size]\nchoices = [32, 64]\n\n[optimizer]\nchoices = ["adamw"]\n')
    assert space.params["batch_size"].choices == (32, 64)
    samples = draw(space, 20)
    assert {params["batch_size"] for params, _, _ in samples} == {32, 64}
    assert {training["optimizer"] for _, _, training in samples} == {"adamw"}


INVALID = {
    "unknown parameter": ("[learning_rate]\nlow = 1e-4\n", ["unknown parameter 'learning_rate'", "known:", *DEFAULT_NAMES]),
    "low above high": ("[lr]\nlow = 1e-2\nhigh = 1e-3\n", ["[lr]", "low 0.01 > high 0.001", "swap"]),
    "low above the untouched high": ("[rotation]\nlow = 30\n", ["[rotation]", "low 30.0 > high 25.0"]),
    "log scale with low 0": ("[head_width]\nlow = 0\n", ["[head_width]", "log scale", "low must be > 0"]),
    "log scale with negative low": ("[lr]\nlow = -1e-3\n", ["[lr]", "log scale", "(got -0.001)"]),
    "log switched on at low 0": ("[dropout_in]\nlog = true\n", ["[dropout_in]", "log scale"]),
    "empty choices": ("[optimizer]\nchoices = []\n", ["[optimizer]", "empty list of choices"]),
    "string for a float": ('[lr]\nlow = "fast"\n', ["[lr]", "expects float", "'fast'"]),
    "float for an int": ("[first_channels]\nlow = 8.5\n", ["[first_channels]", "expects int", "8.5"]),
    "bool for an int": ("[conv_layers_k3]\nvalue = true\n", ["[conv_layers_k3]", "expects int", "True"]),
    "string for a bool": ('[head]\nvalue = "yes"\n', ["[head]", "expects bool", "'yes'"]),
    "wrong type among choices": ('[batch_size]\nchoices = [64, "128"]\n', ["[batch_size]", "expects int", "'128'"]),
    "nan bound": ("[lr]\nhigh = nan\n", ["[lr]", "expects float", "nan"]),
    "infinite bound": ("[rotation]\nhigh = inf\n", ["[rotation]", "expects float", "inf"]),
    "unknown key": ("[lr]\nlowest = 1e-4\n", ["[lr]", "unknown key(s) lowest", "choices, drop, high, log, low, step, value"]),
    "choices on a range": ("[lr]\nchoices = [1e-3]\n", ["[lr]", "is a float range", "low/high"]),
    "low on a categorical": ("[optimizer]\nlow = 1\n", ["[optimizer]", "list of choices", "choices = [...]"]),
    "choices not a list": ('[optimizer]\nchoices = "adam"\n', ["[optimizer]", "must be a list"]),
    "not a table": ("lr = 0.001\n", ["[lr] must be a table"]),
    "step on a float": ("[lr]\nstep = 2\n", ["[lr]", "step must be a positive integer"]),
    "step zero": ("[first_channels]\nstep = 0\n", ["[first_channels]", "step must be a positive integer"]),
    "log not a bool": ('[lr]\nlog = "yes"\n', ["[lr]", "log must be true or false"]),
    "invalid TOML": ("[lr\nlow = 1e-4\n", ["is not valid TOML"]),
    "invalid TOML value": ("[lr]\nlow = \n", ["is not valid TOML"]),
    "duplicate table": ("[lr]\nlow = 1e-4\n[lr]\nhigh = 1e-2\n", ["is not valid TOML"]),
}


@pytest.mark.parametrize("text, fragments", list(INVALID.values()), ids=list(INVALID))
def test_a_bad_space_file_is_one_helpful_line(tmp_path, text, fragments):
    path = space_file(tmp_path, text)
    with pytest.raises(SpaceError) as caught:
        load_space_file(path, Space())
    message = str(caught.value)
    assert isinstance(caught.value, UserError)  # so the CLI prints `error: ...` and exits 2
    assert "\n" not in message and message.strip() == message and message
    assert str(path) in message  # says which file
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_missing_space_file_is_a_space_error(tmp_path):
    missing = tmp_path / "nope" / "space.toml"
    with pytest.raises(SpaceError, match=r"^space file .*space\.toml does not exist; check the path$") as caught:
        load_space_file(missing, Space())
    assert "\n" not in str(caught.value)


def test_a_binary_space_file_is_a_space_error(tmp_path):
    path = tmp_path / "space.toml"
    path.write_bytes(b"\xff\xfe\x00[lr]\x80\n")
    with pytest.raises(SpaceError, match="is not valid TOML") as caught:
        load_space_file(path, Space())
    assert "\n" not in str(caught.value)


def test_an_error_leaves_the_base_space_unchanged(tmp_path):
    base = profile_space("quick")
    before = base.to_dict()
    with pytest.raises(SpaceError):
        load(tmp_path, "[lr]\nlow = 1e-4\n\n[growth]\nlow = 9\nhigh = 1\n", base)
    assert base.to_dict() == before


def test_with_overrides_names_its_origin():
    with pytest.raises(SpaceError, match=r"^profile test: unknown parameter 'depth'; known: lr, "):
        Space().with_overrides({"depth": {"low": 1}}, origin="profile test")


# ------------------------------------------------------------------------------- plain-data round trip


def test_to_dict_from_dict_round_trip_through_json(tmp_path):
    space = load(
        tmp_path,
        "[head]\nvalue = false\n\n[growth]\nvalue = 0\n\n[dropout_in]\nvalue = 0\n\n[rotation]\ndrop = true\n\n"
        "[batch_size]\nchoices = [32, 64]\n\n[lr]\nlow = 5e-4\nhigh = 2e-3\n",
        profile_space("smoke"),
    )
    assert space.params["head"].fixed is False  # fixed at False, not "not fixed"
    assert space.params["growth"].fixed == 0 and space.params["dropout_in"].fixed == 0.0
    stored = json.loads(json.dumps(space.to_dict()))  # what a study's user attribute holds
    again = Space.from_dict(stored)
    assert again == space
    assert again.params["head"].fixed is False and again.params["growth"].fixed == 0
    assert again.describe() == space.describe()
    assert Space.from_dict(again.to_dict()) == space
    # The rebuilt space samples exactly what the original does, fixed values included.
    original, rebuilt = draw(space, 10, seed=3), draw(again, 10, seed=3)
    assert [(p, f, t) for p, f, t in original] == [(p, f, t) for p, f, t in rebuilt]
    for params, family, _ in rebuilt:
        assert "head" not in params and "growth" not in params and "dropout_in" not in params
        assert family.head_width == 0 and family.growth == 0 and family.dropout_in == 0.0


@pytest.mark.parametrize("name", SPACES)
def test_every_profile_space_round_trips(name):
    space = profile_space(name)
    assert Space.from_dict(json.loads(json.dumps(space.to_dict()))) == space


# ------------------------------------------------------------------------------------------ sampling


def test_conditional_parameters_appear_only_where_they_apply():
    space = Space()
    samples = draw(space, 80, seed=7)
    seen_kernels, seen_head, seen_ema = set(), set(), set()
    for params, family, training in samples:
        kernel, head, ema = params["kernel_size"], params["head"], params["ema"]
        seen_kernels.add(kernel), seen_head.add(head), seen_ema.add(ema)
        depth_keys = [k for k in params if k.startswith("conv_layers_k")]
        assert depth_keys == [f"conv_layers_k{kernel}"]
        assert family.kernel_size == kernel and family.conv_layers == params[f"conv_layers_k{kernel}"]
        assert ("head_width" in params) is head and ("dropout_hidden" in params) is head
        assert (family.head_width > 0) is head
        if not head:
            assert family.dropout_hidden == 0.0
        assert ("ema_decay" in params) is ema
        assert (training["ema_decay"] > 0) is ema
        assert set(params) - CONDITIONAL == set(DEFAULT_NAMES) - CONDITIONAL  # everything else, always
    # Both sides of every condition were drawn, so the checks above were exercised.
    assert seen_kernels == {3, 5, 7} and seen_head == {True, False} and seen_ema == {True, False}


@pytest.mark.parametrize("name", SPACES)
def test_sampled_networks_always_build(name):
    space = profile_space(name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for params, family, training in draw(space, 30, seed=11):
            family.validate()
            model = build_model({"name": "family", "config": family.to_dict()}).eval()
            with torch.no_grad():
                assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
            for key, value in params.items():
                assert in_range(space, key, value), (key, value)
            assert family.conv_layers <= max_conv_layers(family.kernel_size)
            batch = space.params["batch_size"]
            assert training["batch_size"] == batch.fixed if batch.fixed is not None else training["batch_size"] in batch.choices
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ the published trial 0


@pytest.mark.parametrize("name", SPACES)
def test_published_lies_in_the_space_and_enqueueing_reproduces_it(name):
    space = profile_space(name)
    published = space.published()
    assert {"conv_layers_k3", "lr", "first_channels", "growth"} <= set(published)
    for key, value in published.items():
        assert in_range(space, key, value), (name, key, value)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(published)
    trial = study.ask()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when an enqueued value is outside the distribution
        family, training = space.sample(trial)
    assert trial.params == published
    build_model({"name": "family", "config": family.to_dict()})
    assert training["lr"] == published["lr"] and family.conv_layers == published["conv_layers_k3"]


def test_published_is_the_papers_m3_recipe_on_the_full_space():
    published = Space().published()
    assert published["kernel_size"] == 3 and published["conv_layers_k3"] == 10
    assert (published["first_channels"], published["growth"]) == (32, 16)  # M3: 32, 48, ..., 176 channels
    assert published["head"] is False and published["ema"] is True and published["batch_size"] == 120


def test_published_leaves_out_fixed_and_dropped_parameters(tmp_path):
    space = load(tmp_path, '[lr]\nvalue = 0.003\n\n[rotation]\ndrop = true\n\n[optimizer]\nvalue = "adamw"\n')
    published = space.published()
    assert "lr" not in published and "rotation" not in published and "optimizer" not in published
    study = optuna.create_study()
    study.enqueue_trial(published)
    trial = study.ask()
    _, training = space.sample(trial)
    assert trial.params == published
    assert (training["lr"], training["rotation"], training["optimizer"]) == (0.003, 20.0, "adamw")


def test_published_is_clipped_into_a_narrowed_range(tmp_path):
    space = load(tmp_path, "[lr]\nlow = 2e-3\nhigh = 5e-3\n\n[conv_layers_k3]\nlow = 4\nhigh = 6\n")
    published = space.published()
    assert published["lr"] == 2e-3 and published["conv_layers_k3"] == 6


# ------------------------------------------------------- what the model and Optuna accept


def test_published_respects_the_step_grid(tmp_path):
    space = load(tmp_path, "[first_channels]\nlow = 10\nhigh = 30\n")  # step 8: Optuna searches 10, 18, 26
    value = space.published()["first_channels"]
    assert 10 <= value <= 26 and (value - 10) % 8 == 0


BEYOND_THE_MODEL = {
    "deeper than the depth rule": f"[conv_layers_k3]\nhigh = {max_conv_layers(3) + 5}\n",
    "log scale with a step": "[first_channels]\nlog = true\n",
    "dropout of 1.5": "[dropout_in]\nhigh = 1.5\n",
    "no channels": "[first_channels]\nlow = 0\nhigh = 8\nstep = 1\n",
    "drop given as a string": '[rotation]\ndrop = "no"\n',
}


@pytest.mark.parametrize("text", list(BEYOND_THE_MODEL.values()), ids=list(BEYOND_THE_MODEL))
def test_a_space_the_search_cannot_use_is_rejected_when_loaded(tmp_path, text):
    with pytest.raises(SpaceError):
        load(tmp_path, text)


# ------------------------------------------------------------------------------------ the real CLI


def test_space_show_prints_the_effective_narrowed_space(tmp_path):
    path = space_file(tmp_path, "[lr]\nlow = 5e-4\nhigh = 2e-3\n\n[rotation]\ndrop = true\n\n[head]\nvalue = false\n")
    env = {k: v for k, v in os.environ.items() if k != "MNIST_HPO_STORAGE"} | {"COLUMNS": "200"}
    done = subprocess.run(
        [*CLI, "space", "show", "--profile", "quick", "--space", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.startswith("profile quick: ")
    rows = {}
    for line in done.stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 3:
            rows[cells[0]] = cells[1:]
    assert list(rows) == DEFAULT_NAMES
    assert rows["lr"] == ["float in [0.0005, 0.002], log", "0.001"]
    assert rows["rotation"] == ["dropped (uses 20.0)", ""]
    assert rows["head"] == ["fixed at False", ""]
    expected = load_space_file(path, profile_space("quick"))
    quick = profile_space("quick")
    for name, description in expected.describe():
        assert rows[name][0] == description
        if name not in ("lr", "rotation", "head"):
            assert quick.params[name] == expected.params[name]  # the profile's narrowing is kept
    assert rows["conv_layers_k3"][0] == quick.params["conv_layers_k3"].describe() != Space().params["conv_layers_k3"].describe()
    assert not (tmp_path / "mnist-hpo.db").exists()  # showing the space touches no storage


def test_the_space_accepts_exactly_the_trainers_optimizers_and_schedules_and_the_networks_kernels():
    assert set(CHOICES["optimizer"][0]) == set(OPTIMIZERS) and set(CHOICES["schedule"][0]) == set(SCHEDULES)
    assert all(max_conv_layers(k) >= 1 for k in CHOICES["kernel_size"][0])
    assert {f"conv_layers_k{k}" for k in CHOICES["kernel_size"][0]} <= set(default_space())
