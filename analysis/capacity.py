"""The capacity plan for the brief's scale, computed from the measured figures.

``docs/capacity.md`` is not written by hand: this script renders it from
``docs/figures.json`` (what the benchmarks printed, with the command and the
date) and :class:`Assumptions` (every number that was not measured, each with
its reason). So each figure of the plan traces to a benchmark or to a named
assumption, and ``--check`` (run by the unit tests) fails when the document
and the figures drift apart.

    .venv/bin/python -m analysis.capacity             # write docs/capacity.md
    .venv/bin/python -m analysis.capacity --check     # exit 1 if it is stale
    .venv/bin/python -m analysis.capacity --measure world   # after `feedrank demo`
    .venv/bin/python -m analysis.capacity --measure redis   # reads only, ~5 s

``--measure`` prints a figures section as JSON (to paste into figures.json):
``world`` reads the demo's parquet files, ``redis`` samples the keys of the
local Redis online store (``MEMORY USAGE``) and times pipelined ``HMGET`` of
real feature rows against the server's own CPU counters. Both only read.

Ends with ``RESULT {json}``: replicas, redis_shards, online_store_gb,
training_tb_per_day, peak_rps.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.workspace import REPO_ROOT

FIGURES = REPO_ROOT / "docs" / "figures.json"
OUTPUT = REPO_ROOT / "docs" / "capacity.md"
SECONDS_PER_DAY = 86_400
GB = 1e9
TB = 1e12

ENTITY_OF_VIEW: dict[str, str] = {
    "user_stats": "user",
    "author_stats": "author",
    "tweet_content": "tweet",
    "tweet_engagement": "tweet",
    "user_top_authors": "user",
}
"""The Redis key each feature view of ``ranker_v3`` is read from. Feast keeps one
hash per entity key, so a tweet's two views share one key, and so do the user's
stats and top-author list (measured: see ``redis.bytes_per_key``);
serving/features.py still sends one ``HMGET`` per view. The pair view
``user_author_affinity`` is not here: only ``ranker_v1``/``ranker_v2`` models read
it, and at this scale it would be 10.8 TB (docs/affinity.md)."""

NOT_MEASURED = "not measured yet"


def _assumption(value: float, why: str, source: str, rate: bool = False) -> Any:
    """A documented field: the value, why it is this value, and where it comes from.

    ``rate`` fields are shares in [0, 1]; the others must be positive.
    """
    bounds: dict[str, float] = {"ge": 0.0, "le": 1.0} if rate else {"gt": 0.0}
    return Field(value, description=why, json_schema_extra={"source": source}, **bounds)


class Assumptions(BaseModel):
    """Every number of the plan that no benchmark here can measure.

    Each field says why it has its value and where the value comes from, and
    the rendered document lists them all; change one here (or pass another
    instance to :func:`plan`) and regenerate.
    """

    model_config = ConfigDict(frozen=True)

    daily_users: float = _assumption(500e6, "Daily active users.", "the brief")
    fetches_per_user_day: float = _assumption(
        10, "Feed fetches (POST /rank calls) per user per day.", "the brief"
    )
    followees_per_user: float = _assumption(
        100,
        "Accounts a user follows; candidates come from them, so a request has at most "
        "this many distinct authors (serving/features.py reads each distinct key once).",
        "the brief",
    )
    peak_factor: float = _assumption(
        3.0,
        "Peak-hour rank calls over the daily average: diurnal peak of a global consumer "
        "app (~2x) plus margin for news spikes.",
        "planning assumption",
    )
    candidates_per_rank: float = _assumption(
        500, "Candidate tweets scored per /rank call (the upper bound).", "the issue (bar)"
    )
    planning_rps_per_replica: float = _assumption(
        150,
        "Rank calls/s one 2-core replica sustains, used ONLY while serve.rps_c8 is not measured.",
        "the issue's bar for benchmarks/serve_latency.py (>= 150 rps at concurrency 8)",
    )
    cores_per_replica: float = _assumption(
        2, "CPU cores per ranker replica (the benchmark machine's).", "this machine"
    )
    replica_cpu_target: float = _assumption(
        0.6,
        "Share of a replica's measured throughput planned for at peak: headroom for "
        "bursts, GC pauses and losing one zone of three.",
        "planning assumption",
    )
    cache_hit_user_stats: float = _assumption(
        0.0,
        "In-process cache hit rate, user_stats (60 s freshness): a user's next fetch is "
        "minutes away and lands on another replica, so ~0.",
        "planning assumption",
        rate=True,
    )
    cache_hit_author_stats: float = _assumption(
        0.7,
        "Hit rate, author_stats (60 s): followers are heavy-tailed (Pareto), so a few "
        "authors appear in most feeds.",
        "planning assumption; check with production cache counters",
        rate=True,
    )
    cache_hit_tweet_content: float = _assumption(
        0.8,
        "Hit rate, tweet_content (3600 s, immutable, shared by all users): popular recent "
        "tweets fill most feeds; the 200k-row cache holds the hot set.",
        "planning assumption; check with production cache counters",
        rate=True,
    )
    cache_hit_tweet_engagement: float = _assumption(
        0.5,
        "Hit rate, tweet_engagement (5 s freshness, live counters): only tweets seen "
        "again on the same replica within 5 s hit.",
        "planning assumption; check with production cache counters",
        rate=True,
    )
    redis_cpu_target: float = _assumption(
        0.5,
        "Share of a Redis shard's single command thread planned for at peak: headroom "
        "for replication, BGSAVE and hot keys.",
        "planning assumption",
    )
    push_writes_per_event: float = _assumption(
        1.0,
        "Redis writes (HSET of tweet_engagement) per logged event: no coalescing, the "
        "upper bound; a stream job coalescing per tweet per second writes far fewer. "
        "A write is costed like a read.",
        "serving/events.py pushes the touched tweets' counters per batch",
    )
    redis_gb_per_shard: float = _assumption(
        25,
        "Data per Redis shard: about half of a ~52 GB node, the rest for copy-on-write "
        "during BGSAVE / replica sync and client buffers.",
        "planning assumption (Redis operating practice)",
    )
    redis_fragmentation: float = _assumption(
        1.2,
        "Allocator overhead over MEMORY USAGE (jemalloc mem_fragmentation_ratio).",
        "planning assumption (typical 1.1-1.3)",
    )
    redis_copies: float = _assumption(
        2,
        "Copies of each shard: a primary and one replica for failover (replicas serve "
        "no reads in this plan).",
        "planning assumption",
    )
    users_with_row: float = _assumption(
        500e6,
        "user_stats rows in the online store: the daily users (rows of users gone longer "
        "than the 2-day TTL expire once Redis key_ttl_seconds is set).",
        "the brief (DAU)",
    )
    authors_with_row: float = _assumption(
        200e6,
        "author_stats rows: accounts that posted in the last 7 days (40% of daily users).",
        "planning assumption",
    )
    tweets_per_day: float = _assumption(
        500e6, "New tweets per day.", "Twitter's public figure (~500M tweets/day)"
    )
    tweet_window_days: float = _assumption(
        2,
        "Days a tweet stays in the online store: candidates are followees' tweets since "
        "the last visit (10 visits a day). Needs Redis key_ttl_seconds (Feast's view TTL "
        "only hides old rows, it does not delete them).",
        "planning assumption",
    )
    batch_window_hours: float = _assumption(
        6,
        "Hours in which a day's batch stage must finish on Ray (the training set and the "
        "online fill run after the day closes, before the next training run).",
        "planning assumption",
    )
    all_negative_keep_rate: float = _assumption(
        0.1,
        "Share of impressions with no action kept for training (weighted 1/rate); every "
        "impression with an action is kept.",
        "planning assumption (negative downsampling, as in Twitter's recap ranker)",
    )


@dataclass(frozen=True)
class Plan:  # pylint: disable=too-many-instance-attributes
    """The computed plan: every figure the document and the RESULT line show."""

    average_rps: float
    peak_rps: float
    rps_per_replica: float
    rps_measured: bool
    replicas: int
    replica_cores: int
    rows_per_rank: dict[str, float]
    reads_per_rank: dict[str, float]
    read_ops_peak: float
    events_per_day: float
    write_ops_peak: float
    ops_per_shard: float
    shards_for_ops: int
    entity_rows: dict[str, float]
    store_bytes: dict[str, float]
    online_store_gb: float
    redis_ram_gb: float
    shards_for_memory: int
    redis_shards: int
    impressions_per_day: float
    training_rows_per_day: float
    training_tb_per_day: float
    event_log_tb_per_day: float
    batch_rows_per_day: float
    machine_hours: dict[str, float]
    ray_workers: dict[str, int]
    day_rows: dict[str, float]
    """A day's impressions, training rows and entities written (the units of RAY_STAGES)."""

    def result(self) -> dict[str, float | int]:
        """The main figures, for the RESULT line."""
        return {
            "replicas": self.replicas,
            "redis_shards": self.redis_shards,
            "online_store_gb": round(self.online_store_gb, 1),
            "training_tb_per_day": round(self.training_tb_per_day, 3),
            "peak_rps": round(self.peak_rps),
        }


