"""Apply the Feast repo and fill the online store, the default way and the fast way.

Feast's ``materialize`` turns every feature value into a ``ValueProto`` in
Python and, on SQLite, executes one INSERT per value: ~2k rows/s measured
here. :func:`fill_online` writes the very same bytes (entity keys serialized
by Feast's own v3 layout, values as ``ValueProto`` wire bytes, both as
:mod:`core.feast_layout` builds them) but builds them column-wise with numpy
and writes them in one ``executemany`` per view (SQLite) or one pipelined
HSET per entity (Redis). ``get_online_features`` reads the result unchanged;
``tests/integration/test_feast_production.py`` checks that value by value
against ``materialize``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView
from feast.repo_operations import parse_repo

from core.feast_layout import (
    EntityKeys,
    check_feast_layout,
    encode_values,
    feast_redis_client,
    redis_fields,
    redis_keys,
    redis_timestamp,
    redis_timestamp_field,
    sqlite_path,
    sqlite_seconds,
    sqlite_table,
)
from core.workspace import Workspace

_STATE_FILE = "online_fill_state.json"
_NO_TTL = timedelta(days=3650)


def apply_repo(store: FeatureStore, workspace: Workspace) -> list[str]:
    """Register the repo's objects (``feast apply``) and create the online tables.

    Returns:
        The names of the applied feature views and services.
    """
    repo_dir = str(workspace.repo)
    if repo_dir not in sys.path:
        sys.path.insert(0, repo_dir)
    with contextlib.chdir(workspace.repo):  # Feast names the repo's modules relative to cwd
        contents = parse_repo(workspace.repo)
    objects = [
        *contents.entities,
        *contents.data_sources,
        *contents.feature_views,
        *contents.on_demand_feature_views,
        *contents.feature_services,
    ]
    store.apply(objects, partial=False)
    return sorted(o.name for o in (*contents.feature_views, *contents.feature_services))


def materialize_feast(store: FeatureStore, workspace: Workspace, end: datetime) -> None:
    """Feast's own path, for comparison and parity: ``materialize`` view by view.

    Each view gets the window that ``materialize-incremental`` gives it on a
    first run, ``[end - ttl, end]``, with ``end`` (not the wall clock) as now:
    the simulated world lives in its own time.
    """
    # Feast 0.66's DuckDB offline store opens FileSource paths relative to the
    # working directory, not the repo.
    with contextlib.chdir(workspace.repo):
        for view in store.list_feature_views():
            start = end - (view.ttl or _NO_TTL)
            store.materialize(start_date=start, end_date=end, feature_views=[view.name])


def _latest_rows(path: Path, view: FeatureView, start: datetime, end: datetime) -> pa.Table:
    """Per entity, the latest row stamped in [start, end], as ``materialize`` selects it."""
    table = pq.read_table(path)
    ts = table["event_timestamp"]
    table = table.filter(
        pc.and_(
            pc.greater_equal(ts, pa.scalar(start, ts.type)),
            pc.less_equal(ts, pa.scalar(end, ts.type)),
        )
    )
    keys = list(view.join_keys)
    order = table.sort_by([*[(k, "ascending") for k in keys], ("event_timestamp", "descending")])
    if order.num_rows == 0:
        return order
    same_as_previous = np.ones(order.num_rows, dtype=bool)
    same_as_previous[0] = False
    for key in keys:
        col = order[key].to_numpy()
        same_as_previous[1:] &= col[1:] == col[:-1]
    return order.filter(pa.array(~same_as_previous))


def _entity_keys(table: pa.Table, view: FeatureView) -> np.ndarray:
    """The rows' Feast entity keys, a (rows, key bytes) uint8 matrix."""
    join_keys = list(view.join_keys)
    return EntityKeys.of(join_keys).encode({k: table[k].to_numpy() for k in join_keys})


