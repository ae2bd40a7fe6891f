"""Generate the synthetic world: users, follow graph, tweets, visits, impressions.

Everything is vectorised with numpy. The impressions are drawn by shard of
users (:func:`generate_world`), in this process or as Ray tasks, and in chunks
of visits inside a shard, so memory stays bounded. The tables written are the
observable world (``world/``) and the hidden truth (``truth/``): the oracle's
true probabilities per impression and the latent state.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import feather

from core import tables
from core.actions import IMPRESSION, ActionSet, load_actions
from core.ray_tasks import Runner, run_local
from simulation.config import WorldConfig
from simulation.truth import Latent, draw_latent, sample_outcomes, true_probabilities

US_PER_DAY = 86_400_000_000
_VISIT_CHUNK = 100_000
WORLD_CONFIG_FILE = "world.json"


@dataclass(frozen=True)
class WorldSummary:
    """Counts of what was generated."""

    users: int
    follows: int
    tweets: int
    visits: int
    impressions: int
    events: int
    shards: int
    """Impression shards (:func:`shard_plan`)."""


def load_world_config(world_dir: Path) -> WorldConfig:
    """The config a world was generated with (its ``world.json``)."""
    path = world_dir / WORLD_CONFIG_FILE
    try:
        return WorldConfig.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise tables.TableError(f"{path}: no such file (run `feedrank data generate`)") from None
    except ValueError as exc:
        raise tables.TableError(f"{path}: invalid world config: {exc}") from exc


def world_end(config: WorldConfig) -> datetime:
    """The last instant of the simulated period: "now" for the online store."""
    return config.start + timedelta(days=config.days)


def _micros(config: WorldConfig) -> int:
    return int(config.start.timestamp() * 1_000_000)


def _ts(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64), type=pa.int64()).cast(tables.TS)


def build_follows(rng: np.random.Generator, config: WorldConfig, latent: Latent) -> np.ndarray:
    """A directed follow graph with a heavy-tailed follower distribution.

    Popularity is Pareto-distributed; each user follows some authors drawn by
    popularity alone and some drawn by popularity within a topic the user is
    interested in (homophily). Returns (n, 2) int64 pairs (user, author), unique.
    """
    n = config.n_users
    popularity = rng.pareto(config.popularity_alpha, n) + 1.0
    followees = np.clip(rng.poisson(config.mean_followees, n), 1, n - 1)
    users = np.repeat(np.arange(n, dtype=np.int64), followees)
    topical = rng.random(len(users)) < config.topical_follow_share

    # Global draws by popularity: inverse CDF over the cumulative popularity.
    cum = np.cumsum(popularity)
    authors = np.searchsorted(cum, rng.random(len(users)) * cum[-1], side="right")

    # Topical draws: authors grouped by main topic, a uniform draw inside the
    # segment of the cumulative popularity that belongs to the chosen topic.
    main_topic = latent.author_topics.argmax(axis=1)
    order = np.argsort(main_topic, kind="stable")
    cum_t = np.cumsum(popularity[order])
    seg_end = np.searchsorted(main_topic[order], np.arange(config.n_topics), side="right")
    seg_lo = np.concatenate([[0.0], cum_t])[np.r_[0, seg_end[:-1]]]
    seg_hi = np.concatenate([[0.0], cum_t])[seg_end]
    u_interest = latent.interests[users[topical]].cumsum(axis=1)
    topic = (u_interest < rng.random(len(u_interest))[:, None]).sum(axis=1)
    topic = np.minimum(topic, config.n_topics - 1)
    draw = seg_lo[topic] + rng.random(len(topic)) * (seg_hi[topic] - seg_lo[topic])
    pos = np.minimum(np.searchsorted(cum_t, draw, side="right"), n - 1)
    empty = seg_hi[topic] <= seg_lo[topic]
    authors[topical] = np.where(empty, authors[topical], order[pos])

    pairs = np.stack([users, authors.astype(np.int64)], axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0)


def shift_interests(rng: np.random.Generator, latent: Latent, share: float) -> Latent:
    """Move a share of users' interests to other topics (a rotation of their topic mix)."""
    n_users, n_topics = latent.interests.shape
    moved = np.flatnonzero(rng.random(n_users) < share)
    offsets = rng.integers(1, n_topics, size=len(moved))
    columns = (np.arange(n_topics)[None, :] - offsets[:, None]) % n_topics
    interests = latent.interests.copy()
    interests[moved] = latent.interests[moved[:, None], columns]
    return replace(latent, interests=interests)


