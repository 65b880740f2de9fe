"""What a ``.pt2`` archive may hold: exactly what ``torch.export.save`` writes for mnist-hpo's programs.

That is, below one root folder: ``archive_format``, ``archive_version``, ``byteorder``,
``.data/version``, ``.data/serialization_id``, the program ``models/model.json``, its sample inputs
``data/sample_inputs/model.pt``, the weights config and ``data/weights/weight_N`` files, an empty
constants config, and ``extra/mnist_hpo.json``. Everything else ``torch.export.load`` knows (more
programs, legacy ``.pt`` weights, pickled or opaque constants, AOTInductor code) is refused, and so
is every way the members left could make it unpickle or run Python: a pickled weight, sample inputs
that do not load weights-only, guard code, operators other than aten's, shape expressions that are
not plain arithmetic on symbols (``sympify`` evaluates them).
"""

from __future__ import annotations

import io
import json
import re
import sys
from dataclasses import dataclass
from typing import Any

import torch

from mnist_hpo.checkpoints import CheckpointError, ZipEntry, zip_entries
from mnist_hpo.models.config import IMAGE_SIDE

FIXED = (
    "archive_format",
    "archive_version",
    "byteorder",
    ".data/version",
    ".data/serialization_id",
    "models/model.json",
    "data/sample_inputs/model.pt",
    "data/weights/model_weights_config.json",
    "data/constants/model_constants_config.json",
    "extra/mnist_hpo.json",
)
WEIGHT = re.compile(r"weight_(0|[1-9][0-9]{0,5})")
#: torch.export's dtype numbers (torch._export.serde.schema.ScalarType) of the tensors a network holds.
DTYPES = {5: torch.int64, 6: torch.float16, 7: torch.float32, 8: torch.float64, 13: torch.bfloat16}
_REEXPORT = "re-export it with `mnist-hpo export --format pt2`"
_DUNDER_OPS = {f"__{op}__" for op in ("and", "or", "xor", "lshift", "rshift", "iand", "ior", "ixor", "ilshift", "irshift")}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYMBOL = re.compile(r"[a-z]+[0-9]+")
_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|[0-9]+|'(?P<symbol>[a-z]+[0-9]+)'|\*\*|//|[-+*/(),=])")
#: The names a shape expression may use: sympy's classes and torch's integer functions, never a builtin.
_SYMPY_NAMES = {
    *("Symbol", "Integer", "Rational", "Mul", "Add", "Pow", "Max", "Min", "Mod", "FloorDiv", "CleanDiv", "CeilDiv"),
    *("ModularIndexing", "Where", "PythonMod", "IntTrueDiv", "FloatTrueDiv", "TruncToInt", "TruncToFloat", "RoundToInt"),
    *("RoundDecimal", "ToFloat", "Identity", "PowByNatural", "FloatPow", "LShift", "RShift", "IsNonOverlappingAndDenseIndicator"),
    *("positive", "negative", "integer", "nonnegative", "nonpositive", "real", "finite", "True", "False", "oo"),
}


def check_members(entries: dict[str, ZipEntry], name: str) -> dict[str, ZipEntry]:
    """The members by their names below the root folder: exactly those mnist-hpo's exporter writes, under one root."""
    roots = {entry.split("/", 1)[0] for entry in entries}
    if len(roots) != 1 or any("/" not in entry for entry in entries):
        raise CheckpointError(f"{name} holds members outside one root folder, which torch.export.save never writes; {_REEXPORT}")
    members = {entry.split("/", 1)[1]: value for entry, value in entries.items()}
    unexpected = [
        m for m in members if m not in FIXED and not (m.startswith("data/weights/") and WEIGHT.fullmatch(m.removeprefix("data/weights/")))
    ]
    if unexpected:
        raise CheckpointError(
            f"{name} holds {unexpected[0]!r}, a member mnist-hpo's pt2 exports never hold (torch.export.load could unpickle or run it); "
            f"mnist-hpo refuses it: {_REEXPORT}"
        )
    missing = [m for m in FIXED if m not in members]
    if missing:
        raise CheckpointError(f"{name} is a damaged .pt2 archive (no {missing[0]}); {_REEXPORT}")
    return members


def check_markers(files: dict[str, bytes], name: str) -> None:
    if files["archive_format"] != b"pt2" or files["byteorder"] != sys.byteorder.encode():
        raise CheckpointError(f"{name} is not a {sys.byteorder}-endian pt2 archive (archive_format, byteorder); {_REEXPORT}")


@dataclass(frozen=True)
class Weight:
    """Where a weight's values lie: a raw storage file, read as ``dtype``, viewed with this size, stride and offset."""

    path: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int
    dtype: torch.dtype


