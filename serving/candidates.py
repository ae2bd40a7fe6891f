"""Candidate sourcing: the tweets a feed request ranks.

The brief's baseline defines the candidates: tweets posted by the user's
followees since the user's last visit, newest first, minus tweets already
shown to them; the newest ``limit`` (500) are kept. A user with no followees
(unknown or new) gets a cold-start feed: the most engaged tweets of the last
``cold_start_hours`` before the request.

Two sources answer the same questions:

- :class:`InMemoryCandidates` (embedded profile): built at startup from the
  world's parquet tables into sorted numpy arrays, so a request is a handful
  of ``searchsorted`` calls. What happens after startup (impressions, hence
  the last visit and the seen set) is read from the event log, which all
  worker processes share.
- :class:`RedisCandidates` (production profile): per-author timelines as
  sorted sets, follow sets, last visits and seen sets in Redis, written by
  :func:`load_redis_candidates` and kept live by ``POST /events``. Three
  pipelined round trips per request.

A Redis that restarted empty answers every read with "nothing": no
followees, no tweets. Read as such, that is a cold-start feed of nothing,
served as if all were well. So :func:`load_redis_candidates` writes a
``loaded`` marker last (load time and counts), :class:`RedisCandidates`
reads it in the same pipeline as the user's followees, and its absence
raises :class:`CandidateStoreNotLoaded`: the service answers the fallback
with ``degraded: true`` and says to run ``feedrank serve-state rebuild``.

Both sources also tell which user and tweet ids they know
(:meth:`CandidateSource.known`), so ``/events`` can quarantine events about
users or tweets that do not exist.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.actions import ActionSet
from core.tables import EVENTS, FOLLOWS, IMPRESSIONS, TWEETS, USERS, VISITS, read_table
from serving.events import EventLog
from serving.redis_clients import reply_text
from serving.row_cache import RowCache

DEFAULT_LIMIT = 500
COLD_START_HOURS = 48.0
_US_PER_HOUR = 3_600_000_000
_POPULAR_POOL = 2000


class CandidateStoreUnavailable(RuntimeError):
    """The candidate store could not be read."""


class CandidateStoreNotLoaded(CandidateStoreUnavailable):
    """The candidate store answers but holds no load (Redis restarted empty, or never filled)."""


REBUILD_COMMAND = "feedrank serve-state rebuild"
"""What refills the production profile's serving state (``feedrank/commands/serve_state.py``)."""
LOADED_KEY = "loaded"
"""The marker key :func:`load_redis_candidates` writes last (under the prefix)."""


@dataclass(frozen=True)
class Candidates:
    """Candidate tweets, newest first, with what ranking and the fallback need."""

    tweet_ids: np.ndarray
    author_ids: np.ndarray
    created_us: np.ndarray
    source: str
    """``followees``, ``cold_start`` or ``request``."""

    def __len__(self) -> int:
        return len(self.tweet_ids)

    def take(self, index: np.ndarray) -> Candidates:
        """A subset, in ``index`` order."""
        return Candidates(
            self.tweet_ids[index], self.author_ids[index], self.created_us[index], self.source
        )


def empty_candidates(source: str) -> Candidates:
    """No candidates."""
    none = np.zeros(0, dtype=np.int64)
    return Candidates(none, none, none, source)


def _newest(cands: Candidates, limit: int) -> Candidates:
    order = np.argsort(-cands.created_us, kind="stable")[:limit]
    return cands.take(order)


