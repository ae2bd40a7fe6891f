"""The engagement-sequence features are point in time: earlier visits only, the last N."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.engagement_sequence import window_hits

pytestmark = pytest.mark.unit


def test_window_counts_the_last_events_before_the_visit() -> None:
    # User 1 engaged with authors 5, 5, 6 at t = 1, 2, 3; user 3 with author 5 at t = 1.
    events = pd.DataFrame({"user_id": [1, 3, 1, 1], "t": [2, 1, 1, 3], "author_id": [5, 5, 5, 6]})
    rows = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 1],
            "visit_t": [3, 4, 4, 9, 1],
            "author_id": [5, 6, 5, 5, 5],
        }
    )
    hits, length = window_hits(events, rows, "author_id", window=2)
    # t < 3: events at 1, 2 (both author 5). t < 4: the last two are t = 2 (5), 3 (6).
    # User 2 has no events; at t < 1 user 1 has none yet (a visit never sees its own).
    assert length.tolist() == [2, 2, 2, 0, 0]
    assert hits.tolist() == [2, 1, 1, 0, 0]
    wide_hits, wide_length = window_hits(events, rows, "author_id", window=32)
    assert wide_length.tolist() == [2, 3, 3, 0, 0]
    assert wide_hits.tolist() == [2, 1, 2, 0, 0]
    assert np.all(wide_hits <= wide_length)
