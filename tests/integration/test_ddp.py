"""Distributed training: two torchrun processes (gloo) end with bit-identical weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.workspace import Workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]


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
    assert "oracle_lift_share_at_50" in result
