"""Every self-contained export runs in its own runtime alone and labels real digits as mnist-hpo does.

The ONNX graph runs in onnxruntime and the .pt2 program in torch.export, each in a subprocess that
cannot import mnist_hpo; their labels are compared with `predict` on the trial's .pt checkpoint
(the network behind the trainer's own scaling) on 2,000 real MNIST digits, fed as users hold them:
float32 0-255, uint8, and the common mistake of 0-1 floats; mean/std-normalised input must give NaN.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from export_helpers import json_result, without_mnist_hpo

from mnist_hpo.checkpoints import load_checkpoint
from mnist_hpo.exports import ExportInfo, export_model
from mnist_hpo.inference import predict_pixels

AGREEMENT = 0.999

ONNXRUNTIME = """
import json, sys, numpy as np, onnxruntime as ort
images, results = np.load(sys.argv[1]), {}
for path in sys.argv[2:]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    dtype = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8}[graph_input.type]
    feeds = {"0-255": images.astype(dtype)}
    if dtype == np.float32:
        feeds["0-1"] = images.astype(np.float32) / 255
        feeds["normalised"] = (images[:16].astype(np.float32) / 255 - 0.1307) / 0.3081
    for convention, pixels in feeds.items():
        logits, probabilities = session.run(None, {"pixels": pixels.reshape(-1, 1, 28, 28)})
        results[f"{path}|{convention}"] = probabilities.argmax(1).tolist() if convention != "normalised" else bool(np.isnan(probabilities).all())
    one = session.run(["probabilities"], {"pixels": feeds["0-255"][:1].reshape(1, 1, 28, 28)})[0]
    results[f"{path}|one"] = int(one.argmax(1)[0])
    results[f"{path}|meta"] = dict(session.get_modelmeta().custom_metadata_map)
    results[f"{path}|input"] = [graph_input.name, graph_input.type, [str(d) for d in graph_input.shape]]
print(json.dumps(results))
"""

TORCH_EXPORT = """
import json, sys, numpy as np, torch
images, results = torch.from_numpy(np.load(sys.argv[1])), {}
for path in sys.argv[2:]:
    extra = {"mnist_hpo.json": ""}
    program = torch.export.load(path, extra_files=extra).module()
    meta = json.loads(extra["mnist_hpo.json"])
    dtype = getattr(torch, meta["input_dtype"])
    feeds = {"0-255": images.to(dtype)}
    if dtype == torch.float32:
        feeds["0-1"] = images.float() / 255
        feeds["normalised"] = (images[:16].float() / 255 - 0.1307) / 0.3081
    with torch.no_grad():
        for convention, pixels in feeds.items():
            logits, probabilities = program(pixels.reshape(-1, 1, 28, 28))
            results[f"{path}|{convention}"] = probabilities.argmax(1).tolist() if convention != "normalised" else bool(probabilities.isnan().all())
        results[f"{path}|one"] = int(program(feeds["0-255"][:1].reshape(1, 1, 28, 28))[1].argmax(1)[0])
    results[f"{path}|meta"] = meta
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def images_file(tmp_path_factory, real_images):
    path = tmp_path_factory.mktemp("images") / "images.npy"
    np.save(path, real_images)
    return path


@pytest.fixture(scope="module")
def uint8_programs(study, best_trial, tmp_path_factory):
    """The best trial as uint8-input ONNX and pt2 programs (export_model's input_dtype option)."""
    model, payload = load_checkpoint(study.exports["pt"])
    info = ExportInfo(
        payload["model_spec"],
        best_trial.values[0],
        payload["metrics"]["test_accuracy"],
        "mnist-smoke",
        (best_trial.number,),
        best_trial.params,
        split_sizes=payload["split_sizes"],
    )
    folder = tmp_path_factory.mktemp("uint8")
    return {fmt: export_model(model, folder / f"best-uint8.{fmt}", fmt, info, input_dtype="uint8").path for fmt in ("onnx", "pt2")}


def agreement(labels: list[int], reference: torch.Tensor) -> float:
    return float((torch.tensor(labels) == reference).double().mean())


def check_agreement(results: dict, path, reference: torch.Tensor, conventions: tuple[str, ...], runtime: str) -> None:
    for convention in conventions:
        share = agreement(results[f"{path}|{convention}"], reference)
        print(f"{runtime} {path.name} {convention}: {share:.4%} of {len(reference):,} real images agree with predict")
        assert share >= AGREEMENT, (path.name, convention, share)
    assert results[f"{path}|one"] == int(reference[0]), "a batch of one must work too (dynamic batch)"