class CandidateSource(Protocol):
    """What the service asks a candidate store."""

    def feed(self, user_id: int, request_us: int, limit: int = DEFAULT_LIMIT) -> Candidates:
        """Followees' unseen tweets since the last visit, or the cold-start feed."""

    def lookup(self, tweet_ids: np.ndarray) -> Candidates:
        """Authors and creation times of given tweets (unknown tweets dropped)."""

    def record(
        self, impressions: Sequence[tuple[int, int, int]], engaged_tweets: Sequence[int]
    ) -> None:
        """Live updates: (user, tweet, time_us) impressions and engaged tweets."""

    def known(self, user_ids: np.ndarray, tweet_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks: which users and which tweets exist."""


def _positive_engagement(events_dir: Path, actions: ActionSet) -> tuple[np.ndarray, np.ndarray]:
    """Tweet ids and their counts of positive-weight actions (the popularity of cold start)."""
    events = read_table(EVENTS, events_dir)
    positive = pa.array(actions.positive, pa.string())
    tweets = events.filter(pc.is_in(events["action"], value_set=positive))["tweet_id"]
    ids, counts = np.unique(tweets.to_numpy(), return_counts=True)
    return ids.astype(np.int64), counts.astype(np.int64)


def _member(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A mask: which of ``ids`` are in the sorted array ``sorted_ids``."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), dtype=bool)
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    return np.asarray(sorted_ids[pos] == ids, dtype=bool)


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.int64()).to_numpy()


class InMemoryCandidates:  # pylint: disable=too-many-instance-attributes  # the sorted arrays
    """Candidates from the world tables, held as sorted arrays (embedded profile).

    Args:
        world: the folder of the world's parquet tables.
        actions: the action set (positive actions make a tweet popular).
        live: the event log, for impressions logged after startup.
        cold_start_hours: how far back the cold-start feed looks.
    """

    def __init__(
        self,
        world: Path,
        actions: ActionSet,
        live: EventLog | None = None,
        cold_start_hours: float = COLD_START_HOURS,
    ) -> None:
        self.live = live
        self.cold_start_us = int(cold_start_hours * _US_PER_HOUR)
        follows = read_table(FOLLOWS, world)
        f_user, f_author = follows["user_id"].to_numpy(), follows["author_id"].to_numpy()
        order = np.argsort(f_user, kind="stable")
        self._f_user, self._f_author = f_user[order], f_author[order]

        tweets = read_table(TWEETS, world)
        t_id, t_author = tweets["tweet_id"].to_numpy(), tweets["author_id"].to_numpy()
        t_created = _micros(tweets["created_at"])
        by_author = np.lexsort((t_created, t_author))
        self._t_author, self._t_created = t_author[by_author], t_created[by_author]
        self._t_id = t_id[by_author]
        by_id = np.argsort(t_id)
        self._id_sorted, self._id_author = t_id[by_id], t_author[by_id]
        self._id_created = t_created[by_id]
        self._users = np.unique(read_table(USERS, world)["user_id"].to_numpy())

        visits = read_table(VISITS, world)
        v_user, v_time = visits["user_id"].to_numpy(), _micros(visits["visit_time"])
        order = np.lexsort((v_time, v_user))
        self._v_user, self._v_time = v_user[order], v_time[order]

        shown = read_table(IMPRESSIONS, world).select(["user_id", "tweet_id"])
        self._seen = np.unique((shown["user_id"].to_numpy() << 32) | shown["tweet_id"].to_numpy())

        pop_ids, pop_counts = _positive_engagement(world, actions)
        pos = np.searchsorted(self._id_sorted, pop_ids)
        pos = np.clip(pos, 0, max(len(self._id_sorted) - 1, 0))
        known = self._id_sorted[pos] == pop_ids
        self._pop_ids, self._pop_counts = pop_ids[known], pop_counts[known]
        self._pop_created = self._id_created[pos[known]]

    def _followees(self, user_id: int) -> np.ndarray:
        lo, hi = np.searchsorted(self._f_user, [user_id, user_id + 1])
        return self._f_author[lo:hi]

    def last_visit_us(self, user_id: int, request_us: int) -> int | None:
        """The user's last visit before the request: the world's visits or a live impression."""
        lo, hi = np.searchsorted(self._v_user, [user_id, user_id + 1])
        k = lo + int(np.searchsorted(self._v_time[lo:hi], request_us, side="left"))
        last = int(self._v_time[k - 1]) if k > lo else None
        if self.live is not None:
            live = self.live.last_impression_us(user_id, request_us)
            if live is not None and (last is None or live > last):
                last = live
        return last

    def feed(self, user_id: int, request_us: int, limit: int = DEFAULT_LIMIT) -> Candidates:
        """Followees' unseen tweets in (last visit, request], newest ``limit``; else cold start."""
        authors = self._followees(user_id)
        if len(authors) == 0:
            return self.cold_start(request_us, limit)
        since = self.last_visit_us(user_id, request_us)
        since = np.iinfo(np.int64).min + 1 if since is None else since
        starts = np.searchsorted(self._t_author, authors, side="left")
        ends = np.searchsorted(self._t_author, authors, side="right")
        index = np.concatenate(
            [
                lo + np.flatnonzero((ct > since) & (ct <= request_us))
                for lo, ct in ((s, self._t_created[s:e]) for s, e in zip(starts, ends, strict=True))
            ]
            or [np.zeros(0, dtype=np.int64)]
        )
        tweet_ids = self._t_id[index]
        fresh = ~self._is_seen(user_id, tweet_ids)
        index = index[fresh]
        cands = Candidates(
            self._t_id[index], self._t_author[index], self._t_created[index], "followees"
        )
        return _newest(cands, limit)

    def _is_seen(self, user_id: int, tweet_ids: np.ndarray) -> np.ndarray:
        keys = (np.int64(user_id) << 32) | tweet_ids
        pos = np.clip(np.searchsorted(self._seen, keys), 0, max(len(self._seen) - 1, 0))
        seen = (self._seen[pos] == keys) if len(self._seen) else np.zeros(len(keys), bool)
        if self.live is not None:
            seen |= np.isin(tweet_ids, self.live.seen(user_id))
        return seen

    def cold_start(self, request_us: int, limit: int = DEFAULT_LIMIT) -> Candidates:
        """The most engaged tweets of the last ``cold_start_hours`` before the request."""
        window = (self._pop_created > request_us - self.cold_start_us) & (
            self._pop_created <= request_us
        )
        ids, counts = self._pop_ids[window], self._pop_counts[window]
        top = np.argsort(-counts, kind="stable")[:limit]
        return _newest(self.lookup(ids[top], source="cold_start"), limit)

    def lookup(self, tweet_ids: np.ndarray, source: str = "request") -> Candidates:
        """Authors and creation times of the given tweets, in input order; unknown ones dropped."""
        tweet_ids = np.asarray(tweet_ids, dtype=np.int64)
        if len(self._id_sorted) == 0:
            return empty_candidates(source)
        pos = np.clip(np.searchsorted(self._id_sorted, tweet_ids), 0, len(self._id_sorted) - 1)
        known = self._id_sorted[pos] == tweet_ids
        pos = pos[known]
        return Candidates(tweet_ids[known], self._id_author[pos], self._id_created[pos], source)

    def record(
        self, impressions: Sequence[tuple[int, int, int]], engaged_tweets: Sequence[int]
    ) -> None:
        """Nothing to do: live state is read from the shared event log."""

    def known(self, user_ids: np.ndarray, tweet_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which users are in the world's users table, which tweets in its tweets table."""
        return _member(self._users, user_ids), _member(self._id_sorted, tweet_ids)


class RedisCandidates:
    """Candidates from Redis (production profile); see :func:`load_redis_candidates`.

    Keys (``prefix`` isolates deployments and tests): ``follows:<user>`` set of
    authors; ``timeline:<author>`` sorted set tweet -> created (us);
    ``last_visit`` sorted set user -> time (us), only ever raised;
    ``seen:<user>`` set of tweets; hashes ``tweet_author`` and
    ``tweet_created``; ``popular`` sorted set tweet -> positive engagements;
    ``users`` set of the world's users; ``loaded`` hash, the load's time and
    counts, written last (its absence: :class:`CandidateStoreNotLoaded`).

    A tweet's author and creation time never change, so :meth:`lookup` keeps
    those it found in a bounded in-process cache for ``facts_ttl`` seconds
    (the bound on serving a deleted tweet); tweets not found are asked again
    next time, since they may be posted meanwhile. Two HMGETs of 500 fields
    cost ~1.2 ms a request; a cached batch ~0.1 ms.

    Args:
        client: a ``redis.Redis`` client.
        prefix: key prefix.
        cold_start_hours: how far back the cold-start feed looks.
        facts_ttl: seconds a tweet's author and creation time are served from memory.
        max_facts: bound on cached tweets.
    """

    def __init__(
        self,
        client: Any,
        prefix: str,
        cold_start_hours: float = COLD_START_HOURS,
        facts_ttl: float = 3600.0,
        max_facts: int = 200_000,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.cold_start_us = int(cold_start_hours * _US_PER_HOUR)
        self._facts = RowCache(facts_ttl, max_facts, width=2, dtype=np.int64)
        """Tweet id -> (author id, created us)."""

    def _key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    def _call(self, fn: Any) -> Any:
        try:
            return fn()
        except CandidateStoreNotLoaded:
            raise
        except Exception as exc:  # any driver error means "store unavailable" to the caller
            raise CandidateStoreUnavailable(f"redis candidate store: {exc}") from exc

    def feed(self, user_id: int, request_us: int, limit: int = DEFAULT_LIMIT) -> Candidates:
        """Followees' unseen tweets in (last visit, request], newest ``limit``; else cold start."""
        return self._call(lambda: self._feed(user_id, request_us, limit))

    def _feed(self, user_id: int, request_us: int, limit: int) -> Candidates:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.smembers(self._key("follows", user_id))
            pipe.zscore(self._key("last_visit"), user_id)
            pipe.exists(self._key(LOADED_KEY))
            followees, last, loaded = pipe.execute()
        if not loaded:
            raise CandidateStoreNotLoaded(
                f"redis candidate store {self.prefix!r} is empty (not loaded): "
                f"run `{REBUILD_COMMAND}`"
            )
        if not followees:
            return self._cold_start(request_us, limit)
        authors = np.fromiter((int(a) for a in followees), dtype=np.int64, count=len(followees))
        low = f"({int(last)}" if last is not None else "-inf"
        with self.client.pipeline(transaction=False) as pipe:
            for author in authors:
                pipe.zrevrangebyscore(
                    self._key("timeline", author), request_us, low, 0, limit, withscores=True
                )
            timelines = pipe.execute()
        counts = np.fromiter((len(t) for t in timelines), dtype=np.int64, count=len(timelines))
        tweet_ids = np.fromiter(
            (int(m) for t in timelines for m, _ in t), dtype=np.int64, count=int(counts.sum())
        )
        created = np.fromiter(
            (int(s) for t in timelines for _, s in t), dtype=np.int64, count=int(counts.sum())
        )
        cands = Candidates(tweet_ids, np.repeat(authors, counts), created, "followees")
        if len(cands) == 0:
            return cands
        seen = self.client.smismember(self._key("seen", user_id), tweet_ids.tolist())
        return _newest(cands.take(np.flatnonzero(~np.asarray(seen, dtype=bool))), limit)

    def _cold_start(self, request_us: int, limit: int) -> Candidates:
        pool = self.client.zrevrange(self._key("popular"), 0, _POPULAR_POOL - 1)
        ids = np.fromiter((int(m) for m in pool), dtype=np.int64, count=len(pool))
        cands = self._lookup(ids, "cold_start")
        window = (cands.created_us > request_us - self.cold_start_us) & (
            cands.created_us <= request_us
        )
        return _newest(cands.take(np.flatnonzero(window)[:limit]), limit)

    def lookup(self, tweet_ids: np.ndarray) -> Candidates:
        """Authors and creation times of the given tweets, in input order; unknown ones dropped."""
        return self._call(lambda: self._lookup(np.asarray(tweet_ids, dtype=np.int64), "request"))

    def _lookup(self, tweet_ids: np.ndarray, source: str) -> Candidates:
        if len(tweet_ids) == 0:
            return empty_candidates(source)
        now = time.monotonic()
        slots, known = self._facts.lookup(tweet_ids, now)
        facts = np.zeros((len(tweet_ids), 2), dtype=np.int64)
        facts[known] = self._facts.values[slots[known]]
        asked = np.flatnonzero(~known)
        if len(asked):
            fields = tweet_ids[asked].tolist()
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hmget(self._key("tweet_author"), fields)
                pipe.hmget(self._key("tweet_created"), fields)
                authors, created = pipe.execute()
            pairs = list(zip(authors, created, strict=True))
            found = np.fromiter((None not in p for p in pairs), dtype=bool, count=len(asked))
            new = np.asarray(
                [(int(a), int(c)) for a, c in itertools.compress(pairs, found)], dtype=np.int64
            ).reshape(-1, 2)
            facts[asked[found]] = new
            known[asked[found]] = True
            self._facts.store(tweet_ids[asked[found]], new, [], now)
        return Candidates(tweet_ids[known], facts[known, 0], facts[known, 1], source)

    def record(
        self, impressions: Sequence[tuple[int, int, int]], engaged_tweets: Sequence[int]
    ) -> None:
        """Raise last visits, add to seen sets and count engagements."""

        def write() -> None:
            with self.client.pipeline(transaction=False) as pipe:
                for user, tweet, ts_us in impressions:
                    pipe.sadd(self._key("seen", user), tweet)
                    pipe.zadd(self._key("last_visit"), {str(user): ts_us}, gt=True)
                for tweet in engaged_tweets:
                    pipe.zincrby(self._key("popular"), 1, str(tweet))
                pipe.execute()

        self._call(write)

    def known(self, user_ids: np.ndarray, tweet_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which users are in the ``users`` set, which tweets have facts: one round trip.

        Raises:
            CandidateStoreNotLoaded: no load marker (an empty store knows nobody).
            CandidateStoreUnavailable: Redis could not be read.
        """
        users = np.asarray(user_ids, dtype=np.int64)
        tweets = np.asarray(tweet_ids, dtype=np.int64)

        def read() -> tuple[np.ndarray, np.ndarray]:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.exists(self._key(LOADED_KEY))
                if len(users):
                    pipe.smismember(self._key("users"), users.tolist())
                if len(tweets):
                    pipe.hmget(self._key("tweet_author"), tweets.tolist())
                replies = pipe.execute()
            if not replies[0]:
                raise CandidateStoreNotLoaded(
                    f"redis candidate store {self.prefix!r} is empty (not loaded): "
                    f"run `{REBUILD_COMMAND}`"
                )
            rest = iter(replies[1:])
            user_mask = np.asarray(next(rest), dtype=bool) if len(users) else np.zeros(0, bool)
            tweet_mask = (
                np.fromiter((v is not None for v in next(rest)), dtype=bool, count=len(tweets))
                if len(tweets)
                else np.zeros(0, bool)
            )
            return user_mask, tweet_mask

        result: tuple[np.ndarray, np.ndarray] = self._call(read)
        return result

    def loaded(self) -> dict[str, str] | None:
        """The load marker (load time and counts), or None when the store is not loaded."""
        marker = self._call(lambda: self.client.hgetall(self._key(LOADED_KEY)))
        if not marker:
            return None
        return {reply_text(k): reply_text(v) for k, v in marker.items()}


def load_redis_candidates(
    client: Any,
    world: Path,
    actions: ActionSet,
    prefix: str,
    max_timeline: int = 1000,
    chunk: int = 5000,
    mark: bool = True,
) -> dict[str, int]:
    """Write the Redis structures of :class:`RedisCandidates` from the world tables.

    Replaces what is under ``prefix``. Timelines keep each author's newest
    ``max_timeline`` tweets (a feed never needs more). The ``loaded`` marker
    (time and counts) is written last: until then a reader sees "not loaded".
    ``mark=False`` leaves it to the caller (:func:`mark_loaded`), who has more to
    write first (``feedrank serve-state rebuild`` replays the served events).

    Returns:
        How many follows, tweets, users with a last visit and seen pairs were written.
    """
    key = RedisCandidates(client, prefix)._key  # pylint: disable=protected-access
    for stale in client.scan_iter(match=f"{prefix}*", count=10_000):
        client.unlink(stale)
    follows = read_table(FOLLOWS, world)
    tweets = read_table(TWEETS, world)
    visits = read_table(VISITS, world)
    user_ids = read_table(USERS, world)["user_id"].to_numpy()
    shown = read_table(IMPRESSIONS, world).select(["user_id", "tweet_id"])

    def pipelined(rows: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> None:
        for lo in range(0, len(rows), chunk):
            with client.pipeline(transaction=False) as pipe:
                for command, args, kwargs in rows[lo : lo + chunk]:
                    getattr(pipe, command)(*args, **kwargs)
                pipe.execute()

    def grouped(users: np.ndarray, values: np.ndarray) -> list[tuple[int, list[int]]]:
        order = np.argsort(users, kind="stable")
        users, values = users[order], values[order]
        cuts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        return [
            (int(users[a]), values[a:b].tolist())
            for a, b in zip(cuts, [*cuts[1:], len(users)], strict=True)
        ]

    f_user, f_author = follows["user_id"].to_numpy(), follows["author_id"].to_numpy()
    rows: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("sadd", (key("follows", u), *authors), {}) for u, authors in grouped(f_user, f_author)
    ]
    t_id, t_author = tweets["tweet_id"].to_numpy(), tweets["author_id"].to_numpy()
    t_created = _micros(tweets["created_at"])
    for author, index in grouped(t_author, np.arange(len(t_id))):
        newest = sorted(index, key=lambda i: t_created[i])[-max_timeline:]
        mapping = {str(t_id[i]): int(t_created[i]) for i in newest}
        rows.append(("zadd", (key("timeline", author), mapping), {}))
    for lo in range(0, len(t_id), chunk):
        part = slice(lo, lo + chunk)
        rows.append(
            (
                "hset",
                (key("tweet_author"),),
                {"mapping": dict(zip(t_id[part].tolist(), t_author[part].tolist(), strict=True))},
            )
        )
        rows.append(
            (
                "hset",
                (key("tweet_created"),),
                {"mapping": dict(zip(t_id[part].tolist(), t_created[part].tolist(), strict=True))},
            )
        )
    v_user, v_time = visits["user_id"].to_numpy(), _micros(visits["visit_time"])
    last = {u: max(times) for u, times in grouped(v_user, v_time)}
    users = list(last)
    for lo in range(0, len(users), chunk):
        part = {str(u): int(last[u]) for u in users[lo : lo + chunk]}
        rows.append(("zadd", (key("last_visit"), part), {}))
    pairs = grouped(shown["user_id"].to_numpy(), shown["tweet_id"].to_numpy())
    rows += [("sadd", (key("seen", u), *tw), {}) for u, tw in pairs]
    rows += [
        ("sadd", (key("users"), *user_ids[lo : lo + chunk].tolist()), {})
        for lo in range(0, len(user_ids), chunk)
    ]
    pop_ids, pop_counts = _positive_engagement(world, actions)
    for lo in range(0, len(pop_ids), chunk):
        part = dict(
            zip(
                pop_ids[lo : lo + chunk].astype(str).tolist(),
                pop_counts[lo : lo + chunk].tolist(),
                strict=True,
            )
        )
        rows.append(("zadd", (key("popular"), part), {}))
    pipelined(rows)
    counts = {
        "users": len(user_ids),
        "follows": len(f_user),
        "tweets": len(t_id),
        "last_visits": len(last),
        "seen": shown.num_rows,
    }
    if mark:
        mark_loaded(client, prefix, counts)
    return counts


def mark_loaded(client: Any, prefix: str, counts: dict[str, int]) -> None:
    """Write the ``loaded`` marker: the time and counts of the load under ``prefix``."""
    client.hset(f"{prefix}{LOADED_KEY}", mapping={"loaded_at": f"{time.time():.3f}", **counts})
