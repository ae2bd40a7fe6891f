"""The durable, idempotent event log behind ``POST /events``, and the live tweet counters.

One SQLite database in WAL mode with ``synchronous=FULL``: a batch is one
transaction, fsynced at commit, so an acknowledged event survives a crash, and
several worker processes can read while one writes. ``event_id`` is the
primary key: a retried batch finds its ids already logged and is not counted
twice. A resent id whose content differs (another user, tweet, action,
dwell or time) is not a retry: the whole batch is refused
(:class:`EventConflict`, HTTP 409) and nothing of it is logged.

The same transaction keeps each touched tweet's cumulative counters
(impressions and one count per action). A tweet's first live event seeds its
counters with the value the online store holds (the daily batch), so what is
pushed to Feast is "batch + everything since", never just the delta.
Counting inside the append transaction is what makes retries safe: an event
is counted exactly when it is first logged. Publishing the new counters to
Feast inside it too keeps pushes in count order across worker processes.

At scale this role goes to a log such as Kafka and a stream job; the interface
(append a batch, get new cumulative counters) stays.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from core.actions import IMPRESSION, ActionSet
from core.tables import SERVED_EVENTS, validate
from serving.schemas import Event

PUSH_SOURCE = "tweet_engagement_push"
IMPRESSIONS_COUNTER = "tweet_impressions"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    tweet_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    dwell_seconds REAL,
    ts_us INTEGER NOT NULL,
    request_id TEXT,
    propensity REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, action, ts_us);
CREATE TABLE IF NOT EXISTS tweet_counters (
    tweet_id INTEGER NOT NULL,
    counter TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (tweet_id, counter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tweet_pushes (
    tweet_id INTEGER PRIMARY KEY,
    pushed_us INTEGER NOT NULL
);
"""
_ADDED_COLUMNS = (("request_id", "TEXT"), ("propensity", "REAL"))
"""Columns added to ``events`` after its first version (ALTER TABLE on an older log)."""
_COLUMNS = "event_id, user_id, tweet_id, action, dwell_seconds, ts_us, request_id, propensity"
"""The ``events`` columns in :class:`EventRecord`'s field order."""
_INSERT = (
    "INSERT INTO events (event_id, user_id, tweet_id, action, dwell_seconds, ts_us, "
    "request_id, propensity) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_ALL = (
    "SELECT event_id, user_id, tweet_id, action, dwell_seconds, ts_us, request_id, "
    "propensity FROM events"
)


def _select_in(what: str, column: str, n: int) -> str:
    """``SELECT <what> WHERE <column> IN (?, ...)``: fixed SQL text, values bound as parameters."""
    return f"SELECT {what} WHERE {column} IN ({','.join('?' * n)})"


def counter_names(actions: ActionSet) -> list[str]:
    """The ``tweet_engagement`` columns: impressions, then one count per action."""
    return [IMPRESSIONS_COUNTER, *(f"tweet_{a}_count" for a in actions.names)]


def counter_of(action: str) -> str:
    """The counter an event increments."""
    return IMPRESSIONS_COUNTER if action == IMPRESSION else f"tweet_{action}_count"


def to_micros(ts: datetime) -> int:
    """UTC microseconds since the epoch (naive times are UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return round(ts.timestamp() * 1_000_000)


@dataclass(frozen=True)
class EventRecord:
    """One validated event, times in UTC microseconds."""

    event_id: str
    user_id: int
    tweet_id: int
    action: str
    dwell_seconds: float | None
    ts_us: int
    request_id: str | None = None
    propensity: float | None = None


class EventConflict(ValueError):
    """Event ids sent again with other content (in the batch or against the log)."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = list(ids)
        shown = ", ".join(repr(i[:32]) for i in self.ids[:5])
        more = f" and {len(self.ids) - 5} more" if len(self.ids) > 5 else ""
        super().__init__(
            f"{len(self.ids)} event_id(s) already used with other content: {shown}{more}"
        )


def records_of(events: Sequence[Event]) -> list[EventRecord]:
    """The log's records of validated events (times in microseconds, UTC)."""
    return [
        EventRecord(
            e.event_id,
            e.user_id,
            e.tweet_id,
            e.action,
            e.dwell_seconds,
            to_micros(e.timestamp),
            e.request_id,
            e.propensity,
        )
        for e in events
    ]


