"""Model files that run anywhere: pt, safetensors, ONNX and pt2 exports, each with a model card.

``export_model`` writes any network or ensemble in any format; ``open_export`` reads any of them
back, recognised by content. The ONNX and pt2 programs take raw pixels (0-255) and scale them
themselves, so they run in onnxruntime or torch without mnist-hpo.
"""

from mnist_hpo.exports.info import DEFAULT_INPUT_DTYPE, INPUT_DTYPES, ExportInfo, ExportResult
from mnist_hpo.exports.read import ExportedModel, open_export, sniff
from mnist_hpo.exports.write import EXPORT_FORMATS, check_target, export_model

__all__ = [
    "DEFAULT_INPUT_DTYPE",
    "EXPORT_FORMATS",
    "INPUT_DTYPES",
    "ExportInfo",
    "ExportResult",
    "ExportedModel",
    "check_target",
    "export_model",
    "open_export",
    "sniff",
]
