"""Study and trial attribute names are named once, in mnist_hpo/tuning/attrs.py, and their stored keys never change."""

from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback

from mnist_hpo.tuning import attrs

PACKAGE = Path(attrs.__file__).resolve().parents[1]
HOME = Path(attrs.__file__).resolve()
#: What is stored: a user's own code, optuna-dashboard and studies written before read these keys.
STORED = {
    "SETTINGS_ATTR": "mnist_hpo",
    "DATA_SOURCE_ATTR": "data_source",
    "STOPPED_ATTR": "stopped",
    "LIFTED_ATTR": "stops_lifted",
    "STOP_RULES_FROM_ATTR": "stop_rules_from",
    "WARM_START_ATTR": "warm_start",
    "TEST_ACCURACY_ATTR": "test_accuracy",
    "CREATING_ATTR": "mnist_hpo:creating",
    "MODEL_SPEC_ATTR": "model_spec",
    "PARAMETERS_ATTR": "parameters",
    "MULT_ADDS_ATTR": "mult_adds",
    "DEVICE_ATTR": "device",
    "SEED_ATTR": "seed",
    "TRAIN_CONFIG_ATTR": "train_config",
    "VERSIONS_ATTR": "versions",
    "EPOCHS_RUN_ATTR": "epochs_run",
    "LEARNING_CURVE_ATTR": "learning_curve",
    "IMAGES_PER_S_ATTR": "images_per_s",
    "SECONDS_ATTR": "seconds",
    "BEST_EPOCH_ATTR": "best_epoch",
    "TRIAL_STOPPED_ATTR": "stopped",
    "RESUMED_FROM_ATTR": "resumed_from",
    "RESUME_FAILED_ATTR": "resume_failed",
    "PBT_SEGMENT_ATTR": "pbt_segment",
    "RUNGS_ATTR": "mo_asha_rungs",
    "WORKER_ATTR": "worker",
    "GPU_ATTR": "gpu",
    "COPIED_ATTR": "copied_from",
    "PUBLISHED_BASELINE_ATTR": "published_baseline",
    "REPLACES_ATTR": "replaces",
    "RETRY_OF_ATTR": "retry_of",
    "RETRY_HISTORY_ATTR": "retry_history",
    "FAIL_REASON_ATTR": "fail_reason",
    "HEARTBEAT_ATTR": "mnist_hpo:heartbeat",
    "OWNER_ATTR": "mnist_hpo:owner",
    "FAIL_REASON_SYSTEM_ATTR": "fail_reason",
    "OPTUNA_RETRY_HISTORY_ATTR": "retry_history",
    "OPTUNA_FAILED_TRIAL_ATTR": "failed_trial",
    "OPTUNA_FIXED_PARAMS_ATTR": "fixed_params",
}
#: The setters of Optuna's Trial/Study (key first) and of its storages (id, then key): where the key sits.
SETTERS = {
    "set_user_attr": 0,
    "set_system_attr": 0,
    "set_trial_user_attr": 1,
    "set_trial_system_attr": 1,
    "set_study_user_attr": 1,
    "set_study_system_attr": 1,
}
HOLDERS = ("user_attrs", "system_attrs")
READERS = ("get", "pop", "setdefault")


def names() -> dict[str, str]:
    return {name: value for name, value in vars(attrs).items() if name.isupper() and isinstance(value, str)}


def test_every_attribute_name_keeps_its_stored_key():
    assert names() == STORED


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_optuna_names_are_what_optuna_writes():
    """OPTUNA_* are Optuna's own system attributes; RETRY_HISTORY_ATTR is ours, the same key among the user attributes."""
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    assert attrs.OPTUNA_FIXED_PARAMS_ATTR in study.trials[0].system_attrs
    failed = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"mine": 1})
    RetryHeartbeatStaleTrialCallback()(study, failed)  # as _retries.requeue calls it
    retry = study.trials[-1]
    assert set(retry.system_attrs) == {attrs.OPTUNA_FAILED_TRIAL_ATTR, attrs.OPTUNA_RETRY_HISTORY_ATTR}
    assert attrs.RETRY_HISTORY_ATTR not in retry.user_attrs  # Optuna keeps its history to itself; _retries.requeue copies it


