"""Training on a Ray cluster: Ray Train's ``TorchTrainer`` runs the same training chain.

Each Ray Train worker runs :func:`training.pipeline.run_training_pipeline`, the
chain that ``feedrank train`` and ``torchrun`` run: Ray Train starts the gloo
process group and sets ``RANK`` and ``WORLD_SIZE`` as torchrun does, so the
loop runs DistributedDataParallel unchanged; every rank trains on its share of
the batches, and rank 0 alone evaluates, logs to MLflow, registers and gates.
The cluster is the one ``FEEDRANK_RAY_ADDRESS`` (else ``RAY_ADDRESS``) names;
with neither, Ray starts in this process.

The workspace must be at the same path on every node (one machine here; the
shared volume of ``terraform/modules/ray_offline`` on KubeRay).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray.train import Checkpoint, RunConfig, ScalingConfig, WorkerGroupError
from ray.train.torch import TorchTrainer

from core.errors import UserError
from core.feast_store import RAY_ADDRESS_ENV
from core.workspace import Workspace
from training.pipeline import run_training_pipeline
from training.train import TrainConfig

SUMMARY = "summary.json"
"""Rank 0's summary, in the checkpoint it reports (Ray Train keeps metrics only with one)."""


def _worker(settings: dict[str, Any]) -> None:
    """One Ray Train worker: the training chain, then rank 0's summary to Ray Train."""
    summary = run_training_pipeline(
        Path(settings["workspace"]),
        TrainConfig.model_validate(settings["config"]),
        register=settings["register"],
        promote=settings["promote"],
        progress=False,
    )
    rank = ray.train.get_context().get_world_rank()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            (Path(folder) / SUMMARY).write_text(json.dumps(summary), encoding="utf-8")
            checkpoint = Checkpoint.from_directory(folder)
        ray.train.report({"rank": rank}, checkpoint=checkpoint)


def train_on_ray(
    workspace: Path,
    config: TrainConfig,
    workers: int,
    register: bool = True,
    promote: bool = False,
) -> dict[str, Any]:
    """Train with ``workers`` Ray Train workers (one CPU each); rank 0's summary.

    The summary is :func:`run_training_pipeline`'s, with ``weights_sha256``
    holding every rank's digest (equal when the ranks stayed in step).
    """
    if not ray.is_initialized():
        address = os.environ.get(RAY_ADDRESS_ENV) or os.environ.get("RAY_ADDRESS")
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    trainer = TorchTrainer(
        _worker,
        train_loop_config={
            "workspace": str(workspace),
            "config": config.model_dump(),
            "register": register,
            "promote": promote,
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False),
        run_config=RunConfig(
            name="feed-ranker", storage_path=str(Workspace(workspace).data / "ray-train")
        ),
    )
    try:
        result = trainer.fit()
    except WorkerGroupError as exc:
        # A rank's bad input (its shard of the training set breaks a rule) is raised
        # as it was, so the command prints its one line naming the file, column and
        # rule; the other ranks' failures (their collectives cut short) follow from it.
        for failure in exc.worker_failures.values():
            if isinstance(failure, UserError):
                raise failure from exc
        raise
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train reported no summary: {result.error}")
    with result.checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / SUMMARY).read_text(encoding="utf-8"))
