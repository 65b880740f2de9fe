"""The Python API: the same functions the command line calls, quiet unless asked, returning objects.

``search`` runs a study and returns it; ``load`` opens one; a ``StudyResult`` gives the best trials by
validation, their networks, exports, ensembles and the report; ``train`` trains one network;
``predict`` reads digits from files, images, arrays or tensors; ``Objective`` is the trial function
for any Optuna study, sampler and pruner.
"""

from mnist_hpo.api._objective import Objective
from mnist_hpo.api._predict import predict
from mnist_hpo.api._search import search
from mnist_hpo.api._study import StudyResult, load
from mnist_hpo.api._train import train
from mnist_hpo.commands.export import Ensemble
from mnist_hpo.commands.train import Trained
from mnist_hpo.errors import SearchInterrupted, UserError
from mnist_hpo.exports import ExportResult
from mnist_hpo.inference import Prediction

__all__ = [
    "Ensemble",
    "ExportResult",
    "Objective",
    "Prediction",
    "SearchInterrupted",
    "StudyResult",
    "Trained",
    "UserError",
    "load",
    "predict",
    "search",
    "train",
]
