"""MLflow tracking (`--mlflow URI`): every trial this process's workers finish becomes an MLflow run.

optuna-integration's ``MLflowCallback`` logs each one, called by the engine as its "trial finished"
hook exactly as ``study.optimize(callbacks=[...])`` would call it: the experiment is named after the
study, the run after the trial number; the trial's parameters, its validation accuracy as the metric
``validation_accuracy`` (with two objectives also ``parameters``), and its number, state and user
attributes as tags. This module adds the network's parameter count as the metric ``parameters`` and
the learning curve as the metric histories ``epoch_validation_accuracy`` and ``epoch_train_loss``
(step = epoch).

mlflow is imported here only, and only when --mlflow is given; without the `mlflow` extra it is a
one-line error. A password in the URI is never shown, recorded or put on a command line: an http(s)
server gets it through MLflow's own $MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD (so
MLflow's requests and messages see the URI without it), and a worker process started with --workers
gets such a URI through $MNIST_HPO_MLFLOW, like the storage URL.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mnist_hpo.console import console
from mnist_hpo.errors import UserError
from mnist_hpo.redact import mask_url, redact
from mnist_hpo.tuning.attrs import LEARNING_CURVE_ATTR, PARAMETERS_ATTR

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

MLFLOW_ENV = "MNIST_HPO_MLFLOW"  # the tracking URI, for `search` and `worker` without --mlflow (keeps a password off `ps`)
INSTALL = "pip install -e '.[mlflow]'"
METRIC = "validation_accuracy"
#: MLflow's HTTP retries and timeout unless the user set its variables: its default retries a dead server for ~4
#: minutes. The up-front check fails within seconds; a trial that cannot be logged holds its worker up to ~2 minutes.
_CHECK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
_LOG = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
_BATCH = 1000  # MLflow's most metrics per log_batch call
_SOCKET_ERROR = re.compile(r"\[Errno -?\d+\] [^'\")]*")  # "[Errno 111] Connection refused" in urllib3's long message


def require_mlflow() -> None:
    """mlflow and optuna-integration import, or a one-line error naming the extra that installs them."""
    try:
        import mlflow  # noqa: F401
        from optuna_integration.mlflow import MLflowCallback  # noqa: F401
    except ImportError as exc:
        raise UserError(f"--mlflow needs MLflow and optuna-integration ({_first_line(exc)}); install them with {INSTALL}") from None


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """An http(s) URI without its user and password, and MLflow's environment variables that carry them instead."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.password is None:
        return uri, {}
    clean = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    user, password = urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password)
    return clean, {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


class MlflowTracker:
    """The engine's "trial finished" hook that logs each trial to an MLflow tracking server (or any MLflow tracking URI).

    ``check(experiment)`` reaches the server and makes the experiment before anything is stored; a
    trial that fails to log later is one line on the console, and the search goes on.
    """

    def __init__(self, uri: str) -> None:
        require_mlflow()
        self.shown = mask_url(uri)
        self.uri, credentials = split_credentials(uri)
        os.environ.update(credentials)  # MLflow's own basic-auth variables; worker processes inherit them
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a link per run would break the progress lines
        self._secret = uri if self.shown != uri else None
        self._callback: Any = None

    def check(self, experiment: str) -> str:
        """The id of the study's experiment, made if missing; a one-line error if the server cannot be used."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.uri)
        try:
            with _requests(_CHECK):
                found = client.get_experiment_by_name(experiment)
                if found is None:
                    try:
                        return client.create_experiment(experiment)
                    except MlflowException as exc:  # another worker made it meanwhile
                        found = client.get_experiment_by_name(experiment)
                        if found is None:
                            raise exc from None
        except Exception as exc:
            raise UserError(f"--mlflow {self.shown}: {self.reason(exc)}") from None
        if found.lifecycle_stage == "deleted":
            raise UserError(
                f"--mlflow {self.shown}: the experiment {experiment!r} is deleted there; restore it with "
                f"`mlflow experiments restore --experiment-id {found.experiment_id}`, or use another --study name"
            )
        return found.experiment_id

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Log one finished trial as an MLflow run."""
        try:
            with _requests(_LOG):
                self._log(study, trial)
        except Exception as exc:  # the study matters more than its mirror: say so and go on
            console.print(f"trial {trial.number}: not logged to MLflow at {self.shown}: {self.reason(exc)}")

    def _log(self, study: optuna.Study, trial: FrozenTrial) -> None:
        import mlflow

        multi = len(study.directions) > 1
        if self._callback is None:
            from optuna_integration.mlflow import MLflowCallback

            with warnings.catch_warnings():  # deprecated in optuna-integration 4.9 (moving to OptunaHub), removed in 6.0
                warnings.simplefilter("ignore", FutureWarning)
                self._callback = MLflowCallback(tracking_uri=self.uri, metric_name=[METRIC, "parameters"] if multi else METRIC)
        self._callback(study, trial)
        metrics = _extra_metrics(trial, multi)
        run = mlflow.last_active_run()  # the run the callback just logged and ended
        if metrics and run is not None:
            client = mlflow.MlflowClient(tracking_uri=self.uri)
            for start in range(0, len(metrics), _BATCH):
                client.log_batch(run.info.run_id, metrics=metrics[start : start + _BATCH])

    def reason(self, exc: BaseException) -> str:
        """One line of an MLflow error, with no secret in it."""
        refused = _SOCKET_ERROR.search(str(exc))
        text = f"cannot reach the tracking server ({refused.group(0)})" if refused else _first_line(exc)
        if self._secret:
            text = text.replace(self._secret, self.shown)
        return redact(text)


def _extra_metrics(trial: FrozenTrial, multi: bool) -> list:
    """The parameter count (one objective: two objectives log it as their second metric) and the learning curve."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = []
    parameters = trial.user_attrs.get(PARAMETERS_ATTR)
    if not multi and isinstance(parameters, (int, float)):
        metrics.append(Metric("parameters", float(parameters), now, 0))
    for point in trial.user_attrs.get(LEARNING_CURVE_ATTR) or []:
        for key, name in (("val_accuracy", "epoch_validation_accuracy"), ("train_loss", "epoch_train_loss")):
            if isinstance(point.get(key), (int, float)):
                metrics.append(Metric(name, float(point[key]), now, int(point.get("epoch", 0))))
    return metrics


@contextlib.contextmanager
def _requests(settings: dict[str, str]) -> Iterator[None]:
    """MLflow's HTTP client with these retries and timeout for a while, where the user set none."""
    added = {name: value for name, value in settings.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
