"""Batch feature pipelines: the world's tables in, time-stamped feature tables out.

Each feature table is a series of snapshots. A snapshot stamped at time T is
computed only from impressions strictly before T, so that Feast's
point-in-time join (latest row at or before the impression, within the
view's TTL) can never hand a training row a value from its future.

Snapshots are taken at each day boundary of the world, except the tweet
counters, which serving updates live and which are therefore stepped hourly
here (:func:`_tweet_engagement`). Windowed counters use
the last ``WINDOW_DAYS`` days. Rates are smoothed towards the global rate of
the same window (``PRIOR_WEIGHT`` pseudo-impressions), so that a user with two
impressions does not get a like rate of 50%.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import feather
from scipy import sparse

from core import tables
from core.actions import ActionSet, load_actions
from core.ray_tasks import Runner, run_local
from core.validation import (
    TableSummary,
    check_row_counts,
    check_table_rules,
    record_row_counts,
    validate_feature_part,
    world_key,
)

US_PER_DAY = 86_400_000_000
WINDOW_DAYS = 7
PRIOR_WEIGHT = 20.0
TOPIC_PRIOR_TWEETS = 1.0
"""Pseudo-tweets of the overall topic mix added to each author's topic histogram."""
COUNTER_STEP_US = 3_600_000_000
"""Time step of the tweet counter rows: a training row's counters are at most this old."""
POSITIVE = ("like", "reply", "retweet", "long_dwell")
"""Actions counted as a positive engagement in affinity features."""
TOP_AUTHORS = 32
"""Authors kept in a user's ``user_top_authors`` list (K, chosen in docs/affinity.md)."""


@dataclass(frozen=True)
class FeatureBuild:
    """What a pipeline run wrote: rows per feature table."""

    rows: dict[str, int]
    snapshots: int
    shards: int = 1


@dataclass(frozen=True)
class WorldFrame:
    """What every shard needs of the whole world, computed once by the driver.

    Everything else a feature needs is the shard's own entities' rows: a
    user's impressions and follows, an author's impressions, tweets and
    followers, a tweet's impressions.
    """

    actions: ActionSet
    n_users: int
    start_us: int
    """Midnight of the world's first day (its first tweet or impression)."""
    n_days: int
    totals: np.ndarray
    """(snapshots, 1 + actions): impressions and actions in each snapshot's
    window, over the whole world: the prior of every smoothed rate."""
    tweet_topic: np.ndarray
    """Topic of each tweet, by tweet id."""
    topic_mix: np.ndarray
    """(authors, snapshots, topics): see :func:`_author_topic_mix`."""

    @property
    def snap_days(self) -> np.ndarray:
        """Snapshots at day boundaries 1..n_days; the last one is "now" for serving."""
        return np.arange(1, self.n_days + 1)

    @property
    def n_topics(self) -> int:
        """Topics, the width of every topic list."""
        return int(self.topic_mix.shape[-1])


FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "user": ("user_id", ("user_stats", "user_author_affinity", "user_top_authors")),
    "author": ("author_id", ("author_stats",)),
    "tweet": ("tweet_id", ("tweet_content", "tweet_engagement")),
}
"""Shard families: the key their rows are partitioned by, and the tables they write.

A family's shard writes its rows in (keys, event_timestamp) order, and the
shards are contiguous key ranges: the parts, in range order, are the sorted table."""
SHARD_IMPRESSIONS = 4_000_000
"""About this many impressions per shard: what bounds one shard's memory."""


