"""Feature samples for drift checks: the share of requests drawn, and what a line holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from serving.candidates import Candidates
from serving.samples import SAMPLE_ROWS, FeatureSampler

pytestmark = pytest.mark.unit

REQUEST_US = 1_768_435_200_000_000  # 2026-01-15T00:00:00Z


def _candidates(tweets: np.ndarray) -> Candidates:
    return Candidates(tweets, tweets % 97, np.zeros(len(tweets), np.int64), "request")


def _features(n: int) -> dict[str, np.ndarray | list]:
    """As the reader returns them: float arrays with NaN when missing, lists for array features."""
    ratio = np.arange(n, dtype=np.float32) / 10
    ratio[0] = np.nan
    return {"ratio": ratio, "topics": [[float(i), 0.5] for i in range(n)]}


def test_nothing_is_written_at_rate_zero(tmp_path: Path) -> None:
    sampler = FeatureSampler(tmp_path / "samples", 0.0, "m:1")
    assert not sampler.offer("r1", 1, REQUEST_US, _candidates(np.arange(5)), _features(5))
    assert not (tmp_path / "samples").exists()


def test_a_drawn_request_writes_aligned_rows_without_nan(tmp_path: Path) -> None:
    sampler = FeatureSampler(tmp_path / "samples", 1.0, "feed-ranker:v1", np.random.default_rng(0))
    tweets = np.arange(50, dtype=np.int64) + 7000
    assert sampler.offer("req-9", 9, REQUEST_US, _candidates(tweets), _features(50))
    (path,) = (tmp_path / "samples").glob("*.jsonl")
    assert path.name.startswith("2026-01-15-")
    record = json.loads(path.read_text())
    assert (record["request_id"], record["user_id"], record["request_us"], record["model"]) == (
        "req-9",
        9,
        REQUEST_US,
        "feed-ranker:v1",
    )
    rows = record["rows"]
    assert len(rows) == SAMPLE_ROWS
    assert len({r["tweet_id"] for r in rows}) == SAMPLE_ROWS  # drawn without replacement
    for row in rows:
        i = row["tweet_id"] - 7000
        assert row["author_id"] == row["tweet_id"] % 97  # the impression's (user, tweet, author)
        assert row["topics"] == [float(i), 0.5]  # the features of that very tweet
        assert row["ratio"] is None if i == 0 else row["ratio"] == pytest.approx(i / 10)


def test_the_rate_is_the_share_of_requests_sampled(tmp_path: Path) -> None:
    sampler = FeatureSampler(tmp_path, 0.1, "m", np.random.default_rng(1))
    cands = _candidates(np.arange(3))
    drawn = sum(sampler.offer("r", 1, REQUEST_US, cands, _features(3)) for _ in range(2000))
    assert 140 < drawn < 260
    (path,) = tmp_path.glob("*.jsonl")
    assert len(path.read_text().splitlines()) == drawn
