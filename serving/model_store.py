"""The served model: the MLflow champion, copied into the BentoML model store.

MLflow is the registry of record (the ``champion`` alias moves on
promotion); BentoML's store is what a Bento carries into its image, so a
container starts without reaching MLflow. At deployment the champion is
imported once (a no-op when that version is already there), then every
worker loads it from the BentoML store. The copy is the same JSON + weights
that :meth:`core.model.Ranker.save` writes: nothing is pickled.

When MLflow is unreachable the newest copy in the BentoML store is served,
and the service says so in its log; when MLflow answers but has no champion,
or the artifact does not load, startup fails with a message naming the cause.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import bentoml
from bentoml.exceptions import NotFound
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from core import model_registry
from core.model import Ranker
from core.workspace import Workspace

BENTO_MODEL = "feed-ranker"
RANKER_FOLDER = "ranker"
ModelSource = Literal["mlflow", "bentoml"]

log = logging.getLogger("feedrank.serving")


class ModelUnavailable(RuntimeError):
    """No model can be served (no champion, unreadable artifact, empty store)."""


@dataclass(frozen=True)
class ServedModel:
    """A loaded ranker and where it came from."""

    ranker: Ranker
    tag: str
    """BentoML tag, e.g. ``feed-ranker:v3-1a2b3c4d5e6f`` (MLflow version 3, run 1a2b...)."""
    mlflow_version: str


def bento_version(mlflow_version: str, run_id: str) -> str:
    """A BentoML version naming the MLflow version and run (unique across workspaces)."""
    return re.sub(r"[^a-z0-9]", "", f"v{mlflow_version}-{run_id[:12]}".lower()) or "v0"


def mlflow_reachable(workspace: Workspace) -> tuple[bool, str]:
    """Whether the tracking store answers; a local store that was never created does not."""
    uri = model_registry.tracking_uri(workspace)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return False, f"no MLflow store at {uri}"
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    try:
        MlflowClient(uri, uri).search_registered_models(max_results=1)
    except Exception as exc:  # pylint: disable=broad-exception-caught  # any failure: unreachable
        return False, f"MLflow at {uri} unreachable: {str(exc).splitlines()[0][:200]}"
    return True, ""


def import_champion(workspace: Workspace, alias: str = model_registry.CHAMPION) -> str:
    """Copy the MLflow model behind ``alias`` into the BentoML store; return its tag.

    Raises:
        ModelUnavailable: no such alias, or its artifact cannot be loaded.
    """
    try:
        client = model_registry.connect(workspace)
        found = model_registry.model_version(client, alias)
    except (model_registry.ModelNotFound, MlflowException) as exc:
        raise ModelUnavailable(
            f"no {alias!r} model in MLflow ({model_registry.tracking_uri(workspace)}): {exc}. "
            "Train and promote one: feedrank train --promote"
        ) from exc
    tag = f"{BENTO_MODEL}:{bento_version(str(found.version), str(found.run_id))}"
    try:
        bentoml.models.get(tag)
        return tag
    except NotFound:
        pass
    try:
        ranker = model_registry.load_ranker(workspace, str(found.version))
    except Exception as exc:  # a broken artifact fails in many ways; all mean "cannot serve"
        raise ModelUnavailable(
            f"{model_registry.MODEL_NAME} version {found.version} cannot be loaded: {exc}"
        ) from exc
    with bentoml.models.create(
        tag,
        labels={"mlflow_version": str(found.version), "alias": alias},
        metadata={
            "mlflow_run_id": str(found.run_id),
            "feature_service": ranker.feature_service,
            "actions": list(ranker.actions),
        },
    ) as model:
        ranker.save(Path(model.path) / RANKER_FOLDER)
    log.info("imported %s version %s as %s", model_registry.MODEL_NAME, found.version, tag)
    return tag


def resolve(workspace: Workspace, source: ModelSource = "mlflow", tag: str | None = None) -> str:
    """The BentoML tag to serve.

    Args:
        workspace: where the MLflow store is (``MLFLOW_TRACKING_URI`` overrides).
        source: ``mlflow`` imports the champion (the BentoML store's newest copy
            if MLflow is unreachable); ``bentoml`` uses the store only (a Bento image).
        tag: with ``bentoml``, the tag to serve (default: the newest).

    Raises:
        ModelUnavailable: nothing servable.
    """
    if source == "mlflow":
        reachable, why = mlflow_reachable(workspace)
        if reachable:
            return import_champion(workspace)
        log.warning("%s; serving the newest model in the BentoML store", why)
    wanted = tag or f"{BENTO_MODEL}:latest"
    try:
        return str(bentoml.models.get(wanted).tag)
    except NotFound as exc:
        raise ModelUnavailable(
            f"no model {wanted} in the BentoML store (BENTOML_HOME: "
            f"{os.environ.get('BENTOML_HOME', '~/bentoml')})"
        ) from exc


def load(tag: str) -> ServedModel:
    """Load a tag from the BentoML store.

    Raises:
        ModelUnavailable: the tag is missing or its files do not load.
    """
    try:
        model = bentoml.models.get(tag)
        ranker = Ranker.load(Path(model.path) / RANKER_FOLDER)
    except Exception as exc:  # missing files, bad JSON, mismatched weights: cannot serve
        raise ModelUnavailable(f"model {tag} in the BentoML store cannot be loaded: {exc}") from exc
    return ServedModel(ranker, str(model.tag), str(model.info.labels.get("mlflow_version", "")))
