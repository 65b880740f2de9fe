"""The model card written beside every export (``OUT.md``): what a reader needs to trust and run it."""

from __future__ import annotations

import json
from pathlib import Path

from mnist_hpo.exports.info import ExportInfo, split_line

FORMAT_NAMES = {"pt": "mnist-hpo checkpoint (.pt)", "safetensors": "safetensors", "onnx": "ONNX", "pt2": "torch.export program (.pt2)"}


def card_path(out: Path) -> Path:
    return out.with_name(out.name + ".md")


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def _what(info: ExportInfo) -> str:
    origin = f"study `{info.study}`" if info.study else "no study"
    if info.is_ensemble:
        trials = ", ".join(str(t) for t in info.trials)
        return (
            f"An ensemble of {len(info.model_spec.get('members', []))} networks that averages their softmax "
            f"probabilities: trials {trials} of {origin}, the best by validation accuracy."
        )
    trial = f"trial {info.trials[0]} of {origin}" if info.trials else origin
    return f"A `{info.model_spec.get('name')}` network of mnist-hpo (the BatchNorm CNNs of An et al. 2020): {trial}, chosen on validation accuracy."


def _accuracy_rows(info: ExportInfo) -> list[str]:
    rows = ["| split | accuracy |", "| --- | ---: |", f"| {split_line(info, 'validation')} | {_percent(info.val_accuracy)} |"]
    if info.test_accuracy is None:
        rows.append("| test | not measured |")
    else:
        rows.append(f"| {split_line(info, 'test')} | {_percent(info.test_accuracy)} (reported only, never used to choose) |")
    return rows


def snippets(fmt: str, file_name: str, input_dtype: str) -> list[str]:
    """Code that runs this file: with its own runtime for ONNX and pt2, with mnist-hpo otherwise."""
    images = f"images.reshape(-1, 1, 28, 28).astype(np.{input_dtype})"
    lines = {
        "onnx": [
            "### onnxruntime",
            "```python",
            "import numpy as np, onnxruntime as ort  # images: N×28×28 pixels, 0-255",
            f'session = ort.InferenceSession("{file_name}")',
            f'logits, probabilities = session.run(None, {{"pixels": {images}}})',
            "```",
        ],
        "pt2": [
            "### torch (torch.export, without mnist-hpo)",
            "```python",
            "import torch  # images: N×28×28 pixels, 0-255",
            f'program = torch.export.load("{file_name}").module()',
            f"logits, probabilities = program(torch.as_tensor(images).to(torch.{input_dtype}).reshape(-1, 1, 28, 28))",
            "```",
        ],
    }
    if fmt in lines:
        return lines[fmt] + [
            "",
            "Labels: `probabilities.argmax(1)`; class i is digit i. torch.export.load runs code from the file (guards, shape expressions, unpickled members): load `.pt2` files this way only from sources you trust; `mnist-hpo predict` reads one as data."
            if fmt == "pt2"
            else "Labels: `probabilities.argmax(1)`; class i is digit i.",
        ]
    return [
        "### torch (with mnist-hpo)",
        "```python",
        "from mnist_hpo.inference import predict_pixels  # images: uint8 N×28×28, 0-255",
        f'labels, probabilities = predict_pixels("{file_name}", images)',
        "```",
        "",
        "To run it without mnist-hpo, export it with `--format onnx` (onnxruntime) or `--format pt2` (torch.export).",
    ]


def card_text(info: ExportInfo, fmt: str, out: Path, sha256: str, props: dict[str, str]) -> str:
    sizes = info.split_sizes
    splits = " / ".join(f"{sizes[s]:,} {s}" for s in ("train", "validation", "test") if s in sizes) or "not recorded"
    lines = [
        f"# {out.name}",
        "",
        _what(info),
        "",
        f"File: `{out.name}`, {FORMAT_NAMES[fmt]}, sha256 `{sha256}`.",
        "",
        "## Input and output",
        "",
        f"- Input{' `' + props['input_name'] + '`' if fmt in ('onnx', 'pt2') else ''}: {props['input']}.",
        f"- Outputs: {props['outputs']}.",
        "",
        "## Data and splits",
        "",
        f"- Data: {info.data or 'not recorded'}.",
        f"- Splits: {splits} images.",
        f"- The {'members were' if info.is_ensemble else 'trial was'} chosen on the validation split; the test split chose nothing.",
        "",
        "## Accuracy",
        "",
        *_accuracy_rows(info),
        "",
        "## Size",
        "",
        f"- Parameters: {int(props['parameters']):,}",
        f"- Mult-adds per image: {int(props['mult_adds']):,}",
        "",
        "## Training configuration",
        "",
        "```json",
        json.dumps(info.train_config, indent=2, sort_keys=True),
        "```",
        "",
        "## Search parameters",
        "",
        "```json",
        json.dumps(info.params, indent=2, sort_keys=True),
        "```",
        "",
        "## Run it",
        "",
        *snippets(fmt, out.name, props["input_dtype"]),
        "",
        "## Versions",
        "",
        f"Model format {props['format_version']}; " + ", ".join(f"{k} {v}" for k, v in json.loads(props["versions"]).items()) + ".",
        "",
    ]
    return "\n".join(lines)
