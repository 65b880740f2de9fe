"""``.pt``: mnist-hpo's self-describing checkpoint (``torch.load(weights_only=True)`` reads it)."""

from __future__ import annotations

from torch import nn

from mnist_hpo.checkpoints import checkpoint_bytes
from mnist_hpo.exports.info import ExportInfo


def to_bytes(network: nn.Module, info: ExportInfo, props: dict[str, str]) -> bytes:
    """The checkpoint the search stores, plus where the model came from and the export's description."""
    metrics = {"val_accuracy": info.val_accuracy}
    if info.test_accuracy is not None:
        metrics["test_accuracy"] = info.test_accuracy
    extra = {
        "study": info.study,
        "trial": info.trials[0] if len(info.trials) == 1 else None,
        "trials": list(info.trials),
        "params": info.params,
        "train_config": info.train_config,
        "data": info.data,
        "split_sizes": dict(info.split_sizes),
        "input": props["input"],
    }
    return checkpoint_bytes(network, info.model_spec, metrics, extra)
