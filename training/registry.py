"""The training stage's writes to MLflow: log and register a run, judge versions, promote.

Reading the registry (connection, aliases, loading a version) is the hand-off
that serving and metrics share, in :mod:`core.model_registry`; this module
holds what only training does: it logs a run with its lineage and registers
the model as ``challenger``, evaluates a registered version on the test days,
applies the promotion gate of :mod:`training.gate` (moving ``champion``, or
leaving the decision pending approval), grants or rejects a pending promotion
(recording who, when and why) and records every decision as tags on the model
version.
"""

from __future__ import annotations

import logging
import subprocess  # nosec B404  # fixed git command, no shell
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from core import model_registry
from core.actions import ActionSet, load_actions
from core.errors import InputError
from core.feast_store import FEATURE_SERVICE, training_set_path
from core.workspace import Workspace
from training.dataset import Split, load_splits
from training.evaluate import Evaluation, evaluate
from training.gate import GATE_METRIC, OffPolicyEvidence, gate
from training.train import TrainConfig, TrainResult

log = logging.getLogger("feedrank.training")

EXPERIMENT = "feed-ranker"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
"""MLflow 3's experiment kinds: this one opens the UI on the runs table."""
_MODEL_PACKAGES = ("mlflow", "torch", "numpy", "pandas", "pydantic", "scikit-learn")


class PromotionError(InputError):
    """A promotion request that cannot proceed (nothing pending, or the request expired)."""


def experiment_id(client: MlflowClient, workspace: Workspace) -> str:
    """The experiment's id; created with the workspace artifact folder for a local store.

    Tagged as MLflow 3's model-training kind, so the UI opens on its runs
    rather than on the GenAI overview (traces, "No data available").
    """
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        if found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return str(found.experiment_id)
    location = None
    if model_registry.tracking_uri(workspace).startswith("sqlite:///"):
        location = (workspace.data / "mlflow" / "artifacts").resolve().as_uri()
    return str(
        client.create_experiment(
            EXPERIMENT, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
        )
    )


@contextmanager
def training_run(workspace: Workspace, config: TrainConfig) -> Iterator[str]:
    """The MLflow run of one training, open before the first epoch; yields its id.

    Params are logged at once, epochs as they finish (:func:`log_epoch`), and
    system metrics (CPU, memory, disk, network) are sampled while it runs. A
    training that raises leaves the run FAILED.
    """
    client = model_registry.connect(workspace)
    exp = experiment_id(client, workspace)
    # A name that says what and when, not MLflow's random "wistful-dog-614".
    name = f"{FEATURE_SERVICE}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    with mlflow.start_run(experiment_id=exp, run_name=name, log_system_metrics=True) as run:
        mlflow.log_params(_flat("", config.model_dump(mode="json")))
        yield run.info.run_id


def _log_training_set(dataset: Path, result: TrainResult) -> None:
    """The Feast training set as the run's dataset input: its file, digest and time range."""
    days = [d for split in result.splits.days.values() for d in split]
    source = LocalArtifactDatasetSource(str(dataset.resolve()))
    mlflow.log_input(
        MetaDataset(source, name="training_set", digest=result.data_sha256[:16]),
        context="training",
        tags={
            "feature_service": result.ranker.feature_service,
            "sha256": result.data_sha256,
            "first_day": min(days),
            "last_day": max(days),
            "rows": str(sum(result.splits.rows.values())),
        },
    )


def log_epoch(row: Mapping[str, float]) -> None:
    """One epoch's losses and speed on the active run, at step ``step``.

    ``step`` counts epochs over the ensemble's members, one after the other;
    the ``member`` metric says whose epoch a step is.

    A tracking server that fails here costs a point of the live curve, not
    the training (under torchrun the other ranks would hang on rank 0): the
    failure is logged as a warning and training goes on.
    """
    metrics = _clean({k: v for k, v in row.items() if k not in ("epoch", "step")})
    try:
        mlflow.log_metrics(metrics, step=int(row["step"]))
    except (MlflowException, OSError) as exc:
        log.warning("epoch %s not logged to MLflow: %s", row["epoch"], exc)


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
    dataset: Path,
    result: TrainResult,
    evaluation: Evaluation,
    repo: Path | None = None,
) -> LoggedModel:
    """On the active :func:`training_run`: the training set, test metrics, plots and the
    model; register it with alias ``challenger``."""
    client = model_registry.connect(workspace)
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_training needs the active run of training_run()")
    ranker = result.ranker
    mlflow.log_param("resolved_precision", result.precision)
    _log_training_set(dataset, result)
    mlflow.log_metrics(_clean(evaluation.metrics))
    mlflow.log_metrics(
        {
            **{f"best_epoch_member_{m}": e for m, e in enumerate(result.best_epochs)},
            "train_seconds": result.seconds,
        }
    )
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
        folder = Path(tmp) / model_registry.RANKER_ARTIFACT
        ranker.save(folder)
        code = Path(tmp) / "feed_ranker_model.py"
        code.write_text(model_registry.MODEL_CODE, encoding="utf-8")
        example = pd.DataFrame(
            {n: result.splits.test.inputs[n][:5] for n in ranker.preprocessor.feature_names}
        )
        output = pd.DataFrame(
            ranker.predict_proba(example.to_dict("series")),
            columns=[f"p_{a}" for a in ranker.actions],
        )
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts={model_registry.RANKER_ARTIFACT: str(folder)},
            signature=infer_signature(example, output),
            input_example=example,
            registered_model_name=model_registry.MODEL_NAME,
            pip_requirements=_requirements(),
        )
    version = str(info.registered_model_version)
    name = model_registry.MODEL_NAME
    client.set_registered_model_alias(name, model_registry.CHALLENGER, version)
    client.set_model_version_tag(name, version, "feature_service", ranker.feature_service)
    return LoggedModel(run.info.run_id, version)


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
    ranker = model_registry.load_ranker(workspace, ref)
    return evaluate(ranker, test, workspace, actions, plots_dir)