def weight_layout(files: dict[str, bytes], name: str) -> dict[str, Weight]:
    """Weight name -> where it lies, from the weights config: raw tensors only, every weight file named."""
    if _json(files["data/constants/model_constants_config.json"], name) != {"config": {}}:
        raise CheckpointError(f"{name} holds constants (mnist-hpo's programs have none; torch.export.load may unpickle them); {_REEXPORT}")
    config = _json(files["data/weights/model_weights_config.json"], name)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise CheckpointError(f"{name} has a damaged weights config; {_REEXPORT}")
    layout = {key: _weight(key, entry, name) for key, entry in entries.items()}
    stored = {m.removeprefix("data/weights/") for m in files if WEIGHT.fullmatch(m.removeprefix("data/weights/"))}
    if {weight.path for weight in layout.values()} != stored:
        raise CheckpointError(f"{name} holds weight files its config does not name, or names files it does not hold; {_REEXPORT}")
    return layout


def _weight(key: str, entry: Any, name: str) -> Weight:
    if not isinstance(entry, dict) or entry.get("use_pickle") is not False:
        raise CheckpointError(
            f"{name} holds members torch.export.load would unpickle (weight {key[:60]!r}); mnist-hpo refuses it: {_REEXPORT}"
        )
    meta, path = entry.get("tensor_meta"), entry.get("path_name")
    try:
        dtype = DTYPES[meta["dtype"]] if not isinstance(meta["dtype"], bool) else None
        weight = Weight(
            path,
            tuple(_int(size) for size in meta["sizes"]),
            tuple(_int(stride) for stride in meta["strides"]),
            _int(meta["storage_offset"]),
            dtype,
        )
    except (TypeError, KeyError, ValueError):
        weight = None
    if weight is None or weight.dtype is None or not isinstance(path, str) or not WEIGHT.fullmatch(path):
        raise CheckpointError(f"{name}: weight {key[:60]!r} is not a raw tensor as mnist-hpo writes them; {_REEXPORT}")
    if len(weight.shape) != len(weight.strides) or len(weight.shape) > 8:
        raise CheckpointError(f"{name}: weight {key[:60]!r} has {len(weight.shape)} sizes but {len(weight.strides)} strides; {_REEXPORT}")
    return weight


def _int(value: Any) -> int:
    number = value.get("as_int") if isinstance(value, dict) else None
    if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < 2**40:
        raise ValueError(value)
    return number


def check_program(files: dict[str, bytes], name: str) -> None:
    """Refuse a program torch.export.load would run Python from: guards, non-aten operators, expressions beyond arithmetic."""
    program = _json(files["models/model.json"], name)
    if not isinstance(program, dict) or program.get("guards_code", []) != []:
        raise CheckpointError(f"{name} holds guard code that torch.export.load would run as Python; mnist-hpo refuses it: {_REEXPORT}")
    pending: list[Any] = [program]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        pending.extend(node.values())
        target, expression = node.get("target"), node.get("expr_str")
        if target is not None and not (isinstance(target, str) and _is_operator(target)):
            raise CheckpointError(f"{name} calls {str(target)[:60]!r}, which is no aten operator; mnist-hpo refuses it: {_REEXPORT}")
        if expression is not None and not (isinstance(expression, str) and _is_arithmetic(expression)):
            raise CheckpointError(
                f"{name} holds a shape expression that is not arithmetic ({str(expression)[:60]!r}; torch would evaluate it as Python); "
                f"mnist-hpo refuses it: {_REEXPORT}"
            )


def _is_operator(target: str) -> bool:
    if target == "_operator.getitem":
        return True
    parts = target.split(".")
    if len(parts) != 5 or parts[:3] != ["torch", "ops", "aten"] or not all(_IDENTIFIER.fullmatch(p) for p in parts[3:]):
        return False
    return (not parts[3].startswith("__") or parts[3] in _DUNDER_OPS) and not parts[4].startswith("__")


def _is_arithmetic(expression: str) -> bool:
    """Integers, symbols and sympy's arithmetic only: no attribute, no string but a symbol's name, no builtin."""
    position = 0
    while position < len(expression.rstrip()) and len(expression) <= 2000:
        token = _TOKEN.match(expression, position)
        if token is None:
            return False
        word = token.group("name")
        if word is not None and word not in _SYMPY_NAMES and not _SYMBOL.fullmatch(word):
            return False
        position = token.end()
    return position >= len(expression.rstrip())


def check_sample_inputs(raw: bytes, name: str) -> None:
    """The program's sample inputs: loaded weights-only (torch.export.load falls back to a full unpickling), one image batch."""
    try:
        zip_entries(raw)  # a torch.save archive inside the archive: the same checks, so torch reads what was checked
        value = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception:  # a pickle that needs more than weights_only, or a damaged one
        value = None
    inputs = value[0] if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict) and not value[1] else None
    batch = inputs[0] if isinstance(inputs, tuple) and len(inputs) == 1 else None
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or tuple(batch.shape[1:]) != (1, IMAGE_SIDE, IMAGE_SIDE):
        raise CheckpointError(
            f"{name} holds members torch.export.load would unpickle (data/sample_inputs/model.pt is no weights-only image batch); "
            f"mnist-hpo refuses it: {_REEXPORT}"
        )


def _json(raw: bytes, name: str) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{name} is a damaged .pt2 archive (a member is not JSON); {_REEXPORT}") from None
