"""The training set's point-in-time join, range by range: in this process or as Ray tasks.

:func:`join_features` is the one definition of the join: Feast's DuckDB offline
store joins ``FEATURE_SERVICE`` to entity rows. :func:`join_range` applies it to
one contiguous range of the impressions, which it reads from the world file
itself, adds the labels and stages the rows as an Arrow IPC part.
:func:`join_ranges` runs the ranges through a :mod:`core.ray_tasks` runner:
in this process on the embedded and production profiles, as Ray tasks on the
cluster profile (each on the same FeatureService from the shared SQL registry).
The driver never holds the impressions or the joined rows:
:func:`training.dataset.build_training_set` streams the parts, in order, into
the training set. The impressions are numbered in file order, so the parts
come back sorted by ``impression_id`` with no sort across them.

Feast 0.66's own Ray offline store is not used for this join (docs/scale-out.md):
it ignores each view's TTL, and its broadcast join falls back to a row-by-row
loop. The world and feature files and the staging folder must be at the same
path on every node (one machine here; a shared volume on KubeRay, docs/deploy.md).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureStore
from pyarrow import feather

from core import tables
from core.feast_store import FEATURE_SERVICE, open_store
from core.ray_tasks import init_cluster_ray, run_local, run_on_ray
from core.workspace import Workspace


def join_features(store: FeatureStore, workspace: Workspace, entity: pd.DataFrame) -> pd.DataFrame:
    """Feast's point-in-time join of ``FEATURE_SERVICE`` to ``entity`` (DuckDB offline store)."""
    # Feast 0.66's DuckDB offline store opens FileSource paths relative to the
    # working directory, not the repo (the file store does the latter).
    with contextlib.chdir(workspace.repo):
        service = store.get_feature_service(FEATURE_SERVICE)
        return store.get_historical_features(entity_df=entity, features=service).to_df()


def entity_frame(impressions: pa.Table) -> pd.DataFrame:
    """``get_historical_features`` entity rows of impressions: keys, time, request fields."""
    entity = pd.DataFrame(
        {
            "impression_id": impressions["impression_id"].to_numpy(),
            "user_id": impressions["user_id"].to_numpy(),
            "author_id": impressions["author_id"].to_numpy(),
            "tweet_id": impressions["tweet_id"].to_numpy(),
            "event_timestamp": impressions["impression_time"].to_pandas(),
        }
    )
    # The request fields of the on-demand views (data_sources.py): at training, the impression's.
    entity["request_ts"] = impressions["impression_time"].cast(pa.int64()).to_numpy() // 10**6
    entity["candidate_author_id"] = entity["author_id"]
    return entity


@dataclass(frozen=True)
class JoinPlan:
    """What every range's join shares.

    ``store`` is this process's store, or (in a Ray task) the cluster profile's
    Feast project, which the task opens with DuckDB as its offline store.
    """

    store: FeatureStore | str
    root: Path
    staging: Path
    columns: tuple[str, ...]
    """The training set's columns, in order."""
    labels: tuple[str, ...]


def join_range(plan: JoinPlan, start: int, stop: int) -> Path:
    """Impressions ``start`` to ``stop - 1`` with their point-in-time features and labels,
    sorted by ``impression_id`` and staged in ``plan.staging``; the part's path."""
    workspace = Workspace(plan.root)
    store = plan.store
    if isinstance(store, str):
        store = open_store(workspace, "cluster", store, offline_store="duckdb")
    impressions = tables.read_rows(tables.IMPRESSIONS, workspace.world, start, stop)
    joined = join_features(store, workspace, entity_frame(impressions))
    labels = impressions.select(["impression_id", "visit_id", "position", *plan.labels])
    rows = joined.merge(
        labels.to_pandas(), on="impression_id", how="inner", validate="one_to_one"
    ).sort_values("impression_id", kind="stable")
    if len(rows) != impressions.num_rows:
        raise RuntimeError(
            f"impressions {start}..{stop - 1}: {len(rows)} joined rows for "
            f"{impressions.num_rows} impressions"
        )
    path = plan.staging / f"part-{start:012d}.arrow"
    part = pa.Table.from_pandas(rows[list(plan.columns)], preserve_index=False)
    feather.write_feather(part, path, compression="uncompressed")
    return path


def join_ranges(  # pylint: disable=too-many-arguments  # the plan's parts, named
    store: FeatureStore,
    workspace: Workspace,
    rows: tuple[int, int],
    range_rows: int,
    columns: Sequence[str],
    labels: Sequence[str],
    staging: Path,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Join the impressions ``rows[0]`` to ``rows[1] - 1`` in ranges; the parts, in order.

    Args:
        store: its profile decides where: Ray tasks when its offline store is Ray
            (the cluster profile; at least one range per CPU), else this process.
        range_rows: about this many impressions per range.
        progress: called with (rows done, rows total) as ranges finish.
    """
    start, stop = rows
    on_ray = store.config.offline_store.type == "ray"
    runner = run_on_ray if on_ray else run_local
    workers = init_cluster_ray(workspace, store.project) if on_ray else 1
    cuts = np.linspace(start, stop, max(workers, math.ceil((stop - start) / range_rows)) + 1)
    bounds = cuts.round().astype(int).tolist()
    ranges = [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]

    def ranges_done(done: int, total: int) -> None:
        if progress:
            progress(round((stop - start) * done / total), stop - start)

    shared = store.project if on_ray else store
    plan = JoinPlan(shared, workspace.root, staging, tuple(columns), tuple(labels))
    return runner(join_range, plan, ranges, ranges_done)
