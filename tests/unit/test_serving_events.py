"""The event log: idempotent appends, cumulative counters, push times, and request schemas."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from core.actions import load_actions
from serving.event_stream import _payload, _record
from serving.events import EventConflict, EventLog, EventRecord, push_frame
from serving.schemas import EventBatch, RankRequest

pytestmark = pytest.mark.unit

ACTIONS = load_actions()


def _log(tmp_path: Path) -> EventLog:
    return EventLog(tmp_path / "events.db", ACTIONS)


def _seed(tweets: list[int]) -> dict[int, dict[str, int]]:
    return {t: {"tweet_impressions": 100, "tweet_like_count": 10} for t in tweets}


def test_a_retried_batch_is_counted_once(tmp_path: Path) -> None:
    log = _log(tmp_path)
    batch = [
        EventRecord("1:impression", 1, 7, "impression", 3.0, 1_000),
        EventRecord("1:like", 1, 7, "like", None, 1_000),
        EventRecord("1:like", 1, 7, "like", None, 1_000),
    ]
    first = log.append(batch, _seed)
    assert len(first.new) == 2 and first.duplicates == 1
    assert first.counters[7]["tweet_impressions"] == 101
    assert first.counters[7]["tweet_like_count"] == 11
    retry = log.append(batch, _seed)
    assert retry.new == [] and retry.duplicates == 3 and retry.counters == {}
    more = log.append([EventRecord("2:like", 2, 7, "like", None, 2_000)], _seed)
    assert more.counters[7]["tweet_like_count"] == 12  # seeded once, then incremented
    assert log.count() == 3
    assert log.to_table().num_rows == 3


def test_push_times_are_event_times_strictly_increasing_per_tweet(tmp_path: Path) -> None:
    log = _log(tmp_path)
    first = log.append([EventRecord("a", 1, 5, "like", None, 10)], _seed).push_us[5]
    assert first == 10  # the event's time, not the wall clock
    second = log.append([EventRecord("b", 1, 5, "like", None, 10)], _seed).push_us[5]
    assert second == 11  # same event time: just after the previous push, or Redis drops it
    late = log.append([EventRecord("c", 1, 5, "like", None, 3)], _seed).push_us[5]
    assert late == 12
    later = log.append([EventRecord("d", 1, 5, "like", None, 50)], _seed).push_us[5]
    assert later == 50


def test_live_visit_and_seen_come_from_impressions(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.append(
        [
            EventRecord("a", 3, 11, "impression", 1.0, 500),
            EventRecord("b", 3, 12, "impression", 1.0, 900),
            EventRecord("c", 3, 13, "like", None, 950),
        ],
        _seed,
    )
    assert log.last_impression_us(3, before_us=800) == 500
    assert log.last_impression_us(3, before_us=10_000) == 900
    assert log.last_impression_us(4, before_us=10_000) is None
    assert sorted(log.seen(3).tolist()) == [11, 12]


def test_push_frame_has_every_counter_column() -> None:
    frame = push_frame(
        {9: {"tweet_impressions": 3}},
        {9: 1_700_000_000_000_000},
        ["tweet_impressions", "tweet_like_count"],
    )
    assert list(frame.columns) == [
        "tweet_id",
        "event_timestamp",
        "tweet_impressions",
        "tweet_like_count",
    ]
    assert frame.loc[0, "tweet_like_count"] == 0
    assert str(frame["event_timestamp"].dt.tz) == "UTC"


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": -1},
        {"user_id": 1, "limit": 0},
        {"user_id": 1, "limit": 501},
        {"user_id": True},
        {"user_id": 1, "candidate_tweet_ids": list(range(2001))},
        {"user_id": 1, "unknown": 1},
    ],
)
def test_rank_request_rejects(body: dict) -> None:
    with pytest.raises(ValidationError):
        RankRequest.model_validate(body)


def test_rank_request_reads_naive_times_as_utc() -> None:
    request = RankRequest.model_validate({"user_id": 1, "request_time": "2026-01-15T00:00:00"})
    assert request.request_time is not None and request.request_time.utcoffset() is not None
    assert request.limit == 50


def test_event_batch_rejects_unknown_actions_and_negative_dwell() -> None:
    adapter = TypeAdapter(EventBatch)
    good = {
        "event_id": "e",
        "user_id": 1,
        "tweet_id": 2,
        "action": "like",
        "timestamp": "2026-01-15T00:00:00Z",
    }
    assert adapter.validate_python([good])[0].action == "like"
    with pytest.raises(ValidationError, match="unknown action"):
        adapter.validate_python([{**good, "action": "love"}])
    with pytest.raises(ValidationError):
        adapter.validate_python([{**good, "action": "impression", "dwell_seconds": -1.0}])


def test_publishes_are_ordered_like_the_counts_across_connections(tmp_path: Path) -> None:
    """Two workers (two connections) append to one tweet: what they publish never goes back."""
    published: list[int] = []
    lock = threading.Lock()

    def publish(counters: dict, push_us: dict) -> None:
        with lock:
            published.append(counters[7]["tweet_like_count"])

    def worker(name: str) -> None:
        log = _log(tmp_path)
        for i in range(50):
            log.append([EventRecord(f"{name}-{i}", 1, 7, "like", None, i)], _seed, publish)
        log.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert published == sorted(published)
    assert published[-1] == 10 + 100  # the seed, then every event once


def test_impressions_keep_their_request_id_and_propensity(tmp_path: Path) -> None:
    log = _log(tmp_path)
    shown = EventRecord("s", 1, 7, "impression", 2.0, 1_000, "a1b2", 0.25)
    log.append([shown, EventRecord("l", 1, 7, "like", None, 1_000)], _seed)
    table = log.to_table().sort_by("event_id").to_pydict()
    assert table["request_id"] == [None, "a1b2"] and table["propensity"] == [None, 0.25]
    with pytest.raises(EventConflict):  # the same id with another propensity is a change
        log.append([EventRecord("s", 1, 7, "impression", 2.0, 1_000, "a1b2", 0.5)], _seed)


def test_a_log_from_before_the_propensity_columns_gets_them(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE events (event_id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, "
            "tweet_id INTEGER NOT NULL, action TEXT NOT NULL, dwell_seconds REAL, "
            "ts_us INTEGER NOT NULL) WITHOUT ROWID"
        )
        old.execute("INSERT INTO events VALUES ('old', 1, 7, 'like', NULL, 5)")
    log = EventLog(path, ACTIONS)
    log.append([EventRecord("new", 1, 7, "impression", 1.0, 6, "r", 1.0)], _seed)
    table = log.to_table().sort_by("event_id").to_pydict()
    assert table["event_id"] == ["new", "old"] and table["propensity"] == [1.0, None]


@pytest.mark.parametrize("served", [("r-1", 0.125), (None, None)])
def test_stream_payloads_round_trip_and_old_ones_still_read(served: tuple) -> None:
    record = EventRecord("e", 1, 7, "impression", 2.5, 1_000, *served)
    assert _record(_payload(record)) == record
    if served == (None, None):  # unchanged payload, so unchanged idempotency digests
        assert _payload(record) == '["e",1,7,"impression",2.5,1000]'


@pytest.mark.parametrize("propensity", [0.0, 1.5, float("nan")])
def test_a_propensity_outside_0_1_is_refused(propensity: float) -> None:
    event = {
        "event_id": "x",
        "user_id": 1,
        "tweet_id": 2,
        "action": "impression",
        "timestamp": "2026-01-01T00:00:00Z",
        "request_id": "r",
        "propensity": propensity,
    }
    with pytest.raises(ValidationError, match="propensity"):
        TypeAdapter(EventBatch).validate_python([event])