def check_metadata(meta: dict, trial, dtype: str, test_accuracy_measured: bool = True) -> None:
    assert meta["format"] == "mnist-hpo-export" and meta["format_version"] == "2"
    assert f"N×1×28×28 {dtype}, values 0-255" in meta["input"] and "0-1" in meta["input"]
    assert meta["labels"] == "0,1,2,3,4,5,6,7,8,9"
    assert meta["study"] == "mnist-smoke" and meta["trial"] == str(trial.number)
    assert json.loads(meta["params"]) == trial.params
    assert float(meta["val_accuracy"]) == trial.values[0] and meta["validation_split"] == "validation (1,000 images)"
    if test_accuracy_measured:
        assert 0 < float(meta["test_accuracy"]) <= 1 and meta["test_split"] == "test (1,000 images)"
    versions = json.loads(meta["versions"])
    assert str(torch.__version__).startswith(versions["torch"]) and versions["mnist_hpo"]


@pytest.fixture(scope="module")
def reference(study, real_images) -> torch.Tensor:
    """What mnist-hpo's predict says on the trial's own checkpoint."""
    labels, _ = predict_pixels(study.exports["pt"], real_images)
    return labels


def test_onnx_runs_in_onnxruntime_alone(study, best_trial, uint8_programs, images_file, reference, tmp_path):
    float_graph, uint8_graph = study.exports["onnx"], uint8_programs["onnx"]
    results = json_result(without_mnist_hpo(ONNXRUNTIME, tmp_path, str(images_file), str(float_graph), str(uint8_graph)))
    check_agreement(results, float_graph, reference, ("0-255", "0-1"), "onnxruntime float32 graph")
    check_agreement(results, uint8_graph, reference, ("0-255",), "onnxruntime uint8 graph")
    assert results[f"{float_graph}|normalised"] is True, "mean/std-normalised input must give NaN, not digits"
    assert results[f"{float_graph}|input"] == ["pixels", "tensor(float)", ["batch", "1", "28", "28"]]
    assert results[f"{uint8_graph}|input"] == ["pixels", "tensor(uint8)", ["batch", "1", "28", "28"]]
    check_metadata(results[f"{float_graph}|meta"], best_trial, "float32")
    check_metadata(results[f"{uint8_graph}|meta"], best_trial, "uint8")


def test_pt2_runs_in_torch_export_alone(study, best_trial, uint8_programs, images_file, reference, tmp_path):
    float_program, uint8_program = study.exports["pt2"], uint8_programs["pt2"]
    results = json_result(without_mnist_hpo(TORCH_EXPORT, tmp_path, str(images_file), str(float_program), str(uint8_program)))
    check_agreement(results, float_program, reference, ("0-255", "0-1"), "torch.export float32 program")
    check_agreement(results, uint8_program, reference, ("0-255",), "torch.export uint8 program")
    assert results[f"{float_program}|normalised"] is True
    check_metadata(results[f"{float_program}|meta"], best_trial, "float32")
    check_metadata(results[f"{uint8_program}|meta"], best_trial, "uint8")


def test_ensemble_exports_run_alone_as_one_model(ensembles, real_images, images_file, tmp_path):
    reference, _ = predict_pixels(ensembles["pt"], real_images)
    onnx = json_result(without_mnist_hpo(ONNXRUNTIME, tmp_path, str(images_file), str(ensembles["onnx"])))
    check_agreement(onnx, ensembles["onnx"], reference, ("0-255", "0-1"), "onnxruntime ensemble")
    pt2 = json_result(without_mnist_hpo(TORCH_EXPORT, tmp_path, str(images_file), str(ensembles["pt2"])))
    check_agreement(pt2, ensembles["pt2"], reference, ("0-255", "0-1"), "torch.export ensemble")
    for meta in (onnx[f"{ensembles['onnx']}|meta"], pt2[f"{ensembles['pt2']}|meta"]):
        assert json.loads(meta["model_spec"])["name"] == "ensemble" and len(json.loads(meta["model_spec"])["members"]) == 2
        assert meta["trial"] == "0, 1" or meta["trial"] == "1, 0"
    members = [predict_pixels(p, real_images[:500])[0] for p in ensembles.values()]
    assert all(torch.equal(members[0], labels) for labels in members), "predict gives one answer for the ensemble in every format"
