"""The Bento: the service, its code and one model from the MLflow registry, built offline.

``bentoml build -f serving/bentofile.yaml`` alone needs the model already in
the BentoML store and, with locked packages, an index to resolve them
against. :func:`build_bento` imports the wanted registry version first
(``champion`` or a number; :func:`serving.model_store.import_champion`) and
pins the Bento to exactly that model, and the bentofile sets
``lock_packages: false``: the image installs the bentofile's bounded ranges
when ``bentoml containerize`` builds it, so the build reaches nothing but
MLflow.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import yaml

from core import model_registry
from core.workspace import REPO_ROOT, Workspace
from serving.model_store import ModelUnavailable, import_champion, mlflow_reachable

BENTOFILE = REPO_ROOT / "serving" / "bentofile.yaml"


@dataclass(frozen=True)
class BuiltBento:
    """What :func:`build_bento` made."""

    tag: str
    model: str
    model_version: str
    path: Path


def build_bento(
    workspace: Workspace,
    model: str = model_registry.CHAMPION,
    version: str | None = None,
    bentofile: Path = BENTOFILE,
) -> BuiltBento:
    """Import registry version ``model`` (alias or number) and build the Bento around it.

    Raises:
        serving.model_store.ModelUnavailable: no MLflow store to read (say, no
            ``MLFLOW_TRACKING_URI`` on a fresh CI runner), no such version, or
            it does not load.
    """
    reachable, why = mlflow_reachable(workspace)
    if not reachable:
        raise ModelUnavailable(f"{why}; set MLFLOW_TRACKING_URI to the tracking server")
    model_tag = import_champion(workspace, model)
    config: dict[str, Any] = yaml.safe_load(bentofile.read_text())
    config["models"] = [model_tag]  # this model, not whatever the store holds as latest
    with tempfile.TemporaryDirectory(prefix="feedrank-bentofile-") as folder:
        pinned = Path(folder) / "bentofile.yaml"
        pinned.write_text(yaml.safe_dump(config, sort_keys=False))
        bento = bentoml.bentos.build_bentofile(
            str(pinned), version=version, build_ctx=str(REPO_ROOT)
        )
    version_label = bentoml.models.get(model_tag).info.labels["mlflow_version"]
    return BuiltBento(str(bento.tag), model_tag, version_label, Path(bento.path))
