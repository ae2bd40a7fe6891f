"""Ingestion of /events apart from ranking: log once, push counters, update the candidate store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from feast.data_source import PushMode

from core.actions import load_actions
from serving.candidates import CandidateStoreUnavailable
from serving.events import PUSH_SOURCE, EventLog
from serving.features import FeatureStoreUnavailable
from serving.ingest import EventIngestor
from serving.schemas import Event

pytestmark = pytest.mark.unit

ACTIONS = load_actions()


class _Store:
    """The two calls ingestion makes of Feast: read counters to seed, push fresh ones."""

    def __init__(self, *, push_fails: bool = False, read_fails: bool = False) -> None:
        self.pushed: list[pd.DataFrame] = []
        self.push_fails, self.read_fails = push_fails, read_fails

    def push(self, source: str, frame: pd.DataFrame, to: Any) -> None:
        assert source == PUSH_SOURCE and to == PushMode.ONLINE
        if self.push_fails:
            raise ConnectionError("online store down")
        self.pushed.append(frame)

    def get_online_features(self, features: list[str], entity_rows: list[dict]) -> Any:
        if self.read_fails:
            raise ConnectionError("online store down")
        tweets = [row["tweet_id"] for row in entity_rows]
        found: dict[str, list[int | None]] = {"tweet_id": list(tweets)}
        for feature in features:
            name = feature.split(":")[1]
            found[name] = [100 if name == "tweet_impressions" else None for _ in tweets]
        return SimpleNamespace(to_dict=lambda: found)


class _Candidates:
    """Records what the candidate store is told; optionally down."""

    def __init__(self, *, down: bool = False) -> None:
        self.impressions: list[tuple[int, int, int]] = []
        self.engaged: list[int] = []
        self.down = down

    def record(
        self, impressions: Sequence[tuple[int, int, int]], engaged_tweets: Sequence[int]
    ) -> None:
        if self.down:
            raise CandidateStoreUnavailable("redis down")
        self.impressions += impressions
        self.engaged += engaged_tweets


def _event(event_id: str, tweet: int, action: str, second: int = 0) -> Event:
    return Event.model_validate(
        {
            "event_id": event_id,
            "user_id": 3,
            "tweet_id": tweet,
            "action": action,
            "timestamp": f"2026-01-15T00:00:{second:02d}Z",
        }
    )


def _ingestor(tmp_path: Path, store: _Store, candidates: _Candidates) -> EventIngestor:
    log = EventLog(tmp_path / "events.db", ACTIONS)
    return EventIngestor(log, store, candidates, ACTIONS.positive)  # type: ignore[arg-type]


def test_a_batch_is_logged_pushed_and_told_to_the_candidate_store_once(tmp_path: Path) -> None:
    store, candidates = _Store(), _Candidates()
    ingestor = _ingestor(tmp_path, store, candidates)
    batch = [
        _event("a", 7, "impression", 1),
        _event("b", 7, "like", 2),
        _event("c", 8, "hide", 3),  # negative weight: not engagement for the candidate store
        _event("b", 7, "like", 2),
    ]
    first = ingestor.ingest(batch)
    assert (first.received, first.accepted, first.duplicates, first.pushed_tweets) == (4, 3, 1, 2)
    assert len(store.pushed) == 1  # one push per batch, inside its transaction
    frame = store.pushed[0]
    by_tweet = frame.set_index("tweet_id")
    assert by_tweet.loc[7, "tweet_impressions"] == 101  # seeded from the store, then counted
    assert by_tweet.loc[7, "tweet_like_count"] == 1
    assert by_tweet.loc[8, "tweet_hide_count"] == 1
    start_us = int(pd.Timestamp("2026-01-15T00:00:01Z").value // 1000)
    assert candidates.impressions == [(3, 7, start_us)]
    assert candidates.engaged == [7]

    retry = ingestor.ingest(batch)
    assert (retry.accepted, retry.duplicates, retry.pushed_tweets) == (0, 4, 0)
    assert len(store.pushed) == 1
    assert candidates.impressions == [(3, 7, start_us)] and candidates.engaged == [7]
    ingestor.close()


def test_a_failed_push_keeps_the_events(tmp_path: Path) -> None:
    ingestor = _ingestor(tmp_path, _Store(push_fails=True), _Candidates())
    response = ingestor.ingest([_event("a", 7, "like")])
    assert response.accepted == 1 and response.pushed_tweets == 0
    assert ingestor.log.count() == 1


def test_an_unreadable_online_store_logs_nothing_so_the_batch_can_be_retried(
    tmp_path: Path,
) -> None:
    candidates = _Candidates()
    ingestor = _ingestor(tmp_path, _Store(read_fails=True), candidates)
    with pytest.raises(FeatureStoreUnavailable):
        ingestor.ingest([_event("a", 7, "like")])
    assert ingestor.log.count() == 0
    assert candidates.engaged == []


def test_a_candidate_store_outage_does_not_fail_the_batch(tmp_path: Path) -> None:
    store = _Store()
    ingestor = _ingestor(tmp_path, store, _Candidates(down=True))
    response = ingestor.ingest([_event("a", 7, "impression")])
    assert response.accepted == 1 and response.pushed_tweets == 1
    assert ingestor.log.count() == 1
