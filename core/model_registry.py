"""The MLflow model registry: the hand-off between training, serving and metrics.

Training registers ``feed-ranker`` versions and moves the ``challenger`` and
``champion`` aliases; serving, the metrics commands and the demo read a version
back by alias or number. Both sides meet here, not in each other's packages, so
the reading stages never import the training stage.

By default a workspace keeps its own MLflow store: a SQLite backend at
``data/mlflow/mlflow.db`` and artifacts under ``data/mlflow/artifacts``.
``MLFLOW_TRACKING_URI`` points the same code at a tracking server (production:
an MLflow server on PostgreSQL with an object store).

The model is an ``mlflow.pyfunc`` "model from code": the logged artifacts are
JSON (preprocessing, shape, actions) and a weights-only state dict, and the
Python class is :class:`FeedRankerPyfunc` of this module, named by its import
path in :data:`MODEL_CODE`, so loading never unpickles an object. Serving skips
pyfunc and calls :func:`load_ranker` for the bare :class:`core.model.Ranker`
(no pandas round trip on the hot path).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel, PythonModelContext

from core.errors import InputError
from core.model import Ranker
from core.workspace import Workspace

MODEL_NAME = "feed-ranker"
CHALLENGER = "challenger"
"""Alias of the newest registered version, waiting for the promotion gate."""
CHAMPION = "champion"
"""Alias of the version that serving loads."""
RANKER_ARTIFACT = "ranker"
"""The logged model's artifact folder holding :meth:`core.model.Ranker.save`'s files."""

MODEL_CODE = """\
from mlflow.models import set_model

from core.model_registry import FeedRankerPyfunc

set_model(FeedRankerPyfunc())
"""
"""The pyfunc's code file: every logged version imports the class from this path."""


class ModelNotFound(InputError):
    """The registry has no such version or alias: train one, or name one that exists."""


def tracking_uri(workspace: Workspace) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the workspace's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (
        f"sqlite:///{(workspace.data / 'mlflow' / 'mlflow.db').resolve()}"
    )


def connect(workspace: Workspace) -> MlflowClient:
    """Point MLflow at the workspace's store (creating its folder) and return a client."""
    uri = tracking_uri(workspace)
    # Model downloads are a few small files; a progress bar per load only clutters
    # CLI output and serving logs. setdefault: an explicit setting wins.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if uri.startswith("sqlite:///"):
        (workspace.data / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, uri)


class FeedRankerPyfunc(PythonModel):  # pylint: disable=abstract-method
    """pyfunc wrapper: a DataFrame of named features in, ``p_<action>`` columns out.

    ``predict_stream`` is left abstract: ranking is a batch call, never streamed.
    """

    def __init__(self) -> None:
        self.ranker: Ranker | None = None

    def load_context(self, context: PythonModelContext) -> None:
        """Load the JSON + weights artifacts logged with the model."""
        self.ranker = Ranker.load(Path(context.artifacts[RANKER_ARTIFACT]))

    def predict(
        self,
        context: PythonModelContext,  # pyfunc interface
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,  # pyfunc interface
    ) -> pd.DataFrame:
        """Calibrated probabilities per row (a missing feature value may be NaN)."""
        if self.ranker is None:
            raise RuntimeError("load_context was not called")
        columns = {name: model_input[name].to_numpy() for name in model_input.columns}
        probs = self.ranker.predict_proba(columns)
        return pd.DataFrame(probs, columns=[f"p_{a}" for a in self.ranker.actions])


def model_version(client: MlflowClient, ref: str) -> ModelVersion:
    """A version of ``feed-ranker`` by number or alias.

    Raises:
        ModelNotFound: no such version or alias.
    """
    ref = str(ref)
    try:
        if ref.isdigit():
            return client.get_model_version(MODEL_NAME, ref)
        return client.get_model_version_by_alias(MODEL_NAME, ref)
    except MlflowException as exc:
        raise ModelNotFound(f"model {MODEL_NAME!r} has no version or alias {ref!r}") from exc


def load_ranker(workspace: Workspace, ref: str = CHAMPION) -> Ranker:
    """The registered model ``ref`` (alias or version number) as a bare :class:`Ranker`.

    This is the serving entry point::

        ranker = load_ranker(Workspace(root), "champion")
        probs = ranker.predict_proba({"user_like_rate_7d": ..., ...})  # (n, n_actions)
        feature_service = ranker.feature_service  # what to ask Feast for
    """
    client = connect(workspace)
    version = model_version(client, ref)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{MODEL_NAME}/{version.version}", dst_path=tmp
        )
        return Ranker.load(Path(local) / "artifacts" / RANKER_ARTIFACT)
