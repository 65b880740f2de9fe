"""Optuna hyperparameter search for the BatchNorm CNNs of An et al. 2020 on MNIST.

The Python API (``help(mnist_hpo.search)`` and the others; ``docs/python-api.md``)::

    import mnist_hpo
    result = mnist_hpo.search("mnist-smoke", profile="smoke", n_trials=4)
    model = result.best_model()                      # the best trial by validation, eval mode
    mnist_hpo.predict(model, ["digit.png"])          # files, PIL images, arrays, tensors
    result.export("best.onnx", "onnx")

Names load on first use, so ``import mnist_hpo`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_hpo._lazy import lazy_face
from mnist_hpo.versions import VERSION

if TYPE_CHECKING:
    from mnist_hpo.api import (
        Ensemble as Ensemble,
        ExportResult as ExportResult,
        Objective as Objective,
        Prediction as Prediction,
        SearchInterrupted as SearchInterrupted,
        StudyResult as StudyResult,
        Trained as Trained,
        UserError as UserError,
        load as load,
        predict as predict,
        search as search,
        train as train,
    )

__version__ = VERSION

__getattr__, __all__ = lazy_face(__name__, __file__)