def build_tweets(rng: np.random.Generator, config: WorldConfig, latent: Latent) -> dict:
    """Tweets: author, topic (from the author's mix), media type, length, time."""
    n = config.n_users
    rate = config.tweets_per_author_day * rng.lognormal(-0.32, 0.8, n)
    counts = rng.poisson(rate * config.days)
    authors = np.repeat(np.arange(n, dtype=np.int64), counts)
    created = _micros(config) + (rng.random(len(authors)) * config.days * US_PER_DAY).astype(
        np.int64
    )
    order = np.argsort(created, kind="stable")
    authors, created = authors[order], created[order]
    mix = latent.author_topics[authors].cumsum(axis=1)
    topic = np.minimum((mix < rng.random(len(authors))[:, None]).sum(axis=1), config.n_topics - 1)
    media = rng.choice(4, size=len(authors), p=[0.55, 0.25, 0.1, 0.1])
    length = np.clip(rng.normal(120, 70, len(authors)), 5, 280)
    return {
        "tweet_id": np.arange(len(authors), dtype=np.int64),
        "author_id": authors,
        "topic": topic.astype(np.int32),
        "media_type": media.astype(np.int32),
        "length": length.astype(np.int32),
        "created_at": created,
    }


def build_visits(rng: np.random.Generator, config: WorldConfig) -> dict:
    """Feed visits, several a day per user, each with the user's previous visit time."""
    n = config.n_users
    activity = config.visits_per_user_day * rng.lognormal(-0.18, 0.6, n)
    counts = rng.poisson(activity * config.days)
    users = np.repeat(np.arange(n, dtype=np.int64), counts)
    times = _micros(config) + (rng.random(len(users)) * config.days * US_PER_DAY).astype(np.int64)
    order = np.lexsort((times, users))
    users, times = users[order], times[order]
    first = np.r_[True, users[1:] != users[:-1]]
    prev = np.where(first, _micros(config), np.r_[0, times[:-1]])
    return {
        "visit_id": np.arange(len(users), dtype=np.int64),
        "user_id": users,
        "visit_time": times,
        "prev_visit_time": prev,
    }


