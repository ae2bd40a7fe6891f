"""Distributed training: each rank reads its shard of the training set, and two torchrun
processes (gloo) end with bit-identical weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.feast_store import training_set_path
from core.workspace import Workspace
from training.dataset import Shard, load_splits
from training.train import TrainConfig, label_rates

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_shards_partition_the_training_and_validation_rows(tiny_workspace: Workspace) -> None:
    path, config = training_set_path(tiny_workspace), TrainConfig()
    whole = load_splits(path, config)
    world = 3
    shards = [load_splits(path, config, shard=Shard(rank, world)) for rank in range(world)]
    for name in ("train", "val"):
        ids = [getattr(s, name).keys["impression_id"] for s in shards]
        assert sum(len(i) for i in ids) == len(getattr(whole, name)) == whole.rows[name]
        np.testing.assert_array_equal(
            np.sort(np.concatenate(ids)), np.sort(getattr(whole, name).keys["impression_id"])
        )
        # Rows r, r + world, ... of the split: the shards differ by a row at most.
        assert max(map(len, ids)) - min(map(len, ids)) <= 1
    # Rank 0 alone evaluates: it reads the whole test split, the others none of it.
    np.testing.assert_array_equal(shards[0].test.labels, whole.test.labels)
    assert [len(s.test) for s in shards[1:]] == [0, 0]
    assert all(s.days == whole.days and s.rows == whole.rows for s in shards)
    # The label rates from the shards' counts are the whole split's, to the bit.
    counts = [(s.train.labels.sum(axis=0, dtype=np.float64), len(s.train)) for s in shards]
    np.testing.assert_array_equal(
        label_rates(shards[0].train.labels, lambda _: counts),
        whole.train.labels.mean(axis=0),
    )


def test_two_ranks_end_with_identical_weights(tiny_workspace: Workspace, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(tiny_workspace.root, ws, ignore=shutil.ignore_patterns("mlflow"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "training",
            "--workspace",
            str(ws),
            "--max-epochs",
            "2",
            "--batch-size",
            "512",
            "--no-register",
            "--no-progress",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1  # only rank 0 reports
    result = json.loads(lines[0].removeprefix("RESULT "))
    digests = result["weights_sha256"]
    assert len(digests) == 2
    assert digests[0] == digests[1]
    # Each rank trained on its own half of the rows.
    halves = result["train_rows_per_rank"]
    assert sum(halves) == result["train_rows"] and max(halves) - min(halves) <= 1
    # The identical weights are the refit's: every member trained again on both days.
    assert result["refit_epochs"] == sum(result["best_epochs"]) > 0
    assert "oracle_lift_share_at_50" in result
