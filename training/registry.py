"""MLflow tracking and the model registry: log a run, register, load, promote.

By default a workspace keeps its own MLflow store: a SQLite backend at
``data/mlflow/mlflow.db`` and artifacts under ``data/mlflow/artifacts``.
``MLFLOW_TRACKING_URI`` points the same code at a tracking server (production:
an MLflow server on PostgreSQL with an object store).

The model is an ``mlflow.pyfunc`` "model from code": the logged artifacts are
JSON (preprocessing, shape, actions) and a weights-only state dict, and the
Python class comes from this package, so loading never unpickles an object.
Serving skips pyfunc and calls :func:`load_ranker` for the bare
:class:`core.model.Ranker` (no pandas round trip on the hot path).

Promotion is a gate, recorded on the model version as tags: the challenger
gets the ``champion`` alias only if it captures a larger share of the
oracle's lift than the champion on the same test days and no head's AUC is
worse by more than a tolerance (or there is no champion yet).
"""

from __future__ import annotations

import json
import os
import subprocess  # nosec B404  # fixed git command, no shell
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel, PythonModelContext

from core.actions import ActionSet, load_actions
from core.feast_store import training_set_path
from core.model import Ranker
from core.workspace import Workspace
from training.evaluate import Evaluation, evaluate
from training.train import Split, TrainConfig, TrainResult, load_splits

MODEL_NAME = "feed-ranker"
EXPERIMENT = "feed-ranker"
CHALLENGER = "challenger"
CHAMPION = "champion"
RANKER_ARTIFACT = "ranker"
GATE_METRIC = "oracle_lift_share_at_50"
_MODEL_PACKAGES = ("mlflow", "torch", "numpy", "pandas", "pydantic", "scikit-learn")

_MODEL_CODE = """\
from mlflow.models import set_model

from training.registry import FeedRankerPyfunc

set_model(FeedRankerPyfunc())
"""


class PromotionError(ValueError):
    """A promotion request that cannot proceed (no challenger, nothing pending, expired)."""


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


def experiment_id(client: MlflowClient, workspace: Workspace) -> str:
    """The experiment's id; created with the workspace artifact folder for a local store."""
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if tracking_uri(workspace).startswith("sqlite:///"):
        location = (workspace.data / "mlflow" / "artifacts").resolve().as_uri()
    return str(client.create_experiment(EXPERIMENT, artifact_location=location))


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


def git_commit(repo: Path) -> str | None:
    """The checked-out commit of ``repo``, or None outside a git checkout."""
    try:
        out = subprocess.run(  # nosec B603 B607  # fixed argv, no shell
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _requirements() -> list[str]:
    """Pinned runtime requirements of the model (inferring them would load it in a subprocess).

    The model class itself comes from the ``feedrank`` package, which the
    serving image installs.
    """
    return [f"{name}=={metadata.version(name)}" for name in _MODEL_PACKAGES]


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flat(f"{prefix}.{key}" if prefix else str(key), inner))
        return out
    return {prefix: value}


def _clean(metrics: Mapping[str, float]) -> dict[str, float]:
    """MLflow rejects NaN in some backends; drop undefined metrics instead."""
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


@dataclass(frozen=True)
class LoggedModel:
    """Where a training run went."""

    run_id: str
    version: str