def candidates(
    follows: np.ndarray, tweets: dict, visits: dict, max_feed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The brief's baseline candidates: followees' tweets since the user's last visit.

    A tweet reaches each follower of its author at the follower's first visit
    at or after the tweet's creation, which is exactly the visit whose window
    (previous visit, this visit] holds it. So one search per (tweet, follower)
    pair in the visits sorted by (user, time) finds every candidate; it is
    cheaper than one search per (visit, followee) pair, since most pairs of
    the latter kind hold no tweet. Each visit keeps its newest ``max_feed``.

    Returns:
        (visit index, tweet id) pairs, ordered by visit then newest first.
    """
    if len(follows) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    by_author = follows[np.argsort(follows[:, 1], kind="stable")]
    n_authors = int(max(by_author[:, 1].max(), tweets["author_id"].max())) + 1
    starts = np.searchsorted(by_author[:, 1], np.arange(n_authors + 1))
    n_followers = starts[tweets["author_id"] + 1] - starts[tweets["author_id"]]

    t0 = min(int(visits["visit_time"].min()), int(tweets["created_at"].min()))
    span = np.int64(1) << np.int64(42)  # > the world's length in µs: keys never overlap
    visit_keys = visits["user_id"] * span + (visits["visit_time"] - t0)

    parts_visit, parts_tweet = [], []
    chunk = 50_000
    for lo in range(0, len(n_followers), chunk):
        counts = n_followers[lo : lo + chunk]
        pair_tweet = np.repeat(np.arange(lo, lo + len(counts)), counts)
        within = np.arange(len(pair_tweet)) - np.repeat(np.cumsum(counts) - counts, counts)
        follower = by_author[starts[tweets["author_id"][pair_tweet]] + within, 0]
        query = follower * span + (tweets["created_at"][pair_tweet] - t0)
        visit = np.searchsorted(visit_keys, query, side="left")
        found = visit < len(visit_keys)
        found[found] &= visits["user_id"][visit[found]] == follower[found]
        parts_visit.append(visit[found])
        parts_tweet.append(pair_tweet[found])
    cand_visit = np.concatenate(parts_visit)
    cand_tweet = np.concatenate(parts_tweet).astype(np.int64)

    created = tweets["created_at"][cand_tweet]
    order = np.lexsort((-created, cand_visit))
    cand_visit, cand_tweet = cand_visit[order], cand_tweet[order]
    visit_start = np.searchsorted(cand_visit, cand_visit, side="left")
    keep = (np.arange(len(cand_visit)) - visit_start) < max_feed
    return cand_visit[keep], cand_tweet[keep]


def generate_world(
    config: WorldConfig,
    out_dir: Path,
    actions: ActionSet | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    run: Runner = run_local,
) -> WorldSummary:
    """Generate the world into ``out_dir/world`` and its ground truth into ``out_dir/truth``.

    Users, follows, tweets and visits are drawn here, in one random stream.
    The impressions (candidates, slots, outcomes: nearly all of the rows and
    the time) are drawn by shard: blocks of whole users of about
    ``config.shard_visits`` visits (:func:`shard_plan`), shard 0 continuing
    the main stream and shard k drawing from its own, ``(seed, 2, k)``. So a
    config gives one world whatever runs the shards: ``run`` is
    :func:`core.ray_tasks.run_local` (shard after shard) or
    :func:`core.ray_tasks.run_on_ray`, and a one-shard world is what one
    stream gives. Each shard writes its rows to a staging folder (Arrow IPC,
    uncompressed: cheap to write and read back); they are then streamed into
    each table's parquet file, so no process holds every impression.

    Args:
        config: size and shape of the world.
        out_dir: data folder; existing tables are replaced atomically.
        actions: the engagement actions (default: core/actions.yaml).
        progress: called with (shards done, shards total) as shards finish.
    """
    actions = actions or load_actions()
    rng = np.random.default_rng(config.seed)
    latent = draw_latent(rng, config.n_users, config.n_topics, len(actions.names))
    follows = build_follows(rng, config, latent)
    if config.interest_shift > 0:
        # A stream of its own: the shifted world differs from the unshifted one
        # only in what its users now like.
        shift_rng = np.random.default_rng([config.seed, 1])
        latent = shift_interests(shift_rng, latent, config.interest_shift)
    tweets = build_tweets(rng, config, latent)
    visits = build_visits(rng, config)

    world, truth = out_dir / "world", out_dir / "truth"
    start = _micros(config)
    tables.write_table(
        pa.table(
            {
                "user_id": np.arange(config.n_users, dtype=np.int64),
                "created_at": _ts(
                    start - rng.integers(30, 3000, config.n_users, dtype=np.int64) * US_PER_DAY
                ),
            }
        ),
        tables.USERS,
        world,
    )
    tables.write_table(
        pa.table({"user_id": follows[:, 0], "author_id": follows[:, 1]}), tables.FOLLOWS, world
    )
    tables.write_table(
        pa.table({**tweets, "created_at": _ts(tweets["created_at"])}), tables.TWEETS, world
    )
    tables.write_table(
        pa.table(
            {
                **visits,
                "visit_time": _ts(visits["visit_time"]),
                "prev_visit_time": _ts(visits["prev_visit_time"]),
            }
        ),
        tables.VISITS,
        world,
    )

    bounds = shard_plan(visits["user_id"], config.shard_visits)
    staging = out_dir / ".world-shards"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        shared = _Shared(config, actions, latent, follows, tweets, visits, staging)
        shards = [
            (k, int(lo), int(hi), rng if k == 0 else np.random.default_rng([config.seed, 2, k]))
            for k, (lo, hi) in enumerate(itertools.pairwise(bounds))
        ]
        counts = run(_impression_shard, shared, shards, progress)
        offsets = np.r_[0, np.cumsum(counts)[:-1]].astype(int)
        run(_numbered_shard, shared, [(k, int(first)) for k, first in enumerate(offsets)])
        parts = {
            name: [staging / f"{name}-{k}.arrow" for k in range(len(shards))]
            for name in ("impressions", "oracle", "events")
        }
        # Arrow releases the GIL while encoding parquet: the three big tables in parallel.
        with ThreadPoolExecutor(max_workers=3) as pool:
            writes = [
                pool.submit(tables.concat_parts, parts["impressions"], tables.IMPRESSIONS, world),
                pool.submit(tables.concat_parts, parts["oracle"], tables.ORACLE, truth),
                pool.submit(tables.concat_parts, parts["events"], tables.EVENTS, world),
            ]
            rows = [write.result() for write in writes]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    latent.save(truth / "latent.npz")
    # Written last: a world.json means every table of this world is in place.
    tmp = world / f".{WORLD_CONFIG_FILE}.tmp"
    tmp.write_text(config.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(world / WORLD_CONFIG_FILE)
    return WorldSummary(
        users=config.n_users,
        follows=len(follows),
        tweets=len(tweets["tweet_id"]),
        visits=len(visits["visit_id"]),
        impressions=rows[0],
        events=rows[2],
        shards=len(shards),
    )


def shard_plan(visit_user: np.ndarray, shard_visits: int) -> np.ndarray:
    """Visit indices that cut the visits into shards of whole users, about ``shard_visits`` each.

    ``visit_user`` is sorted (visits are in (user, time) order); each cut moves
    back to the first visit of the user it falls in. Returns the bounds, from 0
    to the number of visits.
    """
    n = len(visit_user)
    cuts = np.arange(shard_visits, n, shard_visits)
    cuts = np.searchsorted(visit_user, visit_user[cuts], side="left")
    return np.unique(np.r_[0, cuts, n])


@dataclass(frozen=True)
class _Shared:
    """What every impression shard reads: the world drawn so far, and where to write."""

    config: WorldConfig
    actions: ActionSet
    latent: Latent
    follows: np.ndarray
    tweets: dict
    visits: dict
    staging: Path


def _impression_shard(
    shared: _Shared, shard: int, lo: int, hi: int, rng: np.random.Generator
) -> int:
    """Impressions and oracle rows of visits ``lo:hi`` (whole users), ids from 0; their count."""
    config, visits = shared.config, shared.visits
    users = visits["user_id"][lo:hi]
    mine = slice(*np.searchsorted(shared.follows[:, 0], [users[0], users[-1] + 1]))
    local = {k: v[lo:hi] for k, v in visits.items()}
    all_visit, all_tweet = candidates(shared.follows[mine], shared.tweets, local, config.max_feed)
    impression_parts, oracle_parts = [], []
    for chunk in range(0, hi - lo, _VISIT_CHUNK):
        sl = slice(chunk, min(chunk + _VISIT_CHUNK, hi - lo))
        rows = slice(*np.searchsorted(all_visit, [sl.start, sl.stop]))
        cand_visit, cand_tweet = all_visit[rows] - sl.start, all_tweet[rows]
        imp, probs = _impressions(
            rng, shared.actions, shared.latent, shared.tweets, local, sl, cand_visit, cand_tweet
        )
        impression_parts.append(pa.table(imp))
        oracle_parts.append(
            pa.table({f"p_{a}": probs[:, j] for j, a in enumerate(shared.actions.names)})
        )
    impressions = pa.concat_tables(impression_parts)
    feather.write_feather(
        impressions, shared.staging / f"raw-impressions-{shard}.arrow", "uncompressed"
    )
    feather.write_feather(
        pa.concat_tables(oracle_parts), shared.staging / f"raw-oracle-{shard}.arrow", "uncompressed"
    )
    return impressions.num_rows


def _numbered_shard(shared: _Shared, shard: int, first_id: int) -> int:
    """A shard's impressions and oracle rows numbered from ``first_id``, and its events."""
    staging = shared.staging
    impressions = feather.read_table(staging / f"raw-impressions-{shard}.arrow")
    ids = pa.array(np.arange(first_id, first_id + impressions.num_rows, dtype=np.int64))
    when = impressions.schema.get_field_index("impression_time")
    impressions = impressions.set_column(
        when, "impression_time", impressions["impression_time"].cast(tables.TS)
    ).append_column("impression_id", ids)
    impressions = tables.validate(impressions, tables.IMPRESSIONS, staging / "impressions")
    oracle = feather.read_table(staging / f"raw-oracle-{shard}.arrow").add_column(
        0, "impression_id", ids
    )
    feather.write_feather(impressions, staging / f"impressions-{shard}.arrow", "uncompressed")
    oracle = tables.validate(oracle, tables.ORACLE, staging / "oracle")
    feather.write_feather(oracle, staging / f"oracle-{shard}.arrow", "uncompressed")
    events = impressions_to_events(impressions, shared.actions)
    events = tables.validate(events, tables.EVENTS, staging / "events")
    feather.write_feather(events, staging / f"events-{shard}.arrow", "uncompressed")
    return events.num_rows


def _impressions(
    rng: np.random.Generator,
    actions: ActionSet,
    latent: Latent,
    tweets: dict,
    visits: dict,
    sl: slice,
    cand_visit: np.ndarray,
    cand_tweet: np.ndarray,
) -> tuple[dict, np.ndarray]:
    """Impressions of one chunk of visits: slots, true probabilities, sampled labels.

    The logging policy shows each visit's candidates in a random order, so that
    a slot's position bias is independent of the tweet (unbiased training labels).
    """
    visit = cand_visit + sl.start
    users = visits["user_id"][visit]
    authors = tweets["author_id"][cand_tweet]
    when = visits["visit_time"][visit]
    shuffle = np.lexsort((rng.random(len(visit)), visit))
    first = np.searchsorted(visit[shuffle], visit[shuffle], side="left")
    position = np.empty(len(visit), dtype=np.int32)
    position[shuffle] = np.arange(len(visit)) - first
    age_days = (when - tweets["created_at"][cand_tweet]) / US_PER_DAY
    probs = true_probabilities(
        latent,
        actions,
        users,
        authors,
        tweets["topic"][cand_tweet],
        tweets["media_type"][cand_tweet],
        age_days,
    )
    outcomes, dwell = sample_outcomes(rng, probs, position, actions)
    imp = {
        "visit_id": visits["visit_id"][visit],
        "user_id": users,
        "tweet_id": cand_tweet,
        "author_id": authors,
        "position": position,
        "impression_time": when,
        **{a: outcomes[:, j] for j, a in enumerate(actions.names)},
        "dwell_seconds": dwell,
    }
    return imp, probs


def impressions_to_events(impressions: pa.Table, actions: ActionSet) -> pa.Table:
    """The long event log: one 'impression' event per impression plus one per action taken.

    Impression events come first in impression order, then each action's events.
    """
    ids = pc.cast(impressions["impression_id"], pa.string())
    parts = [
        pa.table(
            {
                "event_id": pc.binary_join_element_wise(ids, IMPRESSION, ":"),
                "user_id": impressions["user_id"],
                "tweet_id": impressions["tweet_id"],
                "action": pa.array([IMPRESSION] * impressions.num_rows, pa.string()),
                "dwell_seconds": impressions["dwell_seconds"],
                "timestamp": impressions["impression_time"],
            }
        )
    ]
    for name in actions.names:
        taken = impressions.filter(impressions[name])
        parts.append(
            pa.table(
                {
                    "event_id": pc.binary_join_element_wise(
                        pc.cast(taken["impression_id"], pa.string()), name, ":"
                    ),
                    "user_id": taken["user_id"],
                    "tweet_id": taken["tweet_id"],
                    "action": pa.array([name] * taken.num_rows, pa.string()),
                    "dwell_seconds": pa.nulls(taken.num_rows, pa.float32()),
                    "timestamp": taken["impression_time"],
                }
            )
        )
    # Not sorted: readers aggregate by period (DuckDB, Arrow), and a 10M-row sort
    # by string ids would double the cost of generating the world.
    return pa.concat_tables(parts)