def _day_index(times_us: np.ndarray, start_us: int) -> np.ndarray:
    return ((times_us - start_us) // US_PER_DAY).astype(np.int64)


def _snapshot_ts(start_us: int, days: np.ndarray) -> pa.Array:
    return pa.array(start_us + days.astype(np.int64) * US_PER_DAY).cast(tables.TS)


def _window(daily: np.ndarray, window: int | None) -> np.ndarray:
    """Per-snapshot sums over the previous ``window`` days (None: all history).

    ``daily`` has shape (entities, days, metrics); snapshot s covers days < s,
    so the result has shape (entities, days + 1, metrics) with snapshot 0 empty.
    """
    cum = np.concatenate([np.zeros_like(daily[:, :1]), daily.cumsum(axis=1)], axis=1)
    if window is None:
        return cum
    lagged = np.concatenate([np.zeros_like(cum[:, :window]), cum[:, :-window]], axis=1)
    return cum - lagged


def _smoothed(count: np.ndarray, shown: np.ndarray, prior: np.ndarray) -> np.ndarray:
    return ((count + PRIOR_WEIGHT * prior) / (shown + PRIOR_WEIGHT)).astype(np.float32)


def _daily_counts(
    keys: np.ndarray, day: np.ndarray, values: np.ndarray, n_keys: int, n_days: int
) -> np.ndarray:
    """Sum ``values`` (rows, metrics) into a dense (keys, days, metrics) grid."""
    grid = np.zeros((n_keys * n_days, values.shape[1]), dtype=np.float64)
    np.add.at(grid, keys * n_days + day, values)
    return grid.reshape(n_keys, n_days, values.shape[1])  # pylint: disable=too-many-function-args


def _rate_columns(
    prefix: str, counts: np.ndarray, frame: WorldFrame, suffix: str
) -> dict[str, np.ndarray]:
    """Smoothed per-action rates from a (entities, snapshots, 1 + n_actions) count grid."""
    shown = counts[..., 0]
    out = {}
    for j, name in enumerate(frame.actions.names, start=1):
        prior = frame.totals[:, j] / np.maximum(frame.totals[:, 0], 1.0)
        out[f"{prefix}_{name}_rate{suffix}"] = _smoothed(counts[..., j], shown, prior[None, :])
    return out


def _per_impression(impressions: pa.Table, actions: ActionSet) -> np.ndarray:
    """(impressions, 1 + actions): a one for the impression, then each action's label."""
    labels = [impressions[a].to_numpy(zero_copy_only=False) for a in actions.names]
    ones = np.ones(impressions.num_rows)
    return np.stack([ones, *labels], axis=1).astype(np.float64)


def feature_shards(world_dir: Path, workers: int = 1) -> int:
    """Shards of a feature build: at least one per worker, at most ``SHARD_IMPRESSIONS`` each."""
    rows = tables.row_count(tables.IMPRESSIONS, world_dir)
    return max(workers, -(-rows // SHARD_IMPRESSIONS), 1)


def build_features(
    world_dir: Path,
    out_dir: Path,
    actions: ActionSet | None = None,
    *,
    run: Runner = run_local,
    workers: int = 1,
    shards: int | None = None,
) -> FeatureBuild:
    """Compute every feature table from ``world_dir`` into ``out_dir``.

    Users, authors and tweets are cut into ``shards`` contiguous id ranges;
    ``run`` computes the ranges (:func:`core.ray_tasks.run_local` in this
    process, :func:`core.ray_tasks.run_on_ray` on Ray) from the same shard
    functions, each staging its part of each table as an Arrow IPC file, and
    the tables are the same row for row either way. The parts are streamed,
    in id order, into the tables' files (:func:`_write_tables`), so no table
    is ever whole in memory.

    Args:
        workers: what ``run`` runs on (see :func:`core.ray_tasks.profile_runner`).
        shards: default :func:`feature_shards` for ``workers``.
    """
    actions = actions or load_actions()
    shards = shards or feature_shards(world_dir, workers)
    frame, last_event_us = _world_frame(world_dir, actions, run, shards)
    entities = {"user": frame.n_users, "author": frame.n_users, "tweet": len(frame.tweet_topic)}
    jobs = [(family, *ids) for family in FAMILIES for ids in _ranges(entities[family], shards)]
    out_dir.mkdir(parents=True, exist_ok=True)
    key = world_key(world_dir)
    # Ray tasks may still write when one fails: their leftovers must not hide its error.
    with tempfile.TemporaryDirectory(
        prefix=".parts-", dir=out_dir, ignore_cleanup_errors=True
    ) as staging:
        parts = run(_shard_tables, (world_dir, frame, Path(staging)), jobs)
        rows = _write_tables(parts, out_dir, key, last_event_us, actions)
    record_row_counts(out_dir, key, rows)
    return FeatureBuild(rows=rows, snapshots=frame.n_days, shards=shards)


def _ranges(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ranges ``(lo, hi)`` of the ids ``0..n-1``, in order."""
    return list(itertools.pairwise(np.linspace(0, n, shards + 1).round().astype(int).tolist()))


def _write_tables(
    parts: list[dict[str, Path]],
    out_dir: Path,
    key: str,
    last_event_us: int,
    actions: ActionSet,
) -> dict[str, int]:
    """Stream each table's parts, in order, into its file; the rows of each.

    Every part meets the table's row rules as it is written, and every table
    its own rules (from the parts' :class:`TableSummary`) and its row count
    against the last build: only then are the files renamed into place, one
    after the other, so a failed check leaves the previous tables.
    """
    rows = {}
    with contextlib.ExitStack() as files:
        for name in tables.FEATURE_TABLES:
            path = out_dir / f"{name}.parquet"
            paths = [part[name] for part in parts if name in part]
            summaries: list[TableSummary] = []
            tables.write_parts(
                _checked_parts(paths, name, path, actions, summaries),
                files.enter_context(tables.replaced_atomically(path)),
                tables.parts_schema(paths),
            )
            summary = sum(summaries, TableSummary())
            check_table_rules(summary, name, path, last_event_us)
            rows[name] = summary.rows
        check_row_counts(out_dir, key, rows)
    return rows


def _checked_parts(
    paths: list[Path],
    name: str,
    path: Path,
    actions: ActionSet,
    summaries: list[TableSummary],
) -> Iterator[pa.Table]:
    """The staged parts of table ``name``, in order, each checked by the table's row rules
    (errors name ``path``) as it is read; each part's summary is appended to ``summaries``."""
    for part in paths:
        table = feather.read_table(part, memory_map=True)
        validate_feature_part(table, name, path, actions)
        summaries.append(TableSummary.of(table))
        yield table


def _impression_days(
    shared: tuple[Path, ActionSet], lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """The impressions and actions per calendar day of the users ``lo..hi-1``:
    (days since 1970, sums, last time)."""
    world_dir, actions = shared
    impressions = tables.read_key_range(tables.IMPRESSIONS, world_dir, "user_id", lo, hi)
    times = impressions["impression_time"].cast(pa.int64()).to_numpy()
    days, inverse = np.unique(times // US_PER_DAY, return_inverse=True)
    sums = np.zeros((len(days), 1 + len(actions.names)))
    np.add.at(sums, inverse, _per_impression(impressions, actions))
    return days, sums, int(times.max()) if len(times) else None


def _world_frame(
    world_dir: Path, actions: ActionSet, run: Runner, shards: int
) -> tuple[WorldFrame, int]:
    """The :class:`WorldFrame` and the last impression time, from every shard's day sums."""
    n_users = tables.row_count(tables.USERS, world_dir)
    parts = run(_impression_days, (world_dir, actions), _ranges(n_users, shards))
    lasts = [last for _, _, last in parts if last is not None]
    if not lasts:
        raise tables.TableError(f"{world_dir / tables.IMPRESSIONS.file_name}: no impressions")
    days = np.concatenate([d for d, _, _ in parts])
    tweets = tables.read_table(tables.TWEETS, world_dir)
    tweet_created = tweets["created_at"].cast(pa.int64()).to_numpy()
    first_day = int(min(days.min(), tweet_created.min() // US_PER_DAY))
    start_us = first_day * US_PER_DAY
    n_days = int(days.max()) - first_day + 1
    daily = np.zeros((1, n_days, 1 + len(actions.names)))
    np.add.at(daily[0], days - first_day, np.concatenate([s for _, s, _ in parts]))
    snap_days = np.arange(1, n_days + 1)
    topic = tweets["topic"].to_numpy()
    frame = WorldFrame(
        actions=actions,
        n_users=n_users,
        start_us=start_us,
        n_days=n_days,
        totals=_window(daily, WINDOW_DAYS)[0, snap_days],
        tweet_topic=topic,
        topic_mix=_author_topic_mix(tweets, n_users, int(topic.max()) + 1, n_days, start_us),
    )
    return frame, max(lasts)


def _shard_tables(
    shared: tuple[Path, WorldFrame, Path], family: str, lo: int, hi: int
) -> dict[str, Path]:
    """One range of one family's tables, every entity with ``lo <= id < hi``, staged as
    Arrow IPC parts in the shared staging folder; their paths."""
    world_dir, frame, staging = shared
    key = FAMILIES[family][0]
    impressions = tables.read_key_range(tables.IMPRESSIONS, world_dir, key, lo, hi)
    per_imp = _per_impression(impressions, frame.actions)
    times = impressions["impression_time"].cast(pa.int64()).to_numpy()
    day = _day_index(times, frame.start_us)
    ids = np.arange(lo, hi, dtype=np.int64)
    if family == "tweet":
        built = {
            "tweet_content": _tweet_content(
                tables.read_key_range(tables.TWEETS, world_dir, key, lo, hi)
            ),
            "tweet_engagement": _tweet_engagement(
                frame.actions, per_imp, impressions["tweet_id"].to_numpy(), times
            ),
        }
    elif family == "author":
        follows = tables.read_key_range(tables.FOLLOWS, world_dir, key, lo, hi)
        tweets = tables.read_key_range(tables.TWEETS, world_dir, key, lo, hi)
        local = impressions["author_id"].to_numpy() - lo
        built = {"author_stats": _author_stats(frame, per_imp, local, day, follows, tweets, ids)}
    else:
        follows = tables.read_key_range(tables.FOLLOWS, world_dir, key, lo, hi)
        imp_user = impressions["user_id"].to_numpy()
        affinity = _user_author_affinity(
            frame, per_imp[:, 1:], imp_user, impressions["author_id"].to_numpy(), day
        )
        built = {
            "user_stats": _user_stats(
                frame,
                np.concatenate([per_imp, impressions["dwell_seconds"].to_numpy()[:, None]], axis=1),
                imp_user - lo,
                day,
                frame.tweet_topic[impressions["tweet_id"].to_numpy()],
                _follow_topics(follows, frame.topic_mix, ids),
                ids,
            ),
            "user_author_affinity": affinity,
            "user_top_authors": user_top_authors(affinity, TOP_AUTHORS),
        }
    staged = {}
    for name, table in built.items():
        staged[name] = staging / f"{name}-{lo:012d}.arrow"
        feather.write_feather(table, staged[name], compression="uncompressed")
    return staged


def _user_stats(
    frame: WorldFrame,
    values: np.ndarray,
    local_user: np.ndarray,
    day: np.ndarray,
    topics: np.ndarray,
    follow_topics: np.ndarray,
    ids: np.ndarray,
) -> pa.Table:
    """A user's own behaviour over the last week and over all history, their engagement
    rate per topic, and the topic mix of the authors they follow (``follow_topics``:
    users, snapshots, topics).

    Args:
        values: per impression, 1 + actions + dwell seconds.
        local_user: each impression's user as an index into ``ids``, the shard's users.
        topics: each impression's tweet topic.
    """
    n_users, n_days, n_topics, snap_days = len(ids), frame.n_days, frame.n_topics, frame.snap_days
    daily = _daily_counts(local_user, day, values, n_users, n_days)
    counts = _window(daily, WINDOW_DAYS)[:, snap_days]
    every = _window(daily, None)[:, snap_days]
    n_act = len(frame.actions.names)
    shown = counts[..., 0]
    columns = {
        "user_impressions_7d": shown.astype(np.int64),
        **_rate_columns("user", counts[..., : 1 + n_act], frame, "_7d"),
        "user_mean_dwell_7d": (counts[..., -1] / np.maximum(shown, 1.0)).astype(np.float32),
        "user_impressions_all": every[..., 0].astype(np.int64),
        **_rate_columns("user", every[..., : 1 + n_act], frame, "_all"),
    }
    # Topic affinity over all history: positive engagements per impression, per topic.
    positive = _summed(values[:, 1 : 1 + n_act], frame.actions, POSITIVE)
    per_topic = np.stack([np.ones_like(positive), positive], axis=1)
    grid = _daily_counts(local_user * n_topics + topics, day, per_topic, n_users * n_topics, n_days)
    topic_counts = _window(grid, None)[:, snap_days].reshape(n_users, n_topics, len(snap_days), 2)
    user_total = topic_counts.sum(axis=1)
    user_prior = (user_total[..., 1] + 1.0) / (user_total[..., 0] + 10.0)
    topic_rate = _smoothed(
        topic_counts[..., 1], topic_counts[..., 0], user_prior[:, None, :]
    ).transpose(0, 2, 1)
    flat = {k: v.reshape(-1) for k, v in columns.items()}
    return pa.table(
        {
            "user_id": np.repeat(ids, len(snap_days)),
            "event_timestamp": _snapshot_ts(frame.start_us, np.tile(snap_days, n_users)),
            **flat,
            "user_topic_rates": _list_column(topic_rate),
            "user_follow_topics": _list_column(follow_topics),
        }
    )


def _summed(labels: np.ndarray, actions: ActionSet, names: tuple[str, ...]) -> np.ndarray:
    """Per impression, how many of the actions ``names`` it got."""
    return labels[:, [actions.names.index(a) for a in names]].sum(axis=1)


def _author_stats(
    frame: WorldFrame,
    per_imp: np.ndarray,
    local_author: np.ndarray,
    day: np.ndarray,
    follows: pa.Table,
    tweets: pa.Table,
    ids: np.ndarray,
) -> pa.Table:
    """What an author's tweets received over the last week and over all history, the
    author's reach and topics.

    ``ids`` are the range's authors, consecutive; ``local_author`` indexes
    them, as ``author_id - ids[0]`` does for the range's ``follows`` and ``tweets``.
    """
    first = int(ids[0]) if len(ids) else 0
    n_authors, n_days, snap_days = len(ids), frame.n_days, frame.snap_days
    daily = _daily_counts(local_author, day, per_imp, n_authors, n_days)
    counts = _window(daily, WINDOW_DAYS)[:, snap_days]
    every = _window(daily, None)[:, snap_days]
    tweet_day = _day_index(tweets["created_at"].cast(pa.int64()).to_numpy(), frame.start_us)
    posted = _window(
        _daily_counts(
            tweets["author_id"].to_numpy() - first,
            np.clip(tweet_day, 0, n_days - 1),
            np.ones((tweets.num_rows, 1)),
            n_authors,
            n_days,
        ),
        WINDOW_DAYS,
    )[:, snap_days, 0]
    followers = np.bincount(follows["author_id"].to_numpy() - first, minlength=n_authors)
    columns = {
        "author_followers": np.repeat(followers[:, None], len(snap_days), axis=1),
        "author_tweets_7d": posted.astype(np.int64),
        "author_impressions_7d": counts[..., 0].astype(np.int64),
        **_rate_columns("author", counts, frame, "_7d"),
        "author_impressions_all": every[..., 0].astype(np.int64),
        **_rate_columns("author", every, frame, "_all"),
    }
    return pa.table(
        {
            "author_id": np.repeat(ids, len(snap_days)),
            "event_timestamp": _snapshot_ts(frame.start_us, np.tile(snap_days, n_authors)),
            **{k: v.reshape(-1) for k, v in columns.items()},
            "author_topic_mix": _list_column(frame.topic_mix[ids]),
        }
    )


def _list_column(values: np.ndarray) -> pa.Array:
    """A (entities, snapshots, width) array as one list<float32> per (entity, snapshot) row."""
    return pa.FixedSizeListArray.from_arrays(
        pa.array(values.reshape(-1), pa.float32()), values.shape[-1]
    ).cast(pa.list_(pa.float32()))


def _author_topic_mix(
    tweets: pa.Table, n_users: int, n_topics: int, n_days: int, start_us: int
) -> np.ndarray:
    """Each author's share of tweets per topic, all tweets before each snapshot.

    Smoothed with ``TOPIC_PRIOR_TWEETS`` pseudo-tweets of the overall mix, so an
    author who posted nothing yet has the overall mix. Shape (users, snapshots, topics).
    """
    tweet_day = _day_index(tweets["created_at"].cast(pa.int64()).to_numpy(), start_us)
    keys = tweets["author_id"].to_numpy() * n_topics + tweets["topic"].to_numpy()
    grid = _daily_counts(
        keys,
        np.clip(tweet_day, 0, n_days - 1),
        np.ones((tweets.num_rows, 1)),
        n_users * n_topics,
        n_days,
    )
    snap_days = np.arange(1, n_days + 1)
    counts = _window(grid, None)[:, snap_days, 0].reshape(n_users, n_topics, len(snap_days))
    counts = counts.transpose(0, 2, 1)
    overall = counts.sum(axis=0)
    prior = overall / np.maximum(overall.sum(axis=1, keepdims=True), 1.0)
    total = counts.sum(axis=2, keepdims=True)
    return (counts + TOPIC_PRIOR_TWEETS * prior[None]) / (total + TOPIC_PRIOR_TWEETS)


def _follow_topics(follows: pa.Table, topic_mix: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The mean topic mix of the authors each user follows (users without follows: the mean
    over all authors). Shape (users, snapshots, topics), like ``topic_mix``.

    ``follows`` are the rows of the range's users ``ids`` (consecutive);
    ``topic_mix`` has every author.
    """
    n_local = len(ids)
    first = int(ids[0]) if n_local else 0
    graph = sparse.csr_matrix(
        (
            np.ones(follows.num_rows),
            (follows["user_id"].to_numpy() - first, follows["author_id"].to_numpy()),
        ),
        shape=(n_local, topic_mix.shape[0]),
    )
    n_follows = np.asarray(graph.sum(axis=1)).reshape(-1)
    summed = np.asarray(graph @ topic_mix.reshape(topic_mix.shape[0], -1))
    summed = summed.reshape(n_local, *topic_mix.shape[1:])
    mean = summed / np.maximum(n_follows, 1.0)[:, None, None]
    return np.where(n_follows[:, None, None] > 0, mean, topic_mix.mean(axis=0, keepdims=True))


def _tweet_content(tweets: pa.Table) -> pa.Table:
    """What a tweet is, stamped at its creation: it never changes."""
    created = tweets["created_at"]
    return pa.table(
        {
            "tweet_id": tweets["tweet_id"],
            "event_timestamp": created,
            "tweet_topic": tweets["topic"].cast(pa.int64()),
            "tweet_media_type": tweets["media_type"].cast(pa.int64()),
            "tweet_length": tweets["length"].cast(pa.int64()),
            "tweet_created_s": pa.array(created.cast(pa.int64()).to_numpy() // 1_000_000),
        }
    )


def _tweet_engagement(
    actions: ActionSet, per_imp: np.ndarray, imp_tweet: np.ndarray, imp_time: np.ndarray
) -> pa.Table:
    """Engagement a tweet received so far, close to what serving's live counters see.

    One row per tweet and ``COUNTER_STEP_US`` step in which it was shown,
    stamped at the step's end with the counts of every impression before it:
    no impression sees its own outcome, and a training row's counters are at
    most one step old. Serving pushes the same counters through the
    PushSource as events arrive. Daily snapshots left them empty for tweets
    of the same day: two thirds of the training rows, where serving has live
    counts. One row per impression would match serving exactly, but made
    Feast's point-in-time join 2.8x slower (16x the rows of daily snapshots).
    """
    step = imp_time // COUNTER_STEP_US
    order = np.lexsort((step, imp_tweet))
    tweet, step = imp_tweet[order], step[order]
    starts = _run_starts(tweet, step)
    added = np.add.reduceat(per_imp[order], starts, axis=0) if len(starts) else per_imp[:0]
    tweet, step = tweet[starts], step[starts]
    running = added.cumsum(axis=0)
    is_first = np.zeros(len(tweet), dtype=bool)
    is_first[_run_starts(tweet)] = True
    first = np.maximum.accumulate(np.where(is_first, np.arange(len(tweet)), 0))
    counts = running - running[first] + added[first]
    return pa.table(
        {
            "tweet_id": tweet.astype(np.int64),
            "event_timestamp": pa.array((step + 1) * COUNTER_STEP_US).cast(tables.TS),
            "tweet_impressions": counts[:, 0].astype(np.int64),
            **{
                f"tweet_{a}_count": counts[:, j].astype(np.int64)
                for j, a in enumerate(actions.names, 1)
            },
        }
    )


def _run_starts(*keys: np.ndarray) -> np.ndarray:
    """Where each run of equal key tuples begins, in rows sorted by the keys."""
    change = np.zeros(len(keys[0]), dtype=bool)
    change[:1] = True
    for key in keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def _user_author_affinity(
    frame: WorldFrame,
    labels: np.ndarray,
    imp_user: np.ndarray,
    imp_author: np.ndarray,
    day: np.ndarray,
) -> pa.Table:
    """A user's history with an author, all time, one row per day the pair was active.

    ``ua_positive_rate`` is the pair's positive actions per impression, smoothed:
    a liked and long-dwelled tweet counts 2, so it lies in [0, the number of
    positive actions]. Counting impressions with any positive action instead
    (a share in [0, 1]) cost 0.0014 and 0.0020 of the lift share with two seed
    sets of the ensemble (2026-12-07, docs/training.md).
    """
    positive = _summed(labels, frame.actions, POSITIVE)
    negative = _summed(labels, frame.actions, tuple(frame.actions.negative))
    pairs = pd.DataFrame(
        {
            "user_id": imp_user,
            "author_id": imp_author,
            "day": day,
            "shown": 1.0,
            "positive": positive,
            "negative": negative,
        }
    )
    daily = pairs.groupby(["user_id", "author_id", "day"], sort=True).sum().reset_index()
    cum = daily.groupby(["user_id", "author_id"], sort=False)[["shown", "positive", "negative"]]
    cum = cum.cumsum()
    return pa.table(
        {
            "user_id": daily["user_id"].to_numpy(np.int64),
            "author_id": daily["author_id"].to_numpy(np.int64),
            "event_timestamp": _snapshot_ts(frame.start_us, daily["day"].to_numpy() + 1),
            "ua_impressions": cum["shown"].to_numpy(np.int64),
            "ua_positive_rate": _smoothed(
                cum["positive"].to_numpy(), cum["shown"].to_numpy(), np.float64(0.1)
            ),
            "ua_negative_count": cum["negative"].to_numpy(np.int64),
        }
    )


def user_top_authors(affinity: pa.Table, k: int) -> pa.Table:
    """Each user's ``k`` most shown authors and the pair features, one row per active day.

    A row stamped T holds, for every author the user met before T, the pair's
    latest ``user_author_affinity`` values, ranked by impressions (ties: lower
    author id first) and cut at ``k``. It equals the top ``k`` of the pair view
    as Feast would join it at T, so it is point in time the same way. A user's
    list changes only on a day the user saw a tweet, so those days get a row.
    """
    pairs = affinity.drop_columns("event_timestamp").to_pandas()
    pairs["day"] = affinity["event_timestamp"].cast(tables.TS).cast(pa.int64()).to_numpy()
    user_days = pairs[["user_id", "day"]].drop_duplicates()
    first = pairs.groupby(["user_id", "author_id"], sort=False)["day"].min().reset_index()
    # Every (user, active day, author met by then) cell, then the pair's latest row as of it.
    grid = first.merge(user_days, on="user_id", suffixes=("_first", ""))
    grid = grid[grid["day"] >= grid["day_first"]].drop(columns="day_first")
    latest = pd.merge_asof(
        grid.sort_values("day"),
        pairs.sort_values("day"),
        on="day",
        by=["user_id", "author_id"],
    )
    latest = latest.sort_values(
        ["user_id", "day", "ua_impressions", "author_id"], ascending=[True, True, False, True]
    )
    latest = latest[latest.groupby(["user_id", "day"], sort=False).cumcount() < k]
    user = latest["user_id"].to_numpy(np.int64)
    day = latest["day"].to_numpy(np.int64)
    starts = _run_starts(user, day)
    offsets = pa.array(np.r_[starts, len(latest)].astype(np.int32))

    def listed(column: str, dtype: pa.DataType) -> pa.Array:
        return pa.ListArray.from_arrays(offsets, pa.array(latest[column].to_numpy(), dtype))

    return pa.table(
        {
            "user_id": user[starts],
            "event_timestamp": pa.array(day[starts]).cast(tables.TS),
            "top_author_ids": listed("author_id", pa.int64()),
            "top_author_impressions": listed("ua_impressions", pa.int64()),
            "top_author_positive_rate": listed("ua_positive_rate", pa.float32()),
            "top_author_negative_count": listed("ua_negative_count", pa.int64()),
        }
    )