RAY_STAGES = (
    ("feature tables", "impressions", "features_rows_per_s_ray2"),
    ("point-in-time training set", "training rows", "dataset_rows_per_s_ray2"),
    ("online fill (ray.engine)", "entities", "materialize_rows_per_s_ray2"),
    ("training, one epoch (Ray Train)", "training rows", "train_rows_per_s_ray2"),
)
"""Stages on the cluster profile: the rows a day brings, and the 2-worker rate (scale_out)."""


def load_figures(path: Path = FIGURES) -> dict[str, Any]:
    """The measured figures (docs/figures.json)."""
    figures: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return figures


def average_rps(a: Assumptions) -> float:
    """Rank calls per second averaged over the day: users x fetches / 86,400."""
    return a.daily_users * a.fetches_per_user_day / SECONDS_PER_DAY


def replica_throughput(figures: Mapping[str, Any], a: Assumptions) -> tuple[float, bool]:
    """Rank calls/s per replica: measured (``serve.rps_c8``) if present, else the assumption.

    Returns:
        The throughput and whether it was measured.
    """
    measured = figures.get("serve", {}).get("rps_c8")
    if measured is None:
        return a.planning_rps_per_replica, False
    return float(measured), True


def replicas_needed(peak_rps: float, rps_per_replica: float, cpu_target: float) -> int:
    """Replicas so that each runs at ``cpu_target`` of its measured throughput at peak."""
    return math.ceil(peak_rps / (rps_per_replica * cpu_target))


