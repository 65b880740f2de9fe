"""Crafted model files, fed to `mnist-hpo predict` as a user would: each is one line on stderr, exit 2.

A model file is data, never code: no crafted file may run anything (each payload would create a
marker file), and none may make predict allocate what it describes (each allocation attack would
take well over the memory bound checked here: 2 GiB zip bombs, networks of 3.5 GB). Every case is
a real `mnist-hpo predict` subprocess, its peak memory measured by the kernel (``wait4``).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mnist_hpo.exports import ExportInfo, export_model, open_export
from mnist_hpo.models import build_model

#: The most a refused file may make predict use; importing torch alone takes about 0.7 GB.
MAX_RSS_BYTES = int(1.5 * 2**30)
#: What each allocation attack asks for: a zip member inflating to 2 GiB, a network of 3.5 GB.
BOMB_BYTES = 2**31
HUGE_SPEC = {"name": "family", "config": {"conv_layers": 1, "kernel_size": 3, "first_channels": 131072}}  # 888M parameters


@dataclass(frozen=True)
class Member:
    """A zip member as written by ``zip_of``: stored, or deflated (``size`` is then its inflated size)."""

    name: str
    data: bytes
    deflated: bool = False
    size: int = 0
    crc: int = 0


@dataclass(frozen=True)
class Originals:
    """Real exports of one tiny-cnn, and what crafted files are built from."""

    folder: Path
    paths: dict[str, Path]

    def members(self, fmt: str) -> list[Member]:
        with zipfile.ZipFile(self.paths[fmt]) as archive:
            return [Member(info.filename, archive.read(info)) for info in archive.infolist()]

    def props(self) -> dict[str, str]:
        with zipfile.ZipFile(self.paths["pt2"]) as archive:
            return json.loads(archive.read("archive/extra/mnist_hpo.json"))


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Originals:
    """pt, safetensors and pt2 exports of an untrained tiny-cnn (the ONNX cases build their graphs themselves)."""
    folder = tmp_path_factory.mktemp("originals")
    network = build_model("tiny-cnn")
    info = ExportInfo({"name": "tiny-cnn"}, val_accuracy=0.5)
    return Originals(folder, {fmt: export_model(network, folder / f"tiny.{fmt}", fmt, info).path for fmt in ("pt", "safetensors", "pt2")})


@functools.cache
def zip_bomb() -> Member:
    """2 GiB of zeros deflated to about 2 MB, under a placeholder name: one 64 MiB block, flushed so it can repeat."""
    compressor, zeros = zlib.compressobj(9, zlib.DEFLATED, -15), bytes(64 * 2**20)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(BOMB_BYTES // len(zeros)):
        crc = zlib.crc32(zeros, crc)
    return Member("", block * (BOMB_BYTES // len(zeros)) + b"\x03\x00", deflated=True, size=BOMB_BYTES, crc=crc)


_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_END = struct.Struct("<4sHHHHIIH")


def zip_of(members: list[Member]) -> bytes:
    """A zip with exactly these members, in this order, duplicates included (zipfile would warn and rename nothing)."""
    body, directory = io.BytesIO(), io.BytesIO()
    for member in members:
        name = member.name.encode()
        size, crc = (member.size, member.crc) if member.deflated else (len(member.data), zlib.crc32(member.data))
        common = (8 if member.deflated else 0, 0, 0x21, crc, len(member.data), size, len(name))  # method, time, date, crc, sizes
        directory.write(_CENTRAL.pack(b"PK\x01\x02", 20, 20, 0, *common, 0, 0, 0, 0, 0, body.tell()) + name)
        body.write(_LOCAL.pack(b"PK\x03\x04", 20, 0, *common, 0) + name + member.data)
    count = len(members)
    return body.getvalue() + directory.getvalue() + _END.pack(b"PK\x05\x06", 0, 0, count, count, directory.tell(), body.tell(), 0)


def bombed(members: list[Member], suffix: str) -> list[Member]:
    """The members with the one whose name ends so replaced by the zip bomb."""
    return [dataclasses.replace(zip_bomb(), name=m.name) if m.name.endswith(suffix) else m for m in members]


class Payload:
    """Unpickling it runs a shell command that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plain_pickle(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def marker_pickle(marker: Path) -> bytes:
    """A torch.save file whose unpickling creates ``marker`` (weights_only refuses it)."""
    buffer = io.BytesIO()
    torch.save(Payload(marker), buffer)
    return buffer.getvalue()


def replaced(members: list[Member], suffix: str, data: bytes) -> list[Member]:
    return [Member(m.name, data) if m.name.endswith(suffix) else m for m in members]


def edited_json(members: list[Member], suffix: str, edit: Callable[[dict], None]) -> list[Member]:
    member = next(m for m in members if m.name.endswith(suffix))
    content = json.loads(member.data)
    edit(content)
    return replaced(members, suffix, json.dumps(content).encode())


# --------------------------------------------------------------------------------------------- .pt2


def pt2_duplicate_sample_inputs(o: Originals, marker: Path) -> bytes:
    """Two members of one name: zipfile reads the last (benign), torch's reader may read the first (a pickle)."""
    members = o.members("pt2")
    benign = next(m for m in members if m.name.endswith("sample_inputs/model.pt"))
    rest = [m for m in members if m is not benign]
    return zip_of([Member(benign.name, marker_pickle(marker)), *rest, benign])


def pt2_case_duplicate(o: Originals, marker: Path) -> bytes:
    members = o.members("pt2")
    return zip_of([*members, Member("archive/data/sample_inputs/MODEL.pt", marker_pickle(marker))])


def pt2_pickled_weight(o: Originals, marker: Path) -> bytes:
    def pickle_first(config: dict) -> None:
        next(iter(config["config"].values()))["use_pickle"] = True

    members = edited_json(o.members("pt2"), "model_weights_config.json", pickle_first)
    return zip_of(replaced(members, "data/weights/weight_0", marker_pickle(marker)))


def pt2_pickled_constant(o: Originals, marker: Path) -> bytes:
    weight = json.loads(next(m for m in o.members("pt2") if m.name.endswith("model_weights_config.json")).data)["config"]
    entry = {**next(iter(weight.values())), "path_name": "tensor_0", "use_pickle": True, "is_param": False}
    members = edited_json(o.members("pt2"), "model_constants_config.json", lambda c: c["config"].update({"lifted_tensor_0": entry}))
    return zip_of([*members, Member("archive/data/constants/tensor_0", marker_pickle(marker))])


def pt2_opaque_constant(o: Originals, marker: Path) -> bytes:
    entry = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
    members = edited_json(o.members("pt2"), "model_constants_config.json", lambda c: c["config"].update({"obj": entry}))
    return zip_of([*members, Member("archive/data/constants/opaque_obj_0", plain_pickle(marker))])


def pt2_legacy_weights(o: Originals, marker: Path) -> bytes:
    return zip_of([*o.members("pt2"), Member("archive/data/weights/model.pt", marker_pickle(marker))])


def pt2_pickled_sample_inputs(o: Originals, marker: Path) -> bytes:
    return zip_of(replaced(o.members("pt2"), "data/sample_inputs/model.pt", marker_pickle(marker)))


def pt2_extra_program(o: Originals, marker: Path) -> bytes:
    members = o.members("pt2")
    program = next(m for m in members if m.name.endswith("models/model.json"))
    return zip_of(
        [*members, Member("archive/models/evil.json", program.data), Member("archive/data/sample_inputs/evil.pt", marker_pickle(marker))]
    )


def pt2_guard_code(o: Originals, marker: Path) -> bytes:
    code = f"__import__('os').system('touch {marker}') == 0"
    return zip_of(edited_json(o.members("pt2"), "models/model.json", lambda p: p.update(guards_code=[code])))


def pt2_shape_expression(o: Originals, marker: Path) -> bytes:
    """torch.export.load hands shape expressions to sympify, which evaluates Python."""
    members = o.members("pt2")
    program = next(m for m in members if m.name.endswith("models/model.json")).data.decode()
    symbol = "Symbol('s"
    start = program.index(symbol)
    original = program[start : program.index(")", start) + 1]
    evil = f"(__import__('os').system('touch {marker}') or {original})".replace("'", "\\u0027")
    return zip_of(replaced(members, "models/model.json", program.replace(original, evil).encode()))


def pt2_zip_bomb(o: Originals, marker: Path) -> bytes:
    return zip_of(bombed(o.members("pt2"), "models/model.json"))


def pt2_outside_root(o: Originals, marker: Path) -> bytes:
    return zip_of([*o.members("pt2"), Member("evil/data/sample_inputs/model.pt", marker_pickle(marker))])


def pt2_truncated(o: Originals, marker: Path) -> bytes:
    data = o.paths["pt2"].read_bytes()
    return data[: len(data) // 2]


# -------------------------------------------------------------------------------------- safetensors


def safetensors_with(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def st_huge_spec(o: Originals, marker: Path) -> bytes:
    """A 2 KB file whose spec describes a network of 3.5 GB: the header is checked against the spec before anything is built."""
    props = {**o.props(), "kind": "safetensors", "model_spec": json.dumps(HUGE_SPEC)}
    return safetensors_with({"__metadata__": props, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4))


def st_header_length_lies(o: Originals, marker: Path) -> bytes:
    data = o.paths["safetensors"].read_bytes()
    return struct.pack("<Q", 10**9) + data[8:4096]


def st_offsets_beyond_file(o: Originals, marker: Path) -> bytes:
    props = {**o.props(), "kind": "safetensors"}
    return safetensors_with({"__metadata__": props, "w": {"dtype": "F32", "shape": [2**28], "data_offsets": [0, 2**30]}}, bytes(16))


def st_overlapping_offsets(o: Originals, marker: Path) -> bytes:
    props = {**o.props(), "kind": "safetensors"}
    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}
    return safetensors_with({"__metadata__": props, **header}, bytes(24))


def st_huge_shape(o: Originals, marker: Path) -> bytes:
    props = {**o.props(), "kind": "safetensors"}
    return safetensors_with({"__metadata__": props, "w": {"dtype": "F32", "shape": [2**31, 2**31], "data_offsets": [0, 4]}}, bytes(4))


def st_truncated(o: Originals, marker: Path) -> bytes:
    data = o.paths["safetensors"].read_bytes()
    return data[: len(data) - 1000]


# --------------------------------------------------------------------------------------------- ONNX


def onnx_graph(o: Originals, classes: int, external: bool = False, bomb: bool = False) -> bytes:
    """A linear model on raw pixels with mnist-hpo's metadata copied in; its weights optionally in another
    file, its logits optionally offset by the maximum of a 1.6 GB constant that ``Expand`` makes from 8 bytes."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((784, classes), np.float32), "weight")
    if external:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", str(784 * classes * 4))):
            weight.external_data.add(key=key, value=value)
    nodes = [
        helper.make_node("Flatten", ["pixels"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], ["linear" if bomb else "logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    initializers = [weight]
    if bomb:
        initializers += [numpy_helper.from_array(np.ones(1, np.float32), "one"), numpy_helper.from_array(np.array([20000, 20000]), "huge")]
        nodes[2:2] = [
            helper.make_node("Expand", ["one", "huge"], ["expanded"]),
            helper.make_node("ReduceMax", ["expanded"], ["offset"], keepdims=0),
            helper.make_node("Add", ["linear", "offset"], ["logits"]),
        ]
    graph = helper.make_graph(
        nodes,
        "foreign",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", classes]) for name in ("logits", "probabilities")],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {**o.props(), "kind": "onnx"})
    return model.SerializeToString()


def onnx_external_data(o: Originals, marker: Path) -> bytes:
    (marker.parent / "weights.bin").write_bytes(bytes(784 * 10 * 4))  # there to be read, if anything would read it
    return onnx_graph(o, 10, external=True)


def onnx_five_classes(o: Originals, marker: Path) -> bytes:
    return onnx_graph(o, 5)


def onnx_expand_bomb(o: Originals, marker: Path) -> bytes:
    return onnx_graph(o, 10, bomb=True)


def onnx_truncated(o: Originals, marker: Path) -> bytes:
    data = onnx_graph(o, 10)
    return data[: len(data) // 2]


# ---------------------------------------------------------------------------------------------- .pt


def pt_payload(o: Originals) -> dict:
    return torch.load(o.paths["pt"], weights_only=True)


def saved(value: object, **kwargs) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer, **kwargs)
    return buffer.getvalue()


def pt_malicious_pickle(o: Originals, marker: Path) -> bytes:
    return marker_pickle(marker)


def pt_zip_bomb(o: Originals, marker: Path) -> bytes:
    return zip_of(bombed(o.members("pt"), "data.pkl"))


def pt_huge_spec(o: Originals, marker: Path) -> bytes:
    return saved({**pt_payload(o), "model_spec": HUGE_SPEC})


def pt_duplicate_payload(o: Originals, marker: Path) -> bytes:
    members = o.members("pt")
    payload = next(m for m in members if m.name.endswith("data.pkl"))
    with zipfile.ZipFile(io.BytesIO(marker_pickle(marker))) as evil:
        evil_payload = evil.read("archive/data.pkl")
    return zip_of([*members, Member(payload.name, evil_payload)])


def pt_legacy_format(o: Originals, marker: Path) -> bytes:
    return saved(pt_payload(o), _use_new_zipfile_serialization=False)


def pt_truncated(o: Originals, marker: Path) -> bytes:
    data = o.paths["pt"].read_bytes()
    return data[: len(data) // 2]


#: Case -> (how to make the file, what the one line must say).
CASES: dict[str, tuple[Callable[[Originals, Path], bytes], str]] = {
    "pt2-duplicate-sample-inputs": (pt2_duplicate_sample_inputs, "two members named 'archive/data/sample_inputs/model.pt'"),
    "pt2-duplicate-but-for-case": (pt2_case_duplicate, "two members named 'archive/data/sample_inputs/MODEL.pt'"),
    "pt2-pickled-weight": (pt2_pickled_weight, "would unpickle (weight 'network.0.weight')"),
    "pt2-pickled-constant": (pt2_pickled_constant, "data/constants/tensor_0"),
    "pt2-opaque-constant": (pt2_opaque_constant, "data/constants/opaque_obj_0"),
    "pt2-legacy-weights": (pt2_legacy_weights, "data/weights/model.pt"),
    "pt2-pickled-sample-inputs": (pt2_pickled_sample_inputs, "would unpickle (data/sample_inputs/model.pt"),
    "pt2-extra-program": (pt2_extra_program, "models/evil.json"),
    "pt2-guard-code": (pt2_guard_code, "guard code that torch.export.load would run as Python"),
    "pt2-shape-expression": (pt2_shape_expression, "shape expression that is not arithmetic"),
    "pt2-zip-bomb": (pt2_zip_bomb, "member 'archive/models/model.json' is compressed"),
    "pt2-outside-root": (pt2_outside_root, "outside one root folder"),
    "pt2-truncated": (pt2_truncated, "is not a .pt2 archive mnist-hpo can read safely (it is truncated"),
    "safetensors-huge-spec": (st_huge_spec, "describes a network of 887,750,698 parameters, more than mnist-hpo reads (50,000,000)"),
    "safetensors-header-length-lies": (st_header_length_lies, "its header claims 1,000,000,000 bytes"),
    "safetensors-offsets-beyond-file": (st_offsets_beyond_file, "its tensors cover 1,073,741,824 bytes, the file holds 16"),
    "safetensors-overlapping-offsets": (st_overlapping_offsets, "tensor 'b' overlaps another"),
    "safetensors-huge-shape": (st_huge_shape, "tensor 'w' is [2147483648, 2147483648] F32 but holds 4 bytes"),
    "safetensors-truncated": (st_truncated, "is a damaged safetensors file"),
    "onnx-external-data": (onnx_external_data, "stores tensor 'weight' in another file (external data)"),
    "onnx-five-classes": (onnx_five_classes, "'logits' is ['batch', 5]"),
    "onnx-expand-bomb": (onnx_expand_bomb, "whose values take 1,600,003,260 bytes per image"),
    "onnx-truncated": (onnx_truncated, "is a damaged ONNX file"),
    "pt-malicious-pickle": (pt_malicious_pickle, "cannot be read safely (Trying to load unsupported GLOBAL posix.system"),
    "pt-zip-bomb": (pt_zip_bomb, "member 'archive/data.pkl' is compressed"),
    "pt-huge-spec": (pt_huge_spec, "describes a network of 887,750,698 parameters, more than mnist-hpo reads (50,000,000)"),
    "pt-duplicate-payload": (pt_duplicate_payload, "two members named 'archive/data.pkl'"),
    "pt-legacy-format": (pt_legacy_format, "not a zip archive as torch.save writes"),
    "pt-truncated": (pt_truncated, "cannot be read safely (it is truncated"),
}


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes


#: `mnist-hpo` in a Python that writes its own peak resident memory (VmHWM, which belongs to the process's own
#: memory map) to $PEAK_FILE as it exits. The kernel's rusage would not do: a child's ru_maxrss starts at the
#: high-water mark of the pytest worker that forked it (Linux carries it across fork and exec).
_MEASURED = """
import atexit, os, sys
def peak():
    with open("/proc/self/status") as status, open(os.environ["PEAK_FILE"], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(peak)
sys.argv = ["mnist-hpo", *sys.argv[1:]]
from mnist_hpo.cli import main
main()
"""


def predict(cwd: Path, checkpoint: Path) -> Outcome:
    """`mnist-hpo predict --checkpoint FILE digit.png` in a fresh process, with its own peak resident memory."""
    digit_png(cwd / "digit.png")
    peak = cwd / "peak-kib"
    peak.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURED, "predict", "--checkpoint", checkpoint.name, "digit.png"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PEAK_FILE": str(peak)},
        timeout=300,
    )
    return Outcome(done.returncode, done.stdout, done.stderr, int(peak.read_text()) * 1024)


def digit_png(path: Path) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(image).line([(32, 8), (32, 56)], fill=0, width=6)
    image.save(path)
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_a_crafted_file_is_one_line_and_runs_nothing(case, originals, tmp_path):
    make, fragment = CASES[case]
    marker = tmp_path / "MARKER"
    path = tmp_path / f"crafted.{case.split('-')[0]}"
    path.write_bytes(make(originals, marker))
    done = predict(tmp_path, path)
    assert not marker.exists(), f"{case}: the crafted file ran code"
    assert done.peak_rss < MAX_RSS_BYTES, f"{case}: predict used {done.peak_rss / 2**30:.2f} GiB"
    assert done.returncode == 2, (case, done.returncode, done.stdout[-500:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and path.name in lines[0], lines
    assert fragment in lines[0], (case, lines[0])
    assert done.stdout == ""


def test_the_originals_predict_through_the_same_harness(originals, tmp_path):
    """The control: what the crafted files start from opens (the plain linear ONNX graph too: it is data, and well-formed),
    and one predicts through the CLI within the same memory bound."""
    for fmt, path in originals.paths.items():
        assert open_export(path).format == fmt
    (tmp_path / "linear.onnx").write_bytes(onnx_graph(originals, 10))
    assert open_export(tmp_path / "linear.onnx").logits(torch.zeros(3, 28, 28, dtype=torch.uint8)).shape == (3, 10)
    done = predict(originals.folder, originals.paths["pt2"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("digit.png: ") and done.peak_rss < MAX_RSS_BYTES


def test_a_channels_last_network_reads_back_from_pt2(tmp_path):
    """Weights in any layout torch.export.save writes (here channels_last, as after training on CUDA) are read, not refused."""
    network = build_model("tiny-cnn").to(memory_format=torch.channels_last)
    path = export_model(network, tmp_path / "cl.pt2", "pt2", ExportInfo({"name": "tiny-cnn"}, val_accuracy=0.5)).path
    images = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    expected = torch.export.load(path).module()(images.unsqueeze(1).float())[0]
    assert torch.allclose(open_export(path).logits(images), expected, atol=1e-5)


# ------------------------------------------------------------------ the zip reader, in process (no torch reads these)


def _damaged(data: bytes, how: str) -> bytes:
    """One way a zip can mean different things to different readers, applied to a stored zip of two members."""
    first = data.index(b"PK\x01\x02")
    if how == "bytes before":
        return b"MZ" + data  # the offsets no longer point at the members
    if how == "bytes before, offsets moved":  # a polyglot: another file first, the zip's offsets all shifted past it
        moved = bytearray(b"MZ" + data)
        for at in (i for i in range(len(moved)) if moved[i : i + 4] == b"PK\x01\x02"):
            struct.pack_into("<I", moved, at + 42, struct.unpack_from("<I", moved, at + 42)[0] + 2)
        struct.pack_into("<I", moved, len(moved) - 6, struct.unpack_from("<I", moved, len(moved) - 6)[0] + 2)
        return bytes(moved)
    if how == "bytes after":
        return data + b"\x00"
    if how == "comment":
        return data[:-2] + struct.pack("<H", 3) + b"abc"
    if how == "local name differs":
        return data.replace(b"a/one", b"a/ONE", 1)
    if how == "encrypted":
        return data[:first] + data[first : first + 8] + b"\x01" + data[first + 9 :]
    if how == "checksum":
        return data.replace(b"first", b"First", 1)
    raise AssertionError(how)


DISAGREEMENTS = {
    "bytes before": "its central directory is not where its end record says",
    "bytes before, offsets moved": "it has bytes before its first member",
    "bytes after": "carries bytes after its end record",
    "comment": "carries bytes after its end record",
    "local name differs": "has a local header that disagrees with the central directory",
    "encrypted": "is compressed or encrypted",
    "checksum": "its checksum does not match",
}


@pytest.mark.parametrize("how", list(DISAGREEMENTS))
def test_zips_that_readers_could_read_differently_are_refused(how):
    from mnist_hpo.checkpoints import zip_entries

    data = zip_of([Member("a/one", b"first"), Member("a/two", b"second")])
    assert sorted(zip_entries(data)) == ["a/one", "a/two"]
    with pytest.raises(ValueError, match=DISAGREEMENTS[how]):
        zip_entries(_damaged(data, how))


@pytest.mark.parametrize("name", ["a/../b", "/a/b", "a//b", "a\\b", "a/b\x00c", "a/\u00e9"])
def test_unsafe_member_names_are_refused(name):
    """Names that readers normalise differently (or cut at a NUL, as zipfile does) never name a member."""
    from mnist_hpo.checkpoints import zip_entries

    with pytest.raises(ValueError, match="member whose name is not ASCII|member with an unsafe name"):
        zip_entries(zip_of([Member(name, b"x")]))


def test_zipfile_rewrites_of_our_archives_are_read(originals, tmp_path):
    """An archive rewritten by Python's zipfile (no data descriptors, no alignment) is still one of ours."""
    for fmt in ("pt", "pt2"):
        copy = tmp_path / f"copy.{fmt}"
        with zipfile.ZipFile(originals.paths[fmt]) as source, zipfile.ZipFile(copy, "w") as target:
            for info in source.infolist():
                target.writestr(info, source.read(info))
        assert open_export(copy).format == fmt