def unique_by_id(records: Sequence[EventRecord]) -> dict[str, EventRecord]:
    """The batch once per ``event_id``; EventConflict for an id repeated with other content."""
    unique: dict[str, EventRecord] = {}
    conflicts: dict[str, None] = {}
    for record in records:
        if unique.setdefault(record.event_id, record) != record:
            conflicts[record.event_id] = None
    if conflicts:
        raise EventConflict(list(conflicts))
    return unique


@dataclass(frozen=True)
class AppendResult:
    """What one append did."""

    new: list[EventRecord]
    duplicates: int
    counters: dict[int, dict[str, int]]
    """Cumulative counters of every tweet the new events touched."""
    push_us: dict[int, int]
    """Per tweet, the event time to push with: strictly after any earlier push of it."""


Seeder = Callable[[list[int]], Mapping[int, Mapping[str, int]]]
"""Current counters of tweets seen for the first time (from the online store)."""

Publisher = Callable[[Mapping[int, Mapping[str, int]], Mapping[int, int]], None]
"""Pushes fresh cumulative counters (and their push times) to the online store."""


class EventLog:
    """Append-only, idempotent event log with the live tweet counters.

    Args:
        path: the SQLite file (created with its folder).
        actions: the action set (names the counters).
    """

    def __init__(self, path: Path, actions: ActionSet) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.counters = counter_names(actions)
        # One connection per process, used under a lock: BentoML runs sync APIs in threads.
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(_SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(events)")}
        for column, kind in _ADDED_COLUMNS:  # a log written before the column existed
            if column not in columns:
                self._conn.execute(f"ALTER TABLE events ADD COLUMN {column} {kind}")

    def append(
        self, events: Sequence[EventRecord], seed: Seeder, publish: Publisher | None = None
    ) -> AppendResult:
        """Log the events not logged yet and update their tweets' counters, atomically.

        Args:
            events: a batch; ids repeated in the batch or already logged with
                the same content are skipped.
            seed: called (inside the transaction) with tweets that have no live
                counters yet; returns their current counters (missing: 0).
            publish: called inside the transaction, before the commit, with the
                new counters. The write lock orders publishes across processes as
                it orders the counts, so an older count never lands after a newer
                one (Feast's SQLite online store overwrites without comparing
                times). It must not raise: the events commit either way.

        Raises:
            EventConflict: an id repeated with other content; nothing is logged.
        """
        unique = unique_by_id(events)
        ids = list(unique)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                logged = self._logged(ids)
                changed = [e.event_id for e in logged if unique[e.event_id] != e]
                if changed:
                    raise EventConflict(changed)
                known = {e.event_id for e in logged}
                new = [e for i, e in unique.items() if i not in known]
                self._conn.executemany(
                    _INSERT,
                    [astuple(e) for e in new],
                )
                counters = self._count(new, seed)
                push_us = self._push_times(new)
                if publish is not None and counters:
                    publish(counters, push_us)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return AppendResult(new, len(events) - len(new), counters, push_us)

    def check(self, events: Sequence[EventRecord]) -> None:
        """Raise EventConflict if an id repeats with other content, in the batch or the log.

        Logs nothing: for events that are refused (quarantined) but whose ids
        must not hide a changed resend.
        """
        unique = unique_by_id(events)
        with self._lock:
            changed = [e.event_id for e in self._logged(list(unique)) if unique[e.event_id] != e]
        if changed:
            raise EventConflict(changed)

    def _logged(self, ids: Sequence[str]) -> list[EventRecord]:
        """The logged events with these ids (call under the lock)."""
        return [
            EventRecord(*row)
            for lo in range(0, len(ids), 500)
            for row in self._conn.execute(
                _select_in(
                    _COLUMNS + " FROM events",
                    "event_id",
                    len(ids[lo : lo + 500]),
                ),
                ids[lo : lo + 500],
            )
        ]

    def _count(self, new: Sequence[EventRecord], seed: Seeder) -> dict[int, dict[str, int]]:
        deltas: dict[int, dict[str, int]] = {}
        for e in new:
            per_tweet = deltas.setdefault(e.tweet_id, dict.fromkeys(self.counters, 0))
            per_tweet[counter_of(e.action)] += 1
        if not deltas:
            return {}
        tweets = list(deltas)
        seeded = {
            row[0]
            for row in self._conn.execute(
                _select_in("DISTINCT tweet_id FROM tweet_counters", "tweet_id", len(tweets)), tweets
            )
        }
        fresh = [t for t in tweets if t not in seeded]
        if fresh:
            current = seed(fresh)
            self._conn.executemany(
                "INSERT INTO tweet_counters VALUES (?, ?, ?)",
                [(t, c, int(current.get(t, {}).get(c, 0))) for t in fresh for c in self.counters],
            )
        self._conn.executemany(
            "UPDATE tweet_counters SET value = value + ? WHERE tweet_id = ? AND counter = ?",
            [(d, t, c) for t, per in deltas.items() for c, d in per.items() if d],
        )
        out: dict[int, dict[str, int]] = {t: {} for t in tweets}
        for tweet, counter, value in self._conn.execute(
            _select_in("tweet_id, counter, value FROM tweet_counters", "tweet_id", len(tweets)),
            tweets,
        ):
            out[tweet][counter] = value
        return out

    def _push_times(self, new: Sequence[EventRecord]) -> dict[int, int]:
        """Event time per tweet for the push: Redis keeps a value only if it is newer.

        The latest event of the batch, or one microsecond after the tweet's
        previous push if that is later (events may arrive out of order). Never
        the wall clock: the row says when its counters were true.
        """
        latest: dict[int, int] = {}
        for e in new:
            latest[e.tweet_id] = max(latest.get(e.tweet_id, 0), e.ts_us)
        if not latest:
            return {}
        previous = dict(
            self._conn.execute(
                _select_in("tweet_id, pushed_us FROM tweet_pushes", "tweet_id", len(latest)),
                list(latest),
            ).fetchall()
        )
        out = {t: max(ts, previous.get(t, 0) + 1) for t, ts in latest.items()}
        self._conn.executemany(
            "INSERT INTO tweet_pushes VALUES (?, ?) "
            "ON CONFLICT(tweet_id) DO UPDATE SET pushed_us = excluded.pushed_us",
            list(out.items()),
        )
        return out

    def last_impression_us(self, user_id: int, before_us: int) -> int | None:
        """The user's latest logged impression before ``before_us``: their last visit, live."""
        with self._lock:
            row = self._conn.execute(
                "SELECT max(ts_us) FROM events WHERE user_id = ? AND action = ? AND ts_us < ?",
                (user_id, IMPRESSION, before_us),
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def seen(self, user_id: int) -> np.ndarray:
        """Tweets logged as shown to the user (int64)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT tweet_id FROM events WHERE user_id = ? AND action = ?",
                (user_id, IMPRESSION),
            ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def count(self) -> int:
        """Events logged."""
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def to_table(self) -> pa.Table:
        """The log in the ``events`` table schema (for metrics and replay)."""
        with self._lock:
            frame = pd.read_sql_query(_SELECT_ALL, self._conn)
        table = pa.table(
            {
                "event_id": pa.array(frame["event_id"], pa.string()),
                "user_id": pa.array(frame["user_id"], pa.int64()),
                "tweet_id": pa.array(frame["tweet_id"], pa.int64()),
                "action": pa.array(frame["action"], pa.string()),
                "dwell_seconds": pa.array(frame["dwell_seconds"], pa.float32()),
                "timestamp": pa.array(frame["ts_us"], pa.int64()).cast(
                    SERVED_EVENTS.schema.field("timestamp").type
                ),
                "request_id": pa.array(frame["request_id"], pa.string(), from_pandas=True),
                "propensity": pa.array(frame["propensity"], pa.float64(), from_pandas=True),
            }
        )
        return validate(table, SERVED_EVENTS, self.path)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


def push_frame(
    counters: Mapping[int, Mapping[str, int]], push_us: Mapping[int, int], names: Sequence[str]
) -> pd.DataFrame:
    """The DataFrame ``store.push(PUSH_SOURCE, ...)`` takes: one row per tweet."""
    tweets = sorted(counters)
    frame = pd.DataFrame(
        {
            "tweet_id": np.asarray(tweets, dtype=np.int64),
            "event_timestamp": pd.to_datetime([push_us[t] for t in tweets], unit="us", utc=True),
        }
    )
    for name in names:
        frame[name] = np.asarray([counters[t].get(name, 0) for t in tweets], dtype=np.int64)
    return frame