def log_training(
    workspace: Workspace,
    config: TrainConfig,
    result: TrainResult,
    evaluation: Evaluation,
    repo: Path | None = None,
) -> LoggedModel:
    """Log params, metrics, plots and the model; register it with alias ``challenger``."""
    client = connect(workspace)
    exp = experiment_id(client, workspace)
    ranker = result.ranker
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_params(_flat("", config.model_dump(mode="json")))
        mlflow.log_param("resolved_precision", result.precision)
        for row in result.history:
            step = int(row["epoch"])
            mlflow.log_metrics(_clean({k: v for k, v in row.items() if k != "epoch"}), step=step)
        mlflow.log_metrics(_clean(evaluation.metrics))
        mlflow.log_metrics({"best_epoch": result.best_epoch, "train_seconds": result.seconds})
        for plot in evaluation.plots:
            mlflow.log_artifact(str(plot), artifact_path="plots")
        mlflow.log_dict(
            {
                "feature_service": ranker.feature_service,
                "features": list(ranker.preprocessor.feature_names),
                "actions": list(ranker.actions),
                "days": result.splits.days,
            },
            "features.json",
        )
        tags = {
            "feature_service": ranker.feature_service,
            "data_sha256": result.data_sha256,
            "weights_sha256": result.weights_sha256[0],
        }
        commit = git_commit(repo) if repo else None
        if commit:
            tags["git_commit"] = commit
        mlflow.set_tags(tags)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / RANKER_ARTIFACT
            ranker.save(folder)
            code = Path(tmp) / "feed_ranker_model.py"
            code.write_text(_MODEL_CODE, encoding="utf-8")
            example = pd.DataFrame(
                {n: result.splits.test.columns[n][:5] for n in ranker.preprocessor.feature_names}
            )
            output = pd.DataFrame(
                ranker.predict_proba(example.to_dict("series")),
                columns=[f"p_{a}" for a in ranker.actions],
            )
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                artifacts={RANKER_ARTIFACT: str(folder)},
                signature=infer_signature(example, output),
                input_example=example,
                registered_model_name=MODEL_NAME,
                pip_requirements=_requirements(),
            )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, version)
    client.set_model_version_tag(MODEL_NAME, version, "feature_service", ranker.feature_service)
    return LoggedModel(run.info.run_id, version)


def model_version(client: MlflowClient, ref: str) -> ModelVersion:
    """A version of ``feed-ranker`` by number or alias.

    Raises:
        PromotionError: no such version or alias.
    """
    ref = str(ref)
    try:
        if ref.isdigit():
            return client.get_model_version(MODEL_NAME, ref)
        return client.get_model_version_by_alias(MODEL_NAME, ref)
    except MlflowException as exc:
        raise PromotionError(f"model {MODEL_NAME!r} has no version or alias {ref!r}") from exc


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