def _tag(client: MlflowClient, version: str, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(model_registry.MODEL_NAME, str(version), key, value)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def promote(
    workspace: Workspace,
    require_approval: bool = False,
    auc_tolerance: float = 0.005,
    min_gain: float = 0.0,
    offpolicy: Callable[[str, str], OffPolicyEvidence] | None = None,
) -> dict[str, Any]:
    """Run the gate on the challenger and move ``champion`` (or leave it pending).

    Both models are re-evaluated on the workspace's current test days, so a
    champion trained on older data is judged on the same rows.

    Args:
        offpolicy: called with (challenger version, champion version) when there
            is a champion; its evidence is one more gate criterion (the CLI builds
            it from :mod:`metrics.offpolicy`, a stage this one does not import).

    Returns:
        version, decision (promoted / refused / pending), reason, and both gate metrics.
    """
    actions = load_actions()
    client = model_registry.connect(workspace)
    challenger = model_registry.model_version(client, model_registry.CHALLENGER)
    test = load_splits(training_set_path(workspace), TrainConfig()).test
    try:
        champion = client.get_model_version_by_alias(
            model_registry.MODEL_NAME, model_registry.CHAMPION
        )
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
    evidence = (
        offpolicy(str(challenger.version), str(champion.version))
        if offpolicy is not None and champion is not None
        else None
    )
    decision = gate(new, old, actions.names, auc_tolerance, min_gain, evidence)
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
    if evidence is not None:
        tags["promotion.offpolicy"] = evidence.summary()
    if status == "pending":
        tags["promotion.requested_at"] = str(int(time.time()))
    _tag(client, challenger.version, tags)
    if status == "promoted":
        client.set_registered_model_alias(
            model_registry.MODEL_NAME, model_registry.CHAMPION, challenger.version
        )
    return {
        "version": str(challenger.version),
        "decision": status,
        "reason": decision.reason,
        "challenger_" + GATE_METRIC: new[GATE_METRIC],
        "champion_" + GATE_METRIC: old[GATE_METRIC] if old else None,
    }


def _pending(client: MlflowClient, version: str) -> ModelVersion:
    """The model version ``version``, which must be waiting for approval."""
    found = model_registry.model_version(client, version)
    decision = (found.tags or {}).get("promotion.decision", "none")
    if decision != "pending":
        raise PromotionError(f"version {version} has no pending promotion (decision: {decision})")
    return found


def _review_tags(verdict: str, approver: str, reason: str) -> dict[str, str]:
    """Who reviewed a pending promotion, when, why, and what they decided."""
    return {
        "approval.decision": verdict,
        "approval.by": approver,
        "approval.at": _now(),
        "approval.reason": reason,
    }


def approve(
    workspace: Workspace,
    version: str,
    ttl_hours: float = 72.0,
    approver: str = "unknown",
    reason: str = "",
) -> dict[str, Any]:
    """Grant a pending promotion: ``version`` becomes champion if its request has not expired.

    The version is tagged with the approver, the time and the reason
    (``approval.by``, ``approval.at``, ``approval.reason``).

    Raises:
        PromotionError: the version is not pending, or the request expired (tagged ``expired``).
        core.model_registry.ModelNotFound: no such version.
    """
    client = model_registry.connect(workspace)
    found = _pending(client, version)
    tags = found.tags or {}
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
    client.set_registered_model_alias(
        model_registry.MODEL_NAME, model_registry.CHAMPION, found.version
    )
    _tag(
        client,
        found.version,
        {
            **_review_tags("approved", approver, reason),
            "promotion.decision": "promoted",
            "promotion.reason": tags.get("promotion.reason", "") + " (approved)",
            "promotion.decided_at": _now(),
        },
    )
    return {
        "version": str(found.version),
        "decision": "promoted",
        "reason": f"approved by {approver}" + (f": {reason}" if reason else ""),
        "approver": approver,
    }


def refuse(
    workspace: Workspace, version: str, approver: str = "unknown", reason: str = ""
) -> dict[str, Any]:
    """Reject a pending promotion: ``champion`` stays, the version is tagged ``rejected``.

    Raises:
        PromotionError: the version is not pending.
        core.model_registry.ModelNotFound: no such version.
    """
    client = model_registry.connect(workspace)
    found = _pending(client, version)
    _tag(
        client,
        found.version,
        {
            **_review_tags("rejected", approver, reason),
            "promotion.decision": "rejected",
            "promotion.reason": f"rejected by {approver}" + (f": {reason}" if reason else ""),
            "promotion.decided_at": _now(),
        },
    )
    return {
        "version": str(found.version),
        "decision": "rejected",
        "reason": f"rejected by {approver}" + (f": {reason}" if reason else ""),
        "approver": approver,
    }


def log_analysis(
    workspace: Workspace, ref: str, kind: str, metrics: Mapping[str, float], files: list[Path]
) -> None:
    """Attach an analysis of model ``ref`` (``replay``, ``offpolicy``) to the MLflow run
    that produced it: metrics named ``<kind>_<name>``, files under the artifact folder ``kind``."""
    client = model_registry.connect(workspace)
    run_id = model_registry.model_version(client, ref).run_id
    for name, value in _clean(metrics).items():
        client.log_metric(run_id, f"{kind}_{name}", value)
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path=kind)
