"""features.pipelines.user_top_authors: a user's top K authors, point in time, one row a day."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from features.pipelines import user_top_authors

pytestmark = pytest.mark.unit

DAY = pd.Timestamp("2026-01-02", tz="UTC")


def _affinity() -> pa.Table:
    """User 1 meets authors 10 and 20 on day 0, then only 20 (overtaking 10) on day 1."""
    rows = [
        (1, 10, DAY, 5, 0.5, 1),
        (1, 20, DAY, 1, 0.1, 0),
        (1, 30, DAY, 1, 0.2, 0),  # ties with 20 on impressions: the lower id ranks first
        (1, 20, DAY + pd.Timedelta(days=1), 9, 0.3, 2),
        (2, 10, DAY + pd.Timedelta(days=1), 3, 0.25, 0),
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "user_id",
            "author_id",
            "event_timestamp",
            "ua_impressions",
            "ua_positive_rate",
            "ua_negative_count",
        ],
    )
    frame["ua_positive_rate"] = frame["ua_positive_rate"].astype("float32")
    return pa.Table.from_pandas(frame, preserve_index=False)


def test_each_active_day_lists_the_top_k_of_every_pair_met_so_far() -> None:
    got = user_top_authors(_affinity(), k=2).to_pandas()
    assert got["user_id"].tolist() == [1, 1, 2]
    assert got["event_timestamp"].tolist() == [DAY, *[DAY + pd.Timedelta(days=1)] * 2]
    lists = got[[c for c in got.columns if c.startswith("top_author_")]].map(list)
    # Day 0: 10 leads, 20 beats 30 on the tie; day 1: 20 (9) overtakes 10, whose
    # day-0 row carries over; 30 falls out of the top 2.
    assert lists["top_author_ids"].tolist() == [[10, 20], [20, 10], [10]]
    assert lists["top_author_impressions"].tolist() == [[5, 1], [9, 5], [3]]
    assert lists["top_author_negative_count"].tolist() == [[1, 0], [2, 1], [0]]
    rates = [[round(r, 6) for r in row] for row in lists["top_author_positive_rate"]]
    assert rates == [[0.5, 0.1], [0.3, 0.5], [0.25]]
    assert got.dtypes["event_timestamp"] == "datetime64[us, UTC]"