def evaluate_version(
    workspace: Workspace,
    ref: str,
    test: Split | None = None,
    plots_dir: Path | None = None,
    actions: ActionSet | None = None,
) -> Evaluation:
    """Evaluate a registered version on the workspace's test days."""
    if test is None:
        test = load_splits(training_set_path(workspace), TrainConfig()).test
    return evaluate(load_ranker(workspace, ref), test, workspace, actions, plots_dir)


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the promotion gate."""

    passed: bool
    reason: str


def gate(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    actions: ActionSet,
    auc_tolerance: float = 0.005,
    min_gain: float = 0.0,
) -> GateDecision:
    """Whether a challenger beats the champion on the same test days.

    Passes when there is no champion, or when the challenger's share of the
    oracle lift at 50 exceeds the champion's by more than ``min_gain`` and no
    head's AUC is lower by more than ``auc_tolerance``.
    """
    if champion is None:
        return GateDecision(True, "no champion yet")
    share_c, share_p = challenger[GATE_METRIC], champion[GATE_METRIC]
    worse = [
        f"{a} {challenger[f'auc_{a}']:.4f} < {champion[f'auc_{a}']:.4f}"
        for a in actions.names
        if challenger[f"auc_{a}"] < champion[f"auc_{a}"] - auc_tolerance
    ]
    if worse:
        return GateDecision(False, f"AUC worse by more than {auc_tolerance}: {'; '.join(worse)}")
    if not share_c > share_p + min_gain:
        return GateDecision(
            False, f"{GATE_METRIC} {share_c:.4f} does not beat champion's {share_p:.4f}"
        )
    return GateDecision(True, f"{GATE_METRIC} {share_c:.4f} > champion's {share_p:.4f}")


def _tag(client: MlflowClient, version: str, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(MODEL_NAME, str(version), key, value)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def promote(
    workspace: Workspace,
    require_approval: bool = False,
    auc_tolerance: float = 0.005,
    min_gain: float = 0.0,
) -> dict[str, Any]:
    """Run the gate on the challenger and move ``champion`` (or leave it pending).

    Both models are re-evaluated on the workspace's current test days, so a
    champion trained on older data is judged on the same rows.

    Returns:
        version, decision (promoted / refused / pending), reason, and both gate metrics.
    """
    actions = load_actions()
    client = connect(workspace)
    challenger = model_version(client, CHALLENGER)
    test = load_splits(training_set_path(workspace), TrainConfig()).test
    try:
        champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except MlflowException:
        champion = None
    if champion is not None and champion.version == challenger.version:
        return {
            "version": str(challenger.version),
            "decision": "unchanged",
            "reason": "challenger is already champion",
        }
    new = evaluate_version(workspace, challenger.version, test, actions=actions).metrics
    old = (
        evaluate_version(workspace, champion.version, test, actions=actions).metrics
        if champion is not None
        else None
    )
    decision = gate(new, old, actions, auc_tolerance, min_gain)
    status = "refused"
    if decision.passed:
        status = "pending" if require_approval else "promoted"
    tags = {
        "promotion.decision": status,
        "promotion.reason": decision.reason,
        "promotion.decided_at": _now(),
        f"promotion.{GATE_METRIC}": f"{new[GATE_METRIC]:.5f}",
        "promotion.champion_version": str(champion.version) if champion is not None else "",
    }
    if status == "pending":
        tags["promotion.requested_at"] = str(int(time.time()))
    _tag(client, challenger.version, tags)
    if status == "promoted":
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, challenger.version)
    return {
        "version": str(challenger.version),
        "decision": status,
        "reason": decision.reason,
        "challenger_" + GATE_METRIC: new[GATE_METRIC],
        "champion_" + GATE_METRIC: old[GATE_METRIC] if old else None,
    }


def approve(workspace: Workspace, version: str, ttl_hours: float = 72.0) -> dict[str, Any]:
    """Grant a pending promotion: ``version`` becomes champion if its request has not expired.

    Raises:
        PromotionError: the version is not pending, or the request expired (tagged ``expired``).
    """
    client = connect(workspace)
    found = model_version(client, version)
    tags = found.tags or {}
    if tags.get("promotion.decision") != "pending":
        raise PromotionError(
            f"version {version} has no pending promotion "
            f"(decision: {tags.get('promotion.decision', 'none')})"
        )
    age_hours = (time.time() - float(tags.get("promotion.requested_at", "0"))) / 3600.0
    if age_hours > ttl_hours:
        _tag(
            client,
            found.version,
            {
                "promotion.decision": "expired",
                "promotion.reason": f"approval came {age_hours:.1f} h after the request "
                f"(limit {ttl_hours} h)",
                "promotion.decided_at": _now(),
            },
        )
        raise PromotionError(f"the promotion request of version {version} expired")
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, found.version)
    _tag(
        client,
        found.version,
        {
            "promotion.decision": "promoted",
            "promotion.reason": tags.get("promotion.reason", "") + " (approved)",
            "promotion.decided_at": _now(),
        },
    )
    return {"version": str(found.version), "decision": "promoted", "reason": "approved"}


def log_replay(
    workspace: Workspace, ref: str, metrics: Mapping[str, float], files: list[Path]
) -> None:
    """Attach a replay's figures and files to the MLflow run that produced model ``ref``."""
    client = connect(workspace)
    run_id = model_version(client, ref).run_id
    for name, value in _clean(metrics).items():
        client.log_metric(run_id, f"replay_{name}", value)
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path="replay")


def result_line(values: Mapping[str, Any]) -> str:
    """The ``RESULT {json}`` line the commands end with."""
    return "RESULT " + json.dumps(dict(values), sort_keys=False)
