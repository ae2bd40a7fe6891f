"""ranker_v4's all-history counts: every impression before the snapshot, not the last 7 days."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from core.actions import load_actions
from features.pipelines import WINDOW_DAYS, build_features
from simulation.config import world_config
from simulation.world import generate_world

pytestmark = pytest.mark.unit
DAY_US = 86_400 * 10**6


@pytest.mark.parametrize(("entity", "key"), [("user", "user_id"), ("author", "author_id")])
def test_all_history_counts_every_earlier_impression_and_the_7d_ones_the_last_week(
    tmp_path: Path, entity: str, key: str
) -> None:
    generate_world(world_config("tiny", n_users=60, days=WINDOW_DAYS + 2), tmp_path)
    build_features(tmp_path / "world", tmp_path / "features")
    impressions = pq.read_table(tmp_path / "world" / "impressions.parquet")
    shown = pd.Series(
        impressions["impression_time"].cast("int64").to_numpy(),
        index=impressions[key].to_numpy(),
    )
    table = pq.read_table(tmp_path / "features" / f"{entity}_stats.parquet")
    stats = table.to_pandas()
    stats["now"] = table["event_timestamp"].cast("int64").to_numpy()  # microseconds
    for row in stats.itertuples():
        times = shown[shown.index == getattr(row, key)].to_numpy()
        week = row.now - WINDOW_DAYS * DAY_US
        assert getattr(row, f"{entity}_impressions_all") == np.sum(times < row.now)
        assert getattr(row, f"{entity}_impressions_7d") == np.sum(
            (times >= week) & (times < row.now)
        )
    older = stats[f"{entity}_impressions_all"] > stats[f"{entity}_impressions_7d"]
    assert older.any()  # the last snapshots reach past the window
    for action in load_actions().names:
        rates = stats[f"{entity}_{action}_rate_all"]
        assert rates.between(0.0, 1.0).all()
        week = stats[f"{entity}_{action}_rate_7d"]
        assert (rates[older] != week[older]).all()
        assert (rates[~older] == week[~older]).all()  # the same counts, the same prior
