"""The training stage's chain: train, evaluate on the test days, log and register, gate.

``feedrank train``, the demo and the tests call :func:`run_training_pipeline`;
under ``torchrun`` every rank trains and rank 0 alone evaluates and logs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from core.actions import load_actions
from core.errors import MissingArtifactError
from core.feast_store import training_set_path
from core.workspace import REPO_ROOT, Workspace
from training import registry
from training.evaluate import evaluate
from training.train import TrainConfig, train


def run_training_pipeline(
    workspace: Path,
    config: TrainConfig | None = None,
    register: bool = True,
    promote: bool = True,
    require_approval: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, evaluate on the test days, log and register, then run the promotion gate.

    Under ``torchrun`` only rank 0 evaluates and logs; other ranks return after training.

    Returns:
        The evaluation's RESULT keys plus training time, epochs, the registered
        version, the promotion decision and each rank's weight digest.
    """
    ws = Workspace(workspace)
    config = config or TrainConfig()
    dataset = training_set_path(ws)
    if not dataset.exists():
        raise MissingArtifactError(f"{dataset}: no training set (run the dataset stage first)")
    actions = load_actions()
    logs = register and int(rank()) == 0  # under torchrun, rank 0 alone logs
    # The run opens before the first epoch, so the UI shows the epochs live.
    with registry.training_run(ws, config) if logs else contextlib.nullcontext():
        result = train(
            dataset, config, actions, progress, on_epoch=registry.log_epoch if logs else None
        )
        summary: dict[str, Any] = {
            "train_seconds": round(result.seconds, 1),
            "best_epochs": result.best_epochs,
            "epochs": len(result.history),
            "refit_epochs": len(result.refit_history),
            "train_rows": result.splits.rows["train"],
            "train_rows_per_rank": result.shard_rows,
            "peak_rss_mb_per_rank": result.peak_rss_mb,
            "weights_sha256": result.weights_sha256,
        }
        if int(rank()) != 0:
            return summary
        with tempfile.TemporaryDirectory() as plots:  # the plots live on as run artifacts
            evaluation = evaluate(result.ranker, result.splits.test, ws, actions, Path(plots))
            summary = {**evaluation.result(actions), **summary}
            if logs:
                logged = registry.log_training(ws, dataset, result, evaluation, REPO_ROOT)
                summary.update(run_id=logged.run_id, version=logged.version)
    if promote:
        decision = registry.promote(ws, require_approval=require_approval)
        summary.update(promotion=decision["decision"], promotion_reason=decision["reason"])
    return summary


def rank() -> str:
    """This process's rank under torchrun ("0" when not distributed)."""
    return os.environ.get("RANK", "0")
