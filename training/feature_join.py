"""The training set's point-in-time join: in this process, or on a Ray cluster by user shard.

:func:`join_features` is the one definition: Feast's DuckDB offline store joins
``FEATURE_SERVICE`` to entity rows. The embedded and production profiles call it
chunk by chunk; the cluster profile runs it in Ray tasks (:func:`join_on_ray`),
one per user shard, each on the same FeatureService from the shared SQL
registry, and the driver concatenates the shards.

Feast 0.66's own Ray offline store is not used for this join (docs/scale-out.md):
it ignores each view's TTL, and its broadcast join falls back to a row-by-row
loop. The feature files must be at the same path on every node (one machine
here; a shared volume on KubeRay, docs/deploy.md).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from feast import FeatureStore

from core.feast_store import FEATURE_SERVICE, open_store
from core.ray_tasks import init_cluster_ray, run_on_ray
from core.workspace import Workspace


def join_features(store: FeatureStore, workspace: Workspace, entity: pd.DataFrame) -> pd.DataFrame:
    """Feast's point-in-time join of ``FEATURE_SERVICE`` to ``entity`` (DuckDB offline store)."""
    # Feast 0.66's DuckDB offline store opens FileSource paths relative to the
    # working directory, not the repo (the file store does the latter).
    with contextlib.chdir(workspace.repo):
        service = store.get_feature_service(FEATURE_SERVICE)
        return store.get_historical_features(entity_df=entity, features=service).to_df()


def _join_shard(shared: tuple[Path, str], entity: pd.DataFrame) -> pd.DataFrame:
    """One shard's join, in a Ray worker: the cluster profile with DuckDB's offline store."""
    root, project = shared
    workspace = Workspace(root)
    store = open_store(workspace, "cluster", project, offline_store="duckdb")
    return join_features(store, workspace, entity)


def join_on_ray(
    store: FeatureStore,
    workspace: Workspace,
    entity: pd.DataFrame,
    shard_rows: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[pd.DataFrame]:
    """Join ``entity`` shard by shard on the cluster profile's Ray (Feast's own Ray settings).

    Args:
        store: a cluster-profile store; its offline store config says where Ray is.
        shard_rows: about this many entity rows per task (at least one task per CPU).
        progress: called with (rows done, rows total) as shards finish.
    """
    cpus = init_cluster_ray(workspace, store.project)
    shards = max(cpus, math.ceil(len(entity) / shard_rows))
    user_shard = entity["user_id"].to_numpy() % shards
    parts = [entity[user_shard == shard] for shard in range(shards)]
    parts = [part for part in parts if len(part)]

    def shards_done(done: int, _total: int) -> None:
        if progress:
            progress(sum(len(part) for part in parts[:done]), len(entity))

    return run_on_ray(
        _join_shard, (workspace.root, store.project), [(p,) for p in parts], shards_done
    )