def rows_per_rank(a: Assumptions) -> dict[str, float]:
    """Distinct online rows one /rank call needs, per feature view.

    One user (its stats and its top-author list); every candidate's tweet twice
    (content and engagement views); authors once per distinct author, which is
    at most the number of followees.
    """
    return {
        "user_stats": 1.0,
        "author_stats": min(a.candidates_per_rank, a.followees_per_user),
        "tweet_content": a.candidates_per_rank,
        "tweet_engagement": a.candidates_per_rank,
        "user_top_authors": 1.0,
    }


def cache_hit_rates(a: Assumptions) -> dict[str, float]:
    """The in-process cache hit rate per view."""
    return {
        "user_stats": a.cache_hit_user_stats,
        "author_stats": a.cache_hit_author_stats,
        "tweet_content": a.cache_hit_tweet_content,
        "tweet_engagement": a.cache_hit_tweet_engagement,
        "user_top_authors": a.cache_hit_user_stats,  # the same key and freshness (60 s)
    }


def entity_rows(a: Assumptions) -> dict[str, float]:
    """Keys in the online store per entity (each one Redis hash)."""
    return {
        "user": a.users_with_row,
        "author": a.authors_with_row,
        "tweet": a.tweets_per_day * a.tweet_window_days,
    }


def plan(figures: Mapping[str, Any], a: Assumptions | None = None) -> Plan:
    """The whole plan from the measured figures and the assumptions."""
    a = a or Assumptions()
    world, redis, pipeline = figures["world"], figures["redis"], figures["pipeline"]
    peak = average_rps(a) * a.peak_factor
    rps, measured = replica_throughput(figures, a)
    replicas = replicas_needed(peak, rps, a.replica_cpu_target)

    rows = rows_per_rank(a)
    keys = entity_rows(a)
    bytes_per_key = redis["bytes_per_key"]
    hits = cache_hit_rates(a)
    reads = {view: n * (1.0 - hits[view]) for view, n in rows.items()}
    impressions_per_day = average_rps(a) * SECONDS_PER_DAY * world["impressions_per_visit"]
    events_per_day = impressions_per_day * world["events_per_impression"]
    read_ops_peak = sum(reads.values()) * peak
    write_ops_peak = events_per_day / SECONDS_PER_DAY * a.peak_factor * a.push_writes_per_event
    ops_per_shard = redis["hmget_per_server_cpu_s"] * a.redis_cpu_target

    store = {entity: n * bytes_per_key[entity] for entity, n in keys.items()}
    online_gb = sum(store.values()) / GB
    shards_for_memory = math.ceil(online_gb * a.redis_fragmentation / a.redis_gb_per_shard)
    shards_for_ops = math.ceil((read_ops_peak + write_ops_peak) / ops_per_shard)
    shards = max(shards_for_ops, shards_for_memory)

    any_action = world["any_action_share"]
    training_rows = impressions_per_day * (any_action + (1 - any_action) * a.all_negative_keep_rate)
    # A day's snapshot of every user (stats, and the top-author list), author and new tweet.
    batch_rows = 2 * a.users_with_row + a.authors_with_row + a.tweets_per_day
    hours = {
        "feature pipelines": batch_rows / pipeline["features_rows_per_s"] / 3600,
        "online fill": batch_rows / pipeline["online_fill_rows_per_s"] / 3600,
        "point-in-time training set": training_rows / pipeline["training_set_rows_per_s"] / 3600,
        "training, one epoch": training_rows / figures["train"]["train_rows_per_s"] / 3600,
        "metrics report": events_per_day
        / (figures["metrics"]["events"] / figures["metrics"]["metrics_seconds"])
        / 3600,
    }
    # Ray workers (one CPU each) for a day's rows within the batch window, at the rate per
    # worker of the 2-worker runs (it includes the loss from 1 to 2 workers).
    scale = figures["scale_out"]
    window_s = a.batch_window_hours * 3600
    day_rows = {
        "impressions": impressions_per_day,
        "training rows": training_rows,
        "entities": batch_rows,
    }
    ray_workers = {
        stage: math.ceil(day_rows[unit] / (scale[key] / 2) / window_s)
        for stage, unit, key in RAY_STAGES
    }
    return Plan(
        average_rps=average_rps(a),
        peak_rps=peak,
        rps_per_replica=rps,
        rps_measured=measured,
        replicas=replicas,
        replica_cores=math.ceil(replicas * a.cores_per_replica),
        rows_per_rank=rows,
        reads_per_rank=reads,
        read_ops_peak=read_ops_peak,
        events_per_day=events_per_day,
        write_ops_peak=write_ops_peak,
        ops_per_shard=ops_per_shard,
        shards_for_ops=shards_for_ops,
        entity_rows=keys,
        store_bytes=store,
        online_store_gb=online_gb,
        redis_ram_gb=shards * a.redis_gb_per_shard * a.redis_copies,
        shards_for_memory=shards_for_memory,
        redis_shards=shards,
        impressions_per_day=impressions_per_day,
        training_rows_per_day=training_rows,
        training_tb_per_day=training_rows * world["training_bytes_per_row"] / TB,
        event_log_tb_per_day=events_per_day * world["event_log_bytes_per_event"] / TB,
        batch_rows_per_day=batch_rows,
        machine_hours=hours,
        ray_workers=ray_workers,
        day_rows=day_rows,
    )