def _write_sqlite(store: FeatureStore, view: FeatureView, table: pa.Table) -> None:
    """One executemany in one transaction, rows in primary-key order.

    Inserting in key order turns SQLite's random B-tree inserts into appends,
    the main cost of a bulk load.
    """
    config = store.config
    path = sqlite_path(config)
    name = sqlite_table(config, view)
    key_matrix = _entity_keys(table, view)
    order = np.lexsort(key_matrix.T[::-1])
    keys = [key_matrix[i].tobytes() for i in order]
    seconds = sqlite_seconds(table["event_timestamp"])[order].tolist()
    features = sorted(view.features, key=lambda f: f.name)
    columns = [
        np.asarray(encode_values(table[f.name], f.dtype), dtype=object)[order] for f in features
    ]
    rows = (
        (key, f.name, column[i], seconds[i])
        for i, key in enumerate(keys)
        for f, column in zip(features, columns, strict=True)
    )
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executemany(
                # The table name comes from the Feast registry, not from input.
                f'INSERT INTO "{name}" '  # nosec B608
                "(entity_key, feature_name, value, event_ts, created_ts) "
                "VALUES (?, ?, ?, ?, NULL) ON CONFLICT(entity_key, feature_name) "
                "DO UPDATE SET value = excluded.value, event_ts = excluded.event_ts",
                rows,
            )
    finally:
        conn.close()


def _write_redis(store: FeatureStore, view: FeatureView, table: pa.Table) -> None:
    """One pipelined HSET per entity, in chunks: a hash of every feature and the event time."""
    config = store.config
    client = feast_redis_client(store)
    ts_key = redis_timestamp_field(config, view)
    fields = redis_fields(config, view, [f.name for f in view.features])
    keys = redis_keys((row.tobytes() for row in _entity_keys(table, view)), config.project)
    stamps = table["event_timestamp"].to_pylist()
    columns = [encode_values(table[f.name], f.dtype) for f in view.features]
    chunk = 5000
    for lo in range(0, len(keys), chunk):
        with client.pipeline(transaction=False) as pipe:
            for i in range(lo, min(lo + chunk, len(keys))):
                mapping: dict[bytes | str, bytes] = {ts_key: redis_timestamp(stamps[i])}
                for field, column in zip(fields, columns, strict=True):
                    mapping[field] = column[i]
                pipe.hset(keys[i], mapping=mapping)
            pipe.execute()


def fill_online(
    store: FeatureStore,
    workspace: Workspace,
    end: datetime,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Write the latest value per entity of every batch feature view into the online store.

    Incremental like ``materialize-incremental``: each view starts where the
    previous fill ended (or at ``end - ttl``), and the interval is recorded in
    the Feast registry, so Feast's own commands see it as materialized.

    Returns:
        Rows (entities) written per feature view.

    Raises:
        FeastLayoutError: the installed Feast stores another layout (``materialize_feast``
            still works).
        TypeError: a feature type without a fast encoding (likewise).
    """
    check_feast_layout(store.config)
    state_path = workspace.data / "feast" / _STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    project_state = state.setdefault(store.config.project, {})
    online_type = store.config.online_store.type
    written = {}
    for view in store.list_feature_views():
        source = view.batch_source
        path = Path(source.path)
        if not path.is_absolute():
            path = workspace.repo / path
        since = project_state.get(view.name)
        start = datetime.fromisoformat(since) if since else end - (view.ttl or _NO_TTL)
        table = _latest_rows(path, view, start, end)
        if online_type == "sqlite":
            _write_sqlite(store, view, table)
        elif online_type == "redis":
            _write_redis(store, view, table)
        else:
            raise ValueError(
                f"no fast fill for online store {online_type!r}; use materialize_feast"
            )
        store.registry.apply_materialization(view, store.config.project, start, end)
        project_state[view.name] = end.astimezone(UTC).isoformat()
        written[view.name] = table.num_rows
        if progress:
            progress(view.name, table.num_rows)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(state_path)
    return written
