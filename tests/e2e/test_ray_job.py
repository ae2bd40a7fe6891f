"""The offline path submitted with `ray job submit` to a two-node local Ray cluster.

`scripts/cluster.sh up` starts a head node and a worker node as separate
processes (one CPU each), as a user does before submitting to KubeRay. Two
jobs: the foundation pipeline (world -> features built in Ray tasks -> apply ->
Ray engine fill -> training set joined in Ray tasks), then training with two Ray Train
workers, one per node, which registers the model and runs the gate.
"""

import json
import os
import socket
import subprocess  # nosec B404
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core import tables
from core.feast_store import FEATURE_SERVICE, drop_project, entity_rows, open_store
from core.workspace import Workspace
from tests.conftest import REPO_ROOT, new_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]
CLUSTER = REPO_ROOT / "scripts" / "cluster.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Two Ray nodes on ports of their own; the environment that addresses them."""
    agent = _free_port()
    while _free_port() == agent + 1:  # the worker's agent takes the next port
        agent = _free_port()
    env = {
        # The jobs' MLflow store is the workspace's, not this process's.
        **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        "FEEDRANK_RAY_PORT": str(_free_port()),
        "FEEDRANK_RAY_DASHBOARD_PORT": str(_free_port()),
        "FEEDRANK_RAY_CLIENT_PORT": str(_free_port()),
        "FEEDRANK_RAY_AGENT_PORT": str(agent),
        "FEEDRANK_RAY_RUN_DIR": str(tmp_path / "ray-cluster"),
    }
    up = subprocess.run(  # nosec B603
        [str(CLUSTER), "up"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield env
    finally:
        subprocess.run([str(CLUSTER), "down"], env=env, timeout=120, check=False)  # nosec B603


def test_foundation_runs_as_a_ray_job_across_two_nodes(
    cluster: dict[str, str], tiny_workspace: Workspace, tmp_path: Path, feast_project: str
) -> None:
    ws = new_workspace(tmp_path / "job")
    feedrank = str(Path(sys.executable).with_name("feedrank"))
    ray = str(Path(sys.executable).with_name("ray"))
    jobs = f"http://127.0.0.1:{cluster['FEEDRANK_RAY_DASHBOARD_PORT']}"
    submit = [
        ray, "job", "submit", "--address", jobs, "--",
        feedrank, "pipeline", "foundation", "--preset", "tiny", "--profile", "cluster",
        "--project", feast_project, "--workspace", str(ws.root),
    ]  # fmt: skip
    try:
        done = subprocess.run(  # nosec B603
            submit, env=cluster, capture_output=True, text=True, timeout=900, check=False
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert "succeeded" in done.stderr + done.stdout
        # The same world, feature tables and training set as the in-process pipeline.
        files = [f"features/{name}.parquet" for name in tables.FEATURE_TABLES]
        for name in (*files, f"datasets/{FEATURE_SERVICE}.parquet"):
            local = pq.read_table(tiny_workspace.data / name)
            assert pq.read_table(ws.data / name).equals(local), name
        # The feature shards and the join's shards ran on both nodes.
        from ray.util.state import list_tasks  # pylint: disable=import-outside-toplevel

        for task in ("_shard_tables", "join_range"):
            shards = list_tasks(
                address=f"127.0.0.1:{cluster['FEEDRANK_RAY_PORT']}",
                filters=[("func_or_class_name", "=", task)],
                detail=True,
            )
            assert {t.state for t in shards} == {"FINISHED"}, task
            assert len({t.node_id for t in shards}) == 2, task
        # Feast's ray.engine filled Redis: the job's project serves the embedded values.
        redis = open_store(ws, "production", feast_project)
        embedded = open_store(tiny_workspace)
        rows = pq.read_table(tiny_workspace.world / "impressions.parquet")
        sample = rows.to_pandas().sample(200, random_state=4)
        requested = entity_rows(embedded, FEATURE_SERVICE, sample, 1_768_000_000)

        def read(store) -> dict:
            features = store.get_feature_service(FEATURE_SERVICE)
            return store.get_online_features(features=features, entity_rows=requested).to_dict()

        assert read(redis) == read(embedded)

        # Training: Ray Train, two workers (one per node), rank 0 registers and gates.
        train = [
            ray, "job", "submit", "--address", jobs, "--",
            feedrank, "train", "--workspace", str(ws.root), "--ray-workers", "2",
            "--max-epochs", "2", "--promote",
        ]  # fmt: skip
        done = subprocess.run(  # nosec B603
            train, env=cluster, capture_output=True, text=True, timeout=900, check=False
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        summary = json.loads(lines[-1].removeprefix("RESULT "))
        digests = summary["weights_sha256"]
        assert len(digests) == 2 and digests[0] == digests[1]  # the ranks stayed in step
        halves = summary["train_rows_per_rank"]  # each rank read its own half of the rows
        assert sum(halves) == summary["train_rows"] and max(halves) - min(halves) <= 1
        assert summary["promotion"] == "promoted", summary
        assert summary["version"]
    finally:
        drop_project(open_store(ws, "production", feast_project))
