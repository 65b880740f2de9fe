"""Bad input to export and predict: one line on stderr, exit status 2, no traceback, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from export_helpers import FORMATS, STUDY, cli, copy_study, error_line, tree

from mnist_hpo.checkpoints import CheckpointError, read_checkpoint
from mnist_hpo.errors import UserError
from mnist_hpo.exports import ExportInfo, export_model, open_export
from mnist_hpo.inference import predict_pixels
from mnist_hpo.models import build_model

INFO = ExportInfo({"name": "tiny-cnn"}, val_accuracy=0.5)


@contextmanager
def immutable(folder: Path):
    """A folder even root cannot write to (chattr +i), restored afterwards so pytest can clean up."""
    folder.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@contextmanager
def tiny_filesystem(folder: Path, size: str = "256k"):
    """A real tmpfs too small for a model file: writing fails half way through."""
    folder.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


# ------------------------------------------------------------------------------ output paths (CLI)


def test_unknown_format(study, tmp_path):
    error_line(
        cli(tmp_path, "export", *study.args(), "--format", "tflite", "--out", "out/best.tflite"),
        "unknown export format 'tflite'; choose from pt, safetensors, onnx, pt2",
    )
    assert tree(tmp_path) == []


def test_output_is_a_folder(study, tmp_path):
    (tmp_path / "models").mkdir()
    error_line(
        cli(tmp_path, "export", *study.args(), "--format", "onnx", "--out", "models"), "output models is a folder", "models/model.onnx"
    )
    assert tree(tmp_path) == ["models"]


def test_output_under_a_file(study, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me\n")
    error_line(
        cli(tmp_path, "export", *study.args(), "--format", "pt2", "--out", "notes.txt/sub/best.pt2"),
        "lies under notes.txt, which is a file",
    )
    assert tree(tmp_path) == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "keep me\n"


def test_output_in_a_read_only_folder(study, tmp_path):
    with immutable(tmp_path / "locked") as locked:
        error_line(
            cli(tmp_path, "export", *study.args(), "--format", "safetensors", "--out", "locked/best.safetensors"),
            "cannot be written",
            "choose a writable --out",
        )
        assert tree(locked) == []


def test_every_format_creates_missing_folders(study):
    for fmt, out in study.exports.items():  # the study fixture exported each into new-FMT/deeper/, which did not exist
        assert tree(out.parent.parent) == ["deeper", f"deeper/best.{fmt}", f"deeper/best.{fmt}.md"]


# ------------------------------------------------------------------------- output paths, every format


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_same_path_rules_for_every_format(fmt, tmp_path):
    model = build_model("tiny-cnn")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    for out, fragment in ((tmp_path / "folder", "is a folder"), (tmp_path / "file" / "m", "which is a file")):
        with pytest.raises(UserError, match=fragment):
            export_model(model, out, fmt, INFO)
    with immutable(tmp_path / "locked"), pytest.raises(UserError, match="cannot be written"):
        export_model(model, tmp_path / "locked" / "new" / f"m.{fmt}", fmt, INFO)
    assert tree(tmp_path) == ["file", "folder", "locked"]
    result = export_model(model, tmp_path / "a" / "b" / f"m.{fmt}", fmt, INFO)
    assert result.path.is_file() and result.card.is_file() and open_export(result.path).format == fmt


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_a_full_disk_leaves_the_old_export_whole(fmt, tmp_path):
    """Writing fails part way (a 256 KiB file system): the previous file and card stay as they were, no temporary files."""
    with tiny_filesystem(tmp_path / "small") as small:
        old = export_model(build_model("tiny-cnn"), small / f"m.{fmt}", fmt, INFO)  # tiny-cnn fits
        before = (old.path.read_bytes(), old.card.read_bytes())
        with pytest.raises(UserError, match="No space left on device") as caught:
            export_model(build_model("simple-cnn"), small / f"m.{fmt}", fmt, INFO)  # 93k parameters do not
        assert "\n" not in str(caught.value)
        assert (old.path.read_bytes(), old.card.read_bytes()) == before and tree(small) == [f"m.{fmt}", f"m.{fmt}.md"]


# ---------------------------------------------------------------------------------- format versions


def newer_format(fmt: str, source: Path, target: Path) -> Path:
    """``source`` as written by a future mnist-hpo 9.9.0 (format 99), each format edited its own way."""
    if fmt == "pt":
        payload = torch.load(source, weights_only=True)
        torch.save({**payload, "format_version": 99, "versions": {**payload["versions"], "mnist_hpo": "9.9.0"}}, target)
        return target
    future = {"format_version": "99", "versions": json.dumps({"mnist_hpo": "9.9.0"})}
    if fmt == "safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        with safe_open(source, "pt") as f:
            header = f.metadata()
        save_file(load_file(source), target, metadata={**header, **future})
    elif fmt == "onnx":
        import onnx

        model = onnx.load(source)
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **future})
        onnx.save(model, target)
    else:
        with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
            for item in src.infolist():
                data = src.read(item)
                if item.filename.endswith("extra/mnist_hpo.json"):
                    data = json.dumps({**json.loads(data), **future}).encode()
                dst.writestr(item, data)
    return target


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_newer_format_names_both_versions_and_the_fix(study, fmt, tmp_path):
    path = newer_format(fmt, study.exports[fmt], tmp_path / f"future.{fmt}")
    with pytest.raises(CheckpointError) as caught:
        open_export(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for fragment in (
        "model format 99, written by mnist-hpo 9.9.0",
        "this mnist-hpo 0.1.0 reads formats 1-2",
        "pip install 'mnist-hpo>=9.9.0'",
    ):
        assert fragment in message


def test_predict_refuses_a_newer_checkpoint_from_the_cli(study, real_images, tmp_path):
    from test_export_files import write_kaggle_csv

    newer_format("pt", study.exports["pt"], tmp_path / "future.pt")
    write_kaggle_csv(tmp_path / "test.csv", real_images[:5])
    error_line(
        cli(tmp_path, "predict", "--checkpoint", "future.pt", "--kaggle-csv", "test.csv", "--out", "sub.csv"),
        "future.pt is model format 99, written by mnist-hpo 9.9.0",
        "pip install",
    )
    assert tree(tmp_path) == ["future.pt", "test.csv"]


def test_a_format_1_checkpoint_still_loads(study, real_images, tmp_path):
    """Checkpoints of earlier releases (format 1, no network_input) are migrated on load and predict the same."""
    payload = torch.load(study.exports["pt"], weights_only=True)
    old = {k: v for k, v in payload.items() if k != "network_input"} | {"format_version": 1}
    torch.save(old, tmp_path / "old.pt")
    assert read_checkpoint(tmp_path / "old.pt")["network_input"] == payload["network_input"]
    assert torch.equal(predict_pixels(tmp_path / "old.pt", real_images)[0], predict_pixels(study.exports["pt"], real_images)[0])


# ------------------------------------------------------------------------------ the command layer


def test_a_trial_that_did_not_complete(study, tmp_path):
    import optuna

    broken = copy_study(study, tmp_path / "copy")
    loaded = optuna.load_study(study_name=STUDY, storage=broken.url)
    failed = loaded.ask()
    loaded.tell(failed, state=optuna.trial.TrialState.FAIL)
    error_line(
        cli(tmp_path, "export", *broken.args(), "--trial", str(failed.number), "--format", "onnx", "--out", "out/x.onnx"),
        f"trial {failed.number} of 'mnist-smoke' did not complete",
        "completed trials: 0, 1",
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_missing_or_corrupt_model_artifact(study, damage, tmp_path):
    broken = copy_study(study, tmp_path / "copy")
    for artifact in broken.artifacts.iterdir():
        if damage == "missing":
            artifact.unlink()
        else:
            artifact.write_bytes(b"PK\x03\x04 not a checkpoint any more")
    expected = "is missing from the artifact store" if damage == "missing" else "cannot be read safely"
    error_line(cli(tmp_path, "export", *broken.args(), "--format", "pt2", "--out", "out/x.pt2"), expected)
    assert not (tmp_path / "out").exists()


def test_the_ensemble_command_exports_every_format(study, tmp_path):
    done = cli(tmp_path, "ensemble", *study.args(), "--top-k", "2", "--format", "onnx", "--out", "ensemble.onnx", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert open_export(tmp_path / "ensemble.onnx").format == "onnx"