def bare_names(source: str, where: str, values: set[str]) -> list[str]:
    """``file:line 'key'`` for each bare attribute name in ``source``: a setter's key, a read of user/system attributes
    (subscript, .get/.pop/.setdefault, ``in``), or a key of a dict given as or assigned to user/system attributes."""
    tree = ast.parse(source)
    holders = set(HOLDERS)
    for node in ast.walk(tree):  # local names bound to attributes: `attrs = trial.user_attrs`, `b, s = x.user_attrs, ...`
        if isinstance(node, ast.Assign):
            for target in node.targets:
                tuples = isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                pairs = zip(target.elts, node.value.elts) if tuples else [(target, node.value)]
                holders |= {t.id for t, v in pairs if isinstance(t, ast.Name) and holds(v, set())}
    keys = [key for node in ast.walk(tree) for key in keys_in(node, holders)]
    bare = [key for key in keys if isinstance(key, ast.Constant) and isinstance(key.value, str) and key.value in values]
    return [f"{where}:{key.lineno} {key.value!r}" for key in sorted(bare, key=lambda key: (key.lineno, key.col_offset))]


def keys_in(node: ast.AST, holders: set[str]) -> list[ast.expr]:
    """The expressions ``node`` uses as attribute keys (none when it touches no attributes)."""
    keys: list[ast.expr | None] = []
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute):
            position = SETTERS.get(node.func.attr)
            keys += node.args[position : position + 1] if position is not None else []
            keys += node.args[:1] if node.func.attr in READERS and holds(node.func.value, holders) else []
        keys += [k for kw in node.keywords if kw.arg in HOLDERS and isinstance(kw.value, ast.Dict) for k in kw.value.keys]
    elif isinstance(node, ast.Subscript) and holds(node.value, holders):
        keys.append(node.slice)
    elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
        keys += [node.left] if any(holds(c, holders) for c in node.comparators) else []
    elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
        keys += node.value.keys if any(isinstance(t, ast.Attribute) and t.attr in HOLDERS for t in node.targets) else []
    return [key for key in keys if key is not None]


def holds(node: ast.AST, holders: set[str]) -> bool:
    """Whether ``node`` is a mapping of attributes: ``x.user_attrs``, a name bound to one, ``storage.get_study_user_attrs(...)``."""
    if isinstance(node, ast.Attribute):
        return node.attr in HOLDERS
    if isinstance(node, ast.Name):
        return node.id in holders
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        return name.endswith(("_user_attrs", "_system_attrs"))
    return False


def test_no_module_but_attrs_names_an_attribute_with_a_bare_string():
    values = set(names().values())
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.resolve() != HOME:
            found += bare_names(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE)), values)
    assert not found, f"import the name from mnist_hpo/tuning/attrs.py instead: {found}"


def test_the_scan_finds_each_kind_of_bare_name():
    """The scan itself: every place a key is written or read is seen (and other strings are left alone)."""
    source = """
trial.set_user_attr("a", 1)
storage.set_trial_system_attr(trial_id, "b", 1)
trial.user_attrs.get("c")
study.system_attrs["d"]
if "e" in trial.user_attrs: pass
study.enqueue_trial({}, user_attrs={"f": 1})
inherit.system_attrs = {"g": 1}
attrs = trial.user_attrs
attrs.get("h")
b, s = one.user_attrs, two.user_attrs
s["i"]
storage.get_study_user_attrs(study_id).get("j")
settings.get("a")
payload["b"]
print("c")
trial.set_user_attr(KEY, "d")
"""
    found = bare_names(source, "x.py", set("abcdefghij"))
    assert [entry.split(" ")[1] for entry in found] == [repr(c) for c in "abcdefghij"], found