# --- rendering -----------------------------------------------------------------------------


def _n(value: float, digits: int = 0) -> str:
    """A number with thousands separators."""
    return f"{value:,.{digits}f}"


def _big(value: float) -> str:
    """A count in words-sized units (1.2 B, 340 M, 12 k)."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:,.1f} {unit}"
    return _n(value, 1 if value < 10 else 0)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _measured_rows(figures: Mapping[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """The figures (name, value) and, per section, the command that printed them and when."""
    values, commands = [], []
    for section, entries in figures.items():
        commands.append(
            [f"`{section}`", f"`{entries.get('command', '')}`", entries.get("date") or NOT_MEASURED]
        )
        for key, value in entries.items():
            if key in ("command", "date"):
                continue
            if value is None:
                shown = NOT_MEASURED
            elif isinstance(value, dict):
                shown = ", ".join(f"{k} {v:,}" for k, v in value.items())
            else:
                shown = f"{value:,}"
            values.append([f"{section}.{key}", shown])
    return values, commands


def _assumption_rows(a: Assumptions) -> list[list[str]]:
    rows = []
    for name, info in Assumptions.model_fields.items():
        value = getattr(a, name)
        extra = info.json_schema_extra
        source = str(extra.get("source", "")) if isinstance(extra, dict) else ""
        shown = _big(value) if value >= 1e4 else f"{value:g}"
        rows.append([f"`{name}`", shown, str(info.description), source])
    return rows


def _traffic(p: Plan, a: Assumptions) -> list[str]:
    return [
        "## Traffic",
        "",
        *_table(
            ["figure", "value", "how"],
            [
                ["rank calls per day", _big(a.daily_users * a.fetches_per_user_day),
                 "daily_users x fetches_per_user_day"],
                ["average rank calls/s", _n(p.average_rps), "per day / 86,400"],
                ["peak factor", f"{a.peak_factor:g}x", "assumption `peak_factor`"],
                ["peak rank calls/s", _n(p.peak_rps), "average x peak factor"],
                ["impressions per day", _big(p.impressions_per_day),
                 "rank calls x world.impressions_per_visit (synthetic world; scales linearly)"],
                ["events per day (impressions + actions)", _big(p.events_per_day),
                 "impressions x world.events_per_impression"],
            ],
        ),
    ]  # fmt: skip


def _replicas(p: Plan, figures: Mapping[str, Any], a: Assumptions) -> list[str]:
    label = (
        "measured: serve.rps_c8"
        if p.rps_measured
        else f"**planning assumption** `planning_rps_per_replica` (serve.rps_c8 {NOT_MEASURED})"
    )
    reader = figures["feature_reader"]
    feature_bound = a.cores_per_replica * 1000 / reader["p50_ms"]
    feast_bound = a.cores_per_replica * 1000 / reader["feast_p50_ms"]
    feast_replicas = replicas_needed(p.peak_rps, feast_bound, a.replica_cpu_target)
    return [
        "## Ranker replicas",
        "",
        *_table(
            ["figure", "value", "how"],
            [
                ["rank calls/s per replica", _n(p.rps_per_replica, 1), label],
                ["CPU target at peak", f"{a.replica_cpu_target:g}", "assumption"],
                ["replicas", _n(p.replicas), "ceil(peak / (rps per replica x target))"],
                ["cores", _n(p.replica_cores), f"replicas x {a.cores_per_replica:g}"],
                ["cross-check: feature read alone, rps per replica", _n(feature_bound),
                 f"{a.cores_per_replica:g} cores x 1000 / feature_reader.p50_ms"],
                ["if features were read with Feast get_online_features", _n(feast_replicas),
                 "same, with feature_reader.feast_p50_ms"],
            ],
        ),
    ]  # fmt: skip


def _redis_throughput(p: Plan, a: Assumptions) -> list[str]:
    hits = cache_hit_rates(a)
    rows = [
        [
            f"`{view}`",
            ENTITY_OF_VIEW[view],
            _n(n),
            f"{hits[view]:.0%}",
            _n(p.reads_per_rank[view], 1),
            _big(p.reads_per_rank[view] * p.peak_rps),
        ]
        for view, n in p.rows_per_rank.items()
    ]
    no_cache = sum(p.rows_per_rank.values())
    rows.append(
        [
            "**all views**",
            "",
            _n(no_cache),
            "",
            _n(sum(p.reads_per_rank.values()), 1),
            _big(p.read_ops_peak),
        ]
    )
    no_cache_shards = math.ceil((no_cache * p.peak_rps + p.write_ops_peak) / p.ops_per_shard)
    return [
        "## Redis throughput",
        "",
        "One pipelined `HMGET` per distinct row and view (serving/features.py), after the",
        "in-process cache:",
        "",
        *_table(
            ["view", "key", "rows per call", "cache hit", "HMGET per call", "HMGET/s at peak"],
            rows,
        ),
        "",
        *_table(
            ["figure", "value", "how"],
            [
                ["reads/s at peak", _big(p.read_ops_peak), "table above"],
                ["writes/s at peak (live counters)", _big(p.write_ops_peak),
                 "events/s at peak x push_writes_per_event"],
                ["ops/s per shard", _big(p.ops_per_shard),
                 "redis.hmget_per_server_cpu_s x redis_cpu_target"],
                ["shards for throughput", _n(p.shards_for_ops), "(reads + writes) / per shard"],
                ["shards for throughput without the cache", _n(no_cache_shards),
                 "every row read from Redis"],
            ],
        ),
    ]  # fmt: skip


def _redis_memory(p: Plan, figures: Mapping[str, Any], a: Assumptions) -> list[str]:
    per_key = figures["redis"]["bytes_per_key"]
    total = sum(p.store_bytes.values())
    rows = [
        [
            entity,
            _big(p.entity_rows[entity]),
            _n(per_key[entity]),
            _n(p.store_bytes[entity] / GB),
            f"{p.store_bytes[entity] / total:.1%}",
        ]
        for entity in p.entity_rows
    ]
    rows.append(["**total**", _big(sum(p.entity_rows.values())), "", _n(total / GB), "100%"])
    return [
        "## Online store size, Redis memory and shards",
        "",
        *_table(["key (entity)", "keys", "bytes per key", "GB", "share"], rows),
        "",
        *_table(
            ["figure", "value", "how"],
            [
                ["online store", f"{_n(p.online_store_gb)} GB", "keys x measured bytes per key"],
                ["with allocator overhead", f"{_n(p.online_store_gb * a.redis_fragmentation)} GB",
                 f"x {a.redis_fragmentation:g}"],
                ["shards for memory", _n(p.shards_for_memory), f"/ {a.redis_gb_per_shard:g} GB"],
                ["**Redis shards**", f"**{_n(p.redis_shards)}**", "max(throughput, memory)"],
                ["Redis RAM provisioned", f"{_n(p.redis_ram_gb / 1000, 1)} TB",
                 f"shards x {a.redis_gb_per_shard:g} GB x {a.redis_copies:g} copies"],
            ],
        ),
    ]  # fmt: skip


def _training(p: Plan, figures: Mapping[str, Any], a: Assumptions) -> list[str]:
    world = figures["world"]
    return [
        "## Training data and batch compute per day",
        "",
        *_table(
            ["figure", "value", "how"],
            [
                ["impressions per day", _big(p.impressions_per_day), "traffic"],
                ["share with any action", f"{world['any_action_share']:.1%}", "measured (world)"],
                ["training rows per day", _big(p.training_rows_per_day),
                 f"all with an action + {a.all_negative_keep_rate:.0%} of the rest"],
                ["**training data per day**", f"**{p.training_tb_per_day:.3f} TB**",
                 f"rows x {world['training_bytes_per_row']} B (parquet, measured)"],
                ["event log per day", f"{p.event_log_tb_per_day:.3f} TB",
                 f"events x {world['event_log_bytes_per_event']} B (parquet, measured)"],
                ["feature rows written per day", _big(p.batch_rows_per_day),
                 "users x 2 (stats, top-author list) + authors + new tweets"],
            ],
        ),
        "",
        "Machine-hours per day on machines like the benchmark's (2 cores), at the measured",
        "single-machine rates; each stage splits by entity or by day, so hours / workers is",
        "the wall time:",
        "",
        *_table(
            ["stage", "machine-hours per day", "rate used"],
            [
                ["feature pipelines", _n(p.machine_hours["feature pipelines"], 1),
                 "pipeline.features_rows_per_s"],
                ["online fill", _n(p.machine_hours["online fill"], 1),
                 "pipeline.online_fill_rows_per_s (SQLite; Redis path assumed alike)"],
                ["point-in-time training set",
                 _n(p.machine_hours["point-in-time training set"], 1),
                 "pipeline.training_set_rows_per_s"],
                ["training, one epoch", _n(p.machine_hours["training, one epoch"], 1),
                 "train.train_rows_per_s"],
                ["metrics report", _n(p.machine_hours["metrics report"], 1),
                 "metrics.events / metrics.metrics_seconds"],
            ],
        ),
        "",
        f"Ray workers (one CPU each) to finish a day's rows in {a.batch_window_hours:g} hours",
        "on the cluster profile (docs/scale-out.md), at the rate per worker measured with",
        "2 workers on the benchmark machine (which includes the loss from 1 to 2 workers):",
        "",
        *_table(
            ["stage", "rows per day", "rate per worker", "Ray workers"],
            [
                [stage, f"{_big(p.day_rows[unit])} {unit}",
                 f"{_n(figures['scale_out'][key] / 2)} rows/s (scale_out.{key} / 2)",
                 _n(p.ray_workers[stage])]
                for stage, unit, key in RAY_STAGES
            ],
        ),
    ]  # fmt: skip


def _cost_drivers(p: Plan, figures: Mapping[str, Any], a: Assumptions) -> list[str]:
    largest = max(p.store_bytes, key=lambda k: p.store_bytes[k])
    largest_share = p.store_bytes[largest] / sum(p.store_bytes.values())
    beta_cores = p.peak_rps * a.candidates_per_rank / figures["metrics"]["beta_samples_per_s"]
    fill_ratio = figures["pipeline"]["online_fill_ratio"]
    worst = max(p.machine_hours, key=lambda k: p.machine_hours[k])
    return [
        "## Main cost drivers",
        "",
        "Quantities, not prices: multiply by the provider's price list.",
        "",
        *_table(
            ["driver", "quantity", "lever"],
            [
                ["ranker CPU", f"{_n(p.replica_cores)} cores",
                 "per-replica throughput (measure serve.rps_c8); a request's CPU is split "
                 "between the feature read, the model and HTTP (docs/serving.md)"],
                ["Redis RAM", f"{_n(p.redis_ram_gb / 1000, 1)} TB",
                 f"the {largest} keys are {largest_share:.0%} of the store: Redis key TTLs "
                 "for inactive users, a shorter top-author list (docs/affinity.md)"],
                ["Redis command CPU", f"{_n(p.shards_for_ops)} shards",
                 "the in-process cache (see the no-cache row); coalesce counter pushes"],
                ["batch compute", f"{_n(sum(p.machine_hours.values()))} machine-hours/day",
                 f"largest: {worst}; a warehouse engine for the point-in-time join"],
                ["online fill", f"fast path {fill_ratio:g}x Feast materialize",
                 "without it the fill needs that many more workers"],
                ["Thompson sampling", f"{beta_cores:.1f} cores at peak",
                 "not a driver: metrics.beta_samples_per_s per core"],
            ],
        ),
    ]  # fmt: skip


def render(figures: Mapping[str, Any], a: Assumptions | None = None) -> str:
    """docs/capacity.md, from the figures and the assumptions only (deterministic)."""
    a = a or Assumptions()
    p = plan(figures, a)
    measured, commands = _measured_rows(figures)
    serve_note = (
        []
        if p.rps_measured
        else [
            "",
            f"> The `/rank` HTTP figures (section `serve`) are {NOT_MEASURED}: the replica",
            "> count uses the labelled planning assumption `planning_rps_per_replica`. Run",
            "> `benchmarks/serve_latency.py`, put its RESULT into docs/figures.json and",
            "> regenerate.",
        ]
    )
    lines = [
        "# Capacity plan",
        "",
        "Generated by `.venv/bin/python -m analysis.capacity` from `docs/figures.json`",
        "(measured figures, each with its command and date) and the assumptions listed at",
        "the end; do not edit by hand. `--check` and tests/unit/test_capacity.py fail when",
        "this file differs from what the figures produce.",
        "",
        f"Scale (the brief): {_big(a.daily_users)} daily users x {a.fetches_per_user_day:g} "
        f"fetches a day = {_n(p.average_rps)} rank calls/s on average, "
        f"{_n(p.peak_rps)}/s at the assumed {a.peak_factor:g}x peak.",
        *serve_note,
        "",
        "## Summary",
        "",
        *_table(
            ["figure", "value"],
            [
                ["peak rank calls/s", _n(p.peak_rps)],
                [f"ranker replicas ({a.cores_per_replica:g} cores)", _n(p.replicas)],
                ["Redis shards (primaries)", _n(p.redis_shards)],
                ["online store", f"{_n(p.online_store_gb)} GB"],
                ["training data per day", f"{p.training_tb_per_day:.3f} TB"],
            ],
        ),
        "",
        *_traffic(p, a),
        "",
        *_replicas(p, figures, a),
        "",
        *_redis_throughput(p, a),
        "",
        *_redis_memory(p, figures, a),
        "",
        *_training(p, figures, a),
        "",
        *_cost_drivers(p, figures, a),
        "",
        "## Measured figures",
        "",
        "From docs/figures.json, on the benchmark machine (2 cores).",
        "",
        *_table(["figure", "value"], measured),
        "",
        *_table(["section", "printed by", "date"], commands),
        "",
        "## Assumptions",
        "",
        "Every number above that is not in the measured figures. Cache hit rates are",
        "the least certain: the no-cache row of the Redis table is the bound.",
        "",
        *_table(["assumption", "value", "why", "source"], _assumption_rows(a)),
        "",
    ]
    return "\n".join(lines)


# --- measuring ------------------------------------------------------------------------------


def measure_world(data: Path) -> dict[str, Any]:
    """World facts of a generated workspace (run after ``feedrank demo``)."""
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

    from core.actions import load_actions  # pylint: disable=import-outside-toplevel
    from core.feast_store import training_set_path  # pylint: disable=import-outside-toplevel
    from core.workspace import Workspace  # pylint: disable=import-outside-toplevel

    actions = list(load_actions().names)
    dataset_path = training_set_path(Workspace(data.parent))
    dataset = pq.read_table(dataset_path, columns=["visit_id", *actions]).to_pandas()
    schema = pq.read_schema(dataset_path)
    keys = {"impression_id", "visit_id", "user_id", "author_id", "tweet_id", "position"}
    keys |= {"event_timestamp"}
    n_features = len([n for n in schema.names if n not in keys and n not in actions])
    impressions = pq.ParquetFile(data / "world" / "impressions.parquet").metadata.num_rows
    visits = pq.ParquetFile(data / "world" / "visits.parquet").metadata.num_rows
    events = pq.ParquetFile(data / "world" / "events.parquet").metadata.num_rows
    return {
        "impressions": impressions,
        "visits": visits,
        "impressions_per_visit": round(impressions / visits, 3),
        "events_per_impression": round(events / impressions, 3),
        "any_action_share": round(float(dataset[actions].any(axis=1).mean()), 4),
        "features_per_request": n_features,
        "training_bytes_per_row": round(dataset_path.stat().st_size / len(dataset), 1),
        "event_log_bytes_per_event": round(
            (data / "world" / "events.parquet").stat().st_size / events, 1
        ),
    }


def measure_redis(url: str, seconds: float = 5.0, sample: int = 20_000) -> dict[str, Any]:
    """Bytes per key by entity and pipelined HMGETs per second of Redis server CPU.

    Reads only: SCAN, HKEYS and MEMORY USAGE on at most ``sample`` keys, then
    ``seconds`` of pipelined HMGETs of 500 real rows at a time. The server's
    CPU counters (INFO cpu) give the commands per CPU-second the server itself
    spends, client parsing excluded: Redis runs commands on one thread, so
    that is a shard's ceiling.
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    import redis  # pylint: disable=import-outside-toplevel

    client = redis.Redis.from_url(url)
    entity_of = {f"_ts:{view}".encode(): entity for view, entity in ENTITY_OF_VIEW.items()}
    sizes: dict[str, list[int]] = {}
    fields: dict[bytes, list[bytes]] = {}
    for key in client.scan_iter(count=1000, _type="HASH"):
        names = client.hkeys(key)
        entity = next((entity_of[n] for n in names if n in entity_of), None)
        if entity is None:
            continue
        sizes.setdefault(entity, []).append(int(client.memory_usage(key, samples=0) or 0))
        fields[key] = names
        if len(fields) >= sample:
            break
    if not fields:
        raise SystemExit(f"no feast keys in {url}: fill the production online store first")

    def server_cpu() -> float:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    keys = list(fields)
    rng = np.random.default_rng(0)
    calls, cpu_start, start = 0, server_cpu(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        with client.pipeline(transaction=False) as pipe:
            for i in rng.integers(0, len(keys), 500):
                pipe.hmget(keys[i], fields[keys[i]])
            pipe.execute()
        calls += 500
    cpu = server_cpu() - cpu_start
    return {
        "bytes_per_key": {e: round(sum(s) / len(s), 1) for e, s in sorted(sizes.items())},
        "keys_sampled": len(fields),
        "hmget_per_server_cpu_s": round(calls / cpu),
        "hmget_per_s_client_bound": round(calls / (time.perf_counter() - start)),
    }


# --- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or check) docs/capacity.md, or measure a figures section."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.capacity", description=__doc__.split("\n\n", maxsplit=1)[0]
    )
    parser.add_argument("--figures", type=Path, default=FIGURES, help="Measured figures.")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="The document.")
    parser.add_argument("--check", action="store_true", help="Fail if the document is stale.")
    parser.add_argument(
        "--measure", choices=["world", "redis"], help="Print a figures section and exit."
    )
    parser.add_argument(
        "--data", type=Path, default=REPO_ROOT / "data", help="For --measure world."
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379", help="--measure redis.")
    args = parser.parse_args(argv)
    if args.measure == "world":
        print(json.dumps(measure_world(args.data), indent=2))
        return 0
    if args.measure == "redis":
        print(json.dumps(measure_redis(args.redis_url), indent=2))
        return 0

    figures = load_figures(args.figures)
    text = render(figures)
    status = 0
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), "on disk", "from figures", lineterm=""
            )
            print("\n".join(diff))
            print(f"{args.output} is stale: run python -m analysis.capacity", file=sys.stderr)
            status = 1
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    print("RESULT " + json.dumps(plan(figures).result()))
    return status


if __name__ == "__main__":
    sys.exit(main())
