"""Corrupted data stops the pipeline, naming the file, column and rule (issue 20, item 3).

Each corruption is written into a copy of the tiny workspace, then the
command that must catch it runs through the CLI: exit 1, the message names
what broke, and nothing is written downstream.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from core import model_registry
from core.feast_store import training_set_path
from core.workspace import Workspace
from feedrank.cli import main
from training.registry import EXPERIMENT

pytestmark = [pytest.mark.integration]

DAY_US = 86_400_000_000


def _rewrite(path: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def _set(table: pa.Table, column: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.column_names.index(column), column, values)


def _string(t: pa.Table) -> pa.Table:
    return _set(t, "user_like_rate_7d", pc.cast(t["user_like_rate_7d"], pa.string()))


def _nans(t: pa.Table) -> pa.Table:
    values = t["user_like_rate_7d"].to_numpy().copy()
    values[::7] = np.nan
    return _set(t, "user_like_rate_7d", pa.array(values, pa.float32()))


def _out_of_range(t: pa.Table) -> pa.Table:
    values = t["author_like_rate_7d"].to_numpy().copy()
    values[3] = 1.5
    return _set(t, "author_like_rate_7d", pa.array(values, pa.float32()))


def _missing_day(t: pa.Table) -> pa.Table:
    days = pc.floor_temporal(t["event_timestamp"], unit="day")
    middle = sorted(set(days.to_pylist()))[2]
    return t.filter(pc.not_equal(days, pa.scalar(middle, days.type)))


def _stale(t: pa.Table) -> pa.Table:
    shifted = pc.subtract(t["event_timestamp"].cast(pa.int64()), 3 * DAY_US)
    return _set(t, "event_timestamp", shifted.cast(t.schema.field("event_timestamp").type))


def _empty(t: pa.Table) -> pa.Table:
    return t.slice(0, 0)


def _fewer_rows(t: pa.Table) -> pa.Table:
    """Three users in five gone: every day still there, fresh, not empty, but 60% fewer rows."""
    keep = t["user_id"].to_numpy() % 5 < 2
    return t.filter(pa.array(keep))


FEATURE_CORRUPTIONS = [
    ("wrong type", "user_stats", _string, "user_like_rate_7d", "dtype('float32')"),
    ("NaNs", "user_stats", _nans, "user_like_rate_7d", "not_nullable"),
    ("out of range", "author_stats", _out_of_range, "author_like_rate_7d", "in_range"),
    ("a missing daily partition", "user_author_affinity", _missing_day, None, "daily"),
    ("a stale table", "tweet_engagement", _stale, None, "fresh"),
    ("an empty table", "tweet_content", _empty, None, "not_empty"),
    ("fewer rows than the last build", "user_stats", _fewer_rows, None, "row_count"),
]


def _copy(tiny: Workspace, root: Path) -> Workspace:
    shutil.copytree(tiny.root, root, ignore=shutil.ignore_patterns("mlflow", "__pycache__"))
    return Workspace(root)


@pytest.mark.parametrize(
    ("what", "table", "corrupt", "column", "rule"),
    FEATURE_CORRUPTIONS,
    ids=[c[0] for c in FEATURE_CORRUPTIONS],
)
def test_a_corrupted_feature_table_stops_validate_and_dataset_build(
    tiny_workspace: Workspace,
    tmp_path: Path,
    what: str,
    table: str,
    corrupt: Callable[[pa.Table], pa.Table],
    column: str | None,
    rule: str,
) -> None:
    ws = _copy(tiny_workspace, tmp_path / "ws")
    path = ws.features / f"{table}.parquet"
    _rewrite(path, corrupt)
    training_set_path(ws).unlink()
    runner = CliRunner()
    for command in (["features", "validate"], ["dataset", "build"]):
        result = runner.invoke(main, [*command, "--workspace", str(ws.root)])
        assert result.exit_code == 1, (what, command, result.output)
        message = result.stderr.strip().splitlines()[-1]
        where = f"column '{column}'" if column else "table rule"
        assert str(path) in message and where in message and rule in message, (what, message)
        assert "Traceback" not in result.output
    assert not training_set_path(ws).exists()  # nothing written downstream


def test_nan_dwell_in_the_world_stops_features_build_before_any_table(
    tiny_workspace: Workspace, tmp_path: Path
) -> None:
    ws = _copy(tiny_workspace, tmp_path / "ws")
    shutil.rmtree(ws.features)
    path = ws.world / "impressions.parquet"

    def nan_dwell(t: pa.Table) -> pa.Table:
        values = t["dwell_seconds"].to_numpy().copy()
        values[::5] = np.nan
        return _set(t, "dwell_seconds", pa.array(values, pa.float32()))

    _rewrite(path, nan_dwell)
    result = CliRunner().invoke(main, ["features", "build", "--workspace", str(ws.root)])
    assert result.exit_code == 1, result.output
    assert "column 'dwell_seconds'" in result.stderr and "NaN" in result.stderr
    assert not any(ws.features.glob("*.parquet")) if ws.features.exists() else True


def test_a_corrupted_training_set_stops_training_before_an_epoch(
    tiny_workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _copy(tiny_workspace, tmp_path / "ws")
    # This workspace's own store; setenv, so that what MLflow exports is undone afterwards.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{ws.data / 'mlflow' / 'mlflow.db'}")
    path = training_set_path(ws)
    _rewrite(path, lambda t: _set(t, "tweet_length", pc.cast(t["tweet_length"], pa.string())))
    result = CliRunner().invoke(main, ["train", "--workspace", str(ws.root)])
    assert result.exit_code == 1, result.output
    message = result.stderr.strip().splitlines()[-1]
    assert str(path) in message and "column 'tweet_length'" in message and "numeric" in message
    client = model_registry.connect(ws)  # the run shows the failure; no model came of it
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.info.status == "FAILED"
    assert not client.search_model_versions(f"name='{model_registry.MODEL_NAME}'")
