"""The top-K affinity mask of issue 19's measurement: point in time, ranked by impressions."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.affinity_top_k import in_top_k, top_k_keys

pytestmark = pytest.mark.unit

DAY = pd.Timestamp("2026-01-02", tz="UTC")


def _pairs() -> pd.DataFrame:
    """User 1 meets author 10 on day 0 (5 impressions); on day 1 author 20 overtakes it."""
    rows = [
        (1, 10, DAY, 5),
        (1, 20, DAY, 1),
        (1, 20, DAY + pd.Timedelta(days=1), 9),
        (2, 10, DAY, 3),
    ]
    return pd.DataFrame(rows, columns=["user_id", "author_id", "event_timestamp", "ua_impressions"])


def test_a_row_reads_the_top_k_of_the_last_snapshot_before_it() -> None:
    tops = top_k_keys(_pairs(), k=1)
    rows = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2, 1],
            "author_id": [10, 20, 10, 20, 10, 10],
            "event_timestamp": [
                DAY + pd.Timedelta(hours=5),  # day-0 snapshot: author 10 leads
                DAY + pd.Timedelta(hours=5),
                DAY + pd.Timedelta(days=1, hours=5),  # day-1 snapshot: author 20 leads
                DAY + pd.Timedelta(days=1, hours=5),
                DAY + pd.Timedelta(days=1, hours=5),  # another user keeps its own top 1
                DAY - pd.Timedelta(hours=1),  # before any snapshot: nothing to read
            ],
        }
    )
    assert in_top_k(rows, tops).tolist() == [True, False, False, True, True, False]
    assert in_top_k(rows, top_k_keys(_pairs(), k=2)).tolist() == [True] * 5 + [False]
