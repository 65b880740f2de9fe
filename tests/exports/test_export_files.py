"""What is in each export file, and `predict` reading every format by its content alone."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
from export_helpers import FORMATS, cli

from mnist_hpo.checkpoints import CheckpointError
from mnist_hpo.data import DeviceLoader, Split
from mnist_hpo.errors import UserError
from mnist_hpo.exports import open_export, sniff
from mnist_hpo.exports.program import network_input
from mnist_hpo.inference import predict_pixels

#: Each export under a name that claims another format: predict must look at the bytes.
WRONG_NAMES = {"pt": "model.onnx", "safetensors": "model.pt2", "onnx": "model.pt", "pt2": "model.safetensors"}


def write_kaggle_csv(path, images: np.ndarray):
    header = ",".join(f"pixel{i}" for i in range(784))
    np.savetxt(path, images.reshape(len(images), -1), fmt="%d", delimiter=",", header=header, comments="")
    return path


def test_safetensors_header_holds_spec_preprocessing_and_metrics(study, best_trial, real_images, tmp_path):
    from safetensors import safe_open

    with safe_open(study.exports["safetensors"], "pt") as f:
        header = f.metadata()
    assert json.loads(header["model_spec"])["name"] == "family"
    assert json.loads(header["network_input"])["network_input"].startswith("float32 N×1×28×28 = pixels / 127.5 - 1")
    assert float(header["val_accuracy"]) == best_trial.values[0] and 0 < float(header["test_accuracy"]) <= 1
    assert header["study"] == "mnist-smoke" and header["trial"] == str(best_trial.number)
    alone = tmp_path / "alone" / "weights.bin"  # no card, no sidecar, no telling extension
    alone.parent.mkdir()
    shutil.copy(study.exports["safetensors"], alone)
    assert torch.equal(predict_pixels(alone, real_images)[0], predict_pixels(study.exports["pt"], real_images)[0])


def test_pt_export_is_a_weights_only_checkpoint(study, best_trial):
    payload = torch.load(study.exports["pt"], weights_only=True)
    assert payload["format_version"] == 2 and payload["metrics"]["val_accuracy"] == best_trial.values[0]
    assert payload["trial"] == best_trial.number and payload["params"] == best_trial.params


def test_predict_chooses_the_format_by_content(study, real_images, tmp_path):
    """Every export renamed to another format's extension gives the .pt's labels; two of them through `mnist-hpo predict`."""
    csv_path = write_kaggle_csv(tmp_path / "test.csv", real_images[:300])
    expected = predict_pixels(study.exports["pt"], real_images[:300])[0].tolist()
    for fmt, wrong_name in WRONG_NAMES.items():
        renamed = tmp_path / wrong_name
        shutil.copy(study.exports[fmt], renamed)
        assert sniff(renamed.read_bytes()) == fmt
        assert predict_pixels(renamed, real_images[:300])[0].tolist() == expected, fmt
    for fmt in ("onnx", "pt2"):  # the command reads the same way
        done = cli(tmp_path, "predict", "--checkpoint", WRONG_NAMES[fmt], "--kaggle-csv", csv_path.name, "--out", f"{fmt}.csv")
        assert done.returncode == 0, done.stderr[-2000:]
        rows = (tmp_path / f"{fmt}.csv").read_text().splitlines()
        assert rows[0] == "ImageId,Label" and [int(r.split(",")[1]) for r in rows[1:]] == expected, fmt


def test_predict_pixels_wants_uint8_images(study, real_images):
    with pytest.raises(UserError, match="images must be uint8 N×28×28 pixels"):
        predict_pixels(study.exports["onnx"], real_images[:4].astype(np.float32) / 255)
    labels, probabilities = predict_pixels(study.exports["onnx"], real_images[:4])
    pt_labels, pt_probabilities = predict_pixels(study.exports["pt"], real_images[:4])
    assert labels.dtype == torch.int64 and torch.equal(labels, pt_labels)
    assert torch.allclose(probabilities, pt_probabilities, atol=1e-5)  # the same softmax, from onnxruntime and from torch


def test_unknown_content_is_refused_in_one_line(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="none of the formats mnist-hpo writes") as caught:
        open_export(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_model_card_beside_every_export(study, best_trial, fmt):
    card = study.exports[fmt].with_name(f"best.{fmt}.md").read_text()
    assert f"trial {best_trial.number} of study `mnist-smoke`" in card
    assert f"| validation (1,000 images) | {100 * best_trial.values[0]:.2f} % |" in card
    assert "| test (1,000 images) |" in card and "(reported only, never used to choose)" in card
    assert "2,000 train / 1,000 validation / 1,000 test images" in card
    assert (
        f"Parameters: {best_trial.user_attrs['parameters']:,}" in card
        and f"Mult-adds per image: {best_trial.user_attrs['mult_adds']:,}" in card
    )
    assert '"epochs": 1' in card and '"lr":' in card  # training configuration and search parameters
    assert {"onnx": "ort.InferenceSession", "pt2": "torch.export.load", "pt": "predict_pixels", "safetensors": "predict_pixels"}[
        fmt
    ] in card


@pytest.mark.parametrize("fmt", FORMATS)
def test_ensemble_card_names_its_members(ensembles, best_trial, fmt):
    card = ensembles[fmt].with_name(f"ensemble.{fmt}.md").read_text()
    ranked = f"trials {best_trial.number}, {1 - best_trial.number}"  # the two trials, best by validation first
    assert f"An ensemble of 2 networks that averages their softmax probabilities: {ranked} of study `mnist-smoke`" in card
    assert "members were chosen on the validation split" in card


def test_program_preprocessing_is_the_trainers_scaling(real_images):
    """The scaling inside ONNX and pt2 is exactly what DeviceLoader feeds the networks in training."""
    images = torch.from_numpy(real_images[:256])
    [(trained_on, _)] = list(DeviceLoader(Split(images, torch.zeros(len(images), dtype=torch.long)), 256))
    pixels = images.unsqueeze(1)
    assert torch.equal(network_input(pixels), trained_on)
    assert torch.equal(network_input(pixels.float()), trained_on)
    assert torch.allclose(network_input(pixels.float() / 255), trained_on, atol=1e-5)  # 0-1 floats are recognised
    out_of_range = network_input(torch.stack([pixels[0].float() - 1, pixels[1].float() * 2, pixels[2].float()]))
    assert out_of_range[:2].isnan().all() and not out_of_range[2].isnan().any()


def test_pt2_with_pickled_members_is_refused_before_loading(study, tmp_path):
    """torch.export.load unpickles some members; predict refuses such an archive and nothing runs."""
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    original = zipfile.ZipFile(study.exports["pt2"])
    crafted = tmp_path / "crafted.pt2"
    with zipfile.ZipFile(crafted, "w") as out:
        for item in original.infolist():
            data = original.read(item)
            if item.filename.endswith("data/sample_inputs/model.pt"):
                buffer = io.BytesIO()
                torch.save(Payload(), buffer)
                data = buffer.getvalue()
            out.writestr(item, data)
    with pytest.raises(CheckpointError, match="would unpickle") as caught:
        open_export(crafted)
    assert "\n" not in str(caught.value) and not marker.exists()
