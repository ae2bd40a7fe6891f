"""The cluster profile: Ray tasks build the feature tables and join the training set, and
Ray's compute engine fills Redis.

Against a real in-process Ray (one CPU, a small object store), the local Redis
and the SQL registry on PostgreSQL. The two-node cluster and `ray job submit`
are tests/e2e/test_ray_job.py.
"""

import os
import shutil
import subprocess  # nosec B404
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from core import tables
from core.feast_store import (
    FEATURE_SERVICE,
    RAY_ADDRESS_ENV,
    drop_project,
    entity_rows,
    open_store,
    repo_config,
)
from core.ray_tasks import run_on_ray
from core.workspace import Workspace
from features.online import apply_repo, materialize_feast
from features.pipelines import build_features
from feedrank.cli import main
from simulation.config import world_config
from simulation.world import generate_world, load_world_config, world_end
from tests.conftest import new_workspace
from training.dataset import build_training_set, load_splits
from training.train import TrainConfig

pytestmark = pytest.mark.integration


def _copy(tiny: Workspace, root: Path) -> Workspace:
    ws = new_workspace(root)
    for folder in ("world", "features"):
        shutil.copytree(tiny.data / folder, ws.data / folder)
    return ws


def test_cluster_config_takes_its_addresses_from_the_environment(
    tiny_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(RAY_ADDRESS_ENV, raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = repo_config(tiny_workspace, "cluster")
    assert config.offline_store.type == "ray" and config.batch_engine.type == "ray.engine"
    assert config.offline_store.ray_address is None  # Ray starts in the process
    assert Path(config.offline_store.storage_path).is_absolute()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6390")  # set by Ray in a submitted job
    assert repo_config(tiny_workspace, "cluster").batch_engine.ray_address == "127.0.0.1:6390"
    monkeypatch.setenv(RAY_ADDRESS_ENV, "ray://head:10001")
    config = repo_config(tiny_workspace, "cluster")
    assert config.offline_store.ray_address == config.batch_engine.ray_address == "ray://head:10001"
    # What a Ray task joins with: the same registry and online store, DuckDB offline.
    task = repo_config(tiny_workspace, "cluster", offline_store="duckdb")
    assert task.offline_store.type == "duckdb"
    assert task.batch_engine == repo_config(tiny_workspace, "production").batch_engine
    assert task.registry.path == config.registry.path


@pytest.mark.usefixtures("local_ray")
def test_ray_engine_fills_redis_with_what_the_embedded_store_serves(
    tiny_workspace: Workspace, feast_project: str
) -> None:
    """Every user, author and tweet of the world, read back through get_online_features."""
    store = open_store(tiny_workspace, "cluster", feast_project)
    try:
        apply_repo(store, tiny_workspace)
        materialize_feast(store, tiny_workspace, world_end(load_world_config(tiny_workspace.world)))
        impressions = pq.read_table(tiny_workspace.world / "impressions.parquet").to_pandas()
        rows = pd.concat(
            [impressions.drop_duplicates(k) for k in ("user_id", "author_id", "tweet_id")]
        )
        embedded = open_store(tiny_workspace)
        requested = entity_rows(embedded, FEATURE_SERVICE, rows, 1_768_000_000)

        def read(s) -> dict:
            service = s.get_feature_service(FEATURE_SERVICE)
            return s.get_online_features(features=service, entity_rows=requested).to_dict()

        want, got = read(embedded), read(store)
        assert got.keys() == want.keys()
        for name in want:
            assert got[name] == want[name], name
        assert sum(v is not None for v in got["user_impressions_7d"]) == len(requested)
        assert sum(v is not None for v in got["ua_impressions"]) > 100
    finally:
        drop_project(store)


@pytest.mark.usefixtures("local_ray")
def test_training_set_joined_in_ray_tasks_equals_the_duckdb_one(
    tiny_workspace: Workspace, tmp_path: Path, feast_project: str
) -> None:
    ws = _copy(tiny_workspace, tmp_path)
    store = open_store(ws, "cluster", feast_project)
    try:
        apply_repo(store, ws)
        # Small shards: several tasks, so the shards are really cut and put back together.
        built = build_training_set(store, ws, chunk_rows=3_000)
        local = pq.read_table(tiny_workspace.datasets / f"{FEATURE_SERVICE}.parquet")
        on_ray = pq.read_table(built.path)
        assert on_ray.num_rows == local.num_rows > 10_000
        assert on_ray.equals(local)
    finally:
        drop_project(store)


def test_dataset_build_on_the_cluster_profile_names_a_missing_column(
    tiny_workspace: Workspace, tmp_path: Path
) -> None:
    ws = _copy(tiny_workspace, tmp_path)
    path = ws.features / "user_stats.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["user_like_rate_7d"]), path)
    args = ["dataset", "build", "--profile", "cluster", "--workspace", str(ws.root)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "user_stats.parquet" in result.stderr and "user_like_rate_7d" in result.stderr
    assert "Traceback" not in result.output
    assert not (ws.datasets / f"{FEATURE_SERVICE}.parquet").exists()


def _read_features(folder: Path) -> dict[str, pa.Table]:
    return {name: pq.read_table(folder / f"{name}.parquet") for name in tables.FEATURE_TABLES}


@pytest.mark.usefixtures("local_ray")
def test_feature_tables_built_in_ray_tasks_equal_the_local_ones(
    tiny_workspace: Workspace, tmp_path: Path
) -> None:
    # Three shards on one CPU: the shards are really cut and put back together.
    built = build_features(tiny_workspace.world, tmp_path, run=run_on_ray, shards=3)
    assert built.shards == 3
    local, on_ray = _read_features(tiny_workspace.features), _read_features(tmp_path)
    for name, table in local.items():
        assert on_ray[name].num_rows == table.num_rows > 0, name
        assert on_ray[name].equals(table), name


@pytest.mark.usefixtures("local_ray")
def test_an_empty_shard_gives_the_same_tables_on_ray_and_locally(
    tiny_workspace: Workspace, tmp_path: Path
) -> None:
    """The first of 3 user ranges has no impressions (users 0-99 saw nothing): its users still
    get rows, and its empty parts come first in the files."""
    ws = _copy(tiny_workspace, tmp_path / "ws")
    path = ws.world / "impressions.parquet"
    impressions = pq.read_table(path)
    pq.write_table(impressions.filter(impressions["user_id"].to_numpy() >= 100), path)
    local = build_features(ws.world, tmp_path / "local", shards=3)
    on_ray = build_features(ws.world, tmp_path / "ray", run=run_on_ray, shards=3)
    assert on_ray == local
    assert local.rows["user_stats"] == 300 * local.snapshots  # every user, seen or not
    want, got = _read_features(tmp_path / "local"), _read_features(tmp_path / "ray")
    for name, table in want.items():
        assert got[name].equals(table), name
        assert table.schema == _read_features(tiny_workspace.features)[name].schema, name
    assert min(got["user_author_affinity"]["user_id"].to_pylist()) >= 100


@pytest.mark.usefixtures("local_ray")
@pytest.mark.parametrize(
    ("table", "change", "message"),
    [
        ("impressions", lambda t: t.drop_columns(["like"]), "missing column 'like'"),
        (
            "follows",
            lambda t: t.set_column(1, "author_id", t["author_id"].cast(pa.int32())),
            "column 'author_id' of table 'follows' has type int32, expected int64",
        ),
    ],
)
def test_features_build_on_the_cluster_profile_names_the_bad_column(
    tiny_workspace: Workspace, tmp_path: Path, table: str, change: Callable, message: str
) -> None:
    ws = _copy(tiny_workspace, tmp_path)
    shutil.rmtree(ws.features)
    path = ws.world / f"{table}.parquet"
    pq.write_table(change(pq.read_table(path)), path)
    args = ["features", "build", "--profile", "cluster", "--workspace", str(ws.root)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert f"{table}.parquet" in result.stderr and message in result.stderr
    assert "Traceback" not in result.output and "RayTaskError" not in result.output
    assert not ws.features.exists() or not any(ws.features.glob("*.parquet"))


@pytest.mark.usefixtures("local_ray")
def test_a_world_generated_in_ray_tasks_equals_the_local_one(tmp_path: Path) -> None:
    config = world_config("tiny", shard_visits=1_000)
    local = generate_world(config, tmp_path / "local")
    on_ray = generate_world(config, tmp_path / "ray", run=run_on_ray)
    assert on_ray == local and local.shards >= 5
    for name in ("world/visits", "world/impressions", "world/events", "truth/oracle"):
        want = pq.read_table(tmp_path / "local" / f"{name}.parquet")
        assert pq.read_table(tmp_path / "ray" / f"{name}.parquet").equals(want), name


def test_ray_train_names_the_bad_row_of_one_ranks_shard(
    tiny_workspace: Workspace, tmp_path: Path
) -> None:
    """Only rank 1 reads the broken row: the command still ends on its one line, not on
    Ray's report of its workers' tracebacks."""
    ws = new_workspace(tmp_path)
    dataset = pq.read_table(tiny_workspace.datasets / f"{FEATURE_SERVICE}.parquet")
    whole = load_splits(tiny_workspace.datasets / f"{FEATURE_SERVICE}.parquet", TrainConfig())
    val_from = pd.Timestamp(whole.days["val"][0], tz="UTC")
    training = (dataset["event_timestamp"].to_pandas() < val_from).to_numpy().nonzero()[0]
    rates = dataset["ua_positive_rate"].to_numpy(zero_copy_only=False).copy()
    rates[training[1]] = 9.0  # the second training row: rank 1 of 2 reads it
    column = dataset.column_names.index("ua_positive_rate")
    ws.datasets.mkdir(parents=True)
    pq.write_table(
        dataset.set_column(column, "ua_positive_rate", pa.array(rates)),
        ws.datasets / f"{FEATURE_SERVICE}.parquet",
    )
    env = {k: v for k, v in os.environ.items() if k not in (RAY_ADDRESS_ENV, "RAY_ADDRESS")}
    done = subprocess.run(  # nosec B603  # Ray Train starts its own Ray of this machine's CPUs
        [
            str(Path(sys.executable).with_name("feedrank")),
            *("train", "--workspace", str(ws.root), "--ray-workers", "2"),
            *("--max-epochs", "1", "--ensemble", "1", "--no-register"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [
        f"Error: {ws.datasets / f'{FEATURE_SERVICE}.parquet'}: column 'ua_positive_rate': "
        "rule in_range(0.0, 4.0) failed in 1 row(s) (e.g. 9.0)"
    ]
    assert "Traceback" not in done.stderr
