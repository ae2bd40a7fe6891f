"""Scale check for the metrics and the exploration sampler: 10M events, 10M Beta draws.

Generates a synthetic event log shaped like the simulator's (EVENTS schema,
time-ordered, about 85% impressions, action rates in the range of a real
feed, 0.1% retried events that repeat an event_id), writes it to a temporary
parquet file, and times what a daily job would run on it: the daily report,
the per-variant report, and the A/B comparison. Then it times Thompson
sampling throughput. Bars: each metrics run <= 10 s for 10M events, >= 3M
Beta samples per second.

    .venv/bin/python benchmarks/metrics_scale.py [--events N]

The last line is ``RESULT {json}`` with ``events``, ``metrics_seconds`` (the
slowest of the metrics runs) and ``beta_samples_per_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.actions import IMPRESSION, load_actions
from core.exploration import thompson_sample
from core.tables import EVENTS, TS
from metrics.ab import Experiment, analyze_experiment
from metrics.engagement import engagement_report

METRICS_BAR_SECONDS = 10.0
BETA_BAR_PER_SECOND = 3_000_000

# Events per impression, per action: a feed where a few percent of views get
# a like or a long look, one in a hundred a reply, and reports are rare.
ACTION_RATES = {
    "like": 0.06,
    "reply": 0.012,
    "retweet": 0.02,
    "long_dwell": 0.08,
    "hide": 0.004,
    "report": 0.0005,
}
OTHER_ACTION_RATE = 0.01
RETRY_SHARE = 0.001
START = datetime(2024, 1, 1, tzinfo=UTC)

T = TypeVar("T")


def synthetic_events(n_events: int, n_users: int, days: int, seed: int) -> pa.Table:
    """A time-ordered EVENTS table of ``n_events`` rows, built with numpy only.

    Users differ in activity (log-normal), each action event follows one of
    the impressions of the same user and tweet by a few seconds, and a small
    share of events is logged twice with the same event_id, as a client
    retry would.
    """
    rng = np.random.default_rng(seed)
    names = load_actions().names
    rates = np.array([ACTION_RATES.get(name, OTHER_ACTION_RATE) for name in names])
    n_retries = int(n_events * RETRY_SHARE)
    n_impressions = round((n_events - n_retries) / (1 + rates.sum()))
    n_actions = n_events - n_retries - n_impressions

    activity = rng.lognormal(0.0, 1.0, n_users)
    users = rng.choice(n_users, n_impressions, p=activity / activity.sum())
    tweets = rng.integers(0, 50 * n_users, n_impressions)
    micros = rng.integers(0, days * 86_400 * 10**6, n_impressions)
    source = rng.integers(0, n_impressions, n_actions)
    kind = 1 + rng.choice(len(names), n_actions, p=rates / rates.sum())
    delay = rng.exponential(20e6, n_actions).astype(np.int64)

    start_us = int(START.timestamp() * 10**6)
    dwell = rng.lognormal(1.2, 1.0, n_impressions).astype(np.float32)
    table = pa.table(
        {
            "event_id": pa.array(np.arange(n_impressions + n_actions)).cast(pa.string()),
            "user_id": np.concatenate([users, users[source]]),
            "tweet_id": np.concatenate([tweets, tweets[source]]),
            "action": pa.DictionaryArray.from_arrays(
                pa.array(np.concatenate([np.zeros(n_impressions, np.int32), kind]), pa.int32()),
                pa.array([IMPRESSION, *names]),
            ).cast(pa.string()),
            "dwell_seconds": pa.array(
                np.concatenate([dwell, np.zeros(n_actions, np.float32)]),
                mask=np.arange(n_impressions + n_actions) >= n_impressions,
            ),
            "timestamp": pa.array(
                start_us + np.concatenate([micros, micros[source] + delay]), pa.int64()
            ).cast(TS),
        },
        schema=EVENTS.schema,
    )
    retried = table.take(rng.integers(0, table.num_rows, n_retries))
    return pa.concat_tables([table, retried]).sort_by("timestamp")


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds, and CPU seconds of this process (all its threads).

    On a busy machine the wall clock grows with other processes' load; the
    CPU time shows the work itself.
    """

    wall: float
    cpu: float

    def __str__(self) -> str:
        return f"{self.wall:6.2f} s (cpu {self.cpu:5.2f} s)"


def timed(call: Callable[[], T]) -> tuple[T, Timing]:
    """The call's result and how long it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def beta_throughput(n_samples: int, batches: int, seed: int) -> float:
    """Thompson draws per second, over ``batches`` vectorised calls of equal size."""
    rng = np.random.default_rng(seed)
    size = n_samples // batches
    impressions = rng.integers(0, 10_000, size)
    successes = rng.binomial(impressions, 0.05)
    failures = impressions - successes
    began = time.perf_counter()
    for _ in range(batches):
        thompson_sample(successes, failures, rng)
    return size * batches / (time.perf_counter() - began)


def write_log(args: argparse.Namespace, folder: Path) -> Path:
    """Generate the synthetic log and write it to ``folder/events.parquet``."""
    table, gen = timed(lambda: synthetic_events(args.events, args.users, args.days, args.seed))
    share = np.mean(table.column("action").to_numpy(zero_copy_only=False) == IMPRESSION)
    print(f"generated {table.num_rows:,} events ({share:.1%} impressions) in {gen.wall:.1f} s")
    path = folder / EVENTS.file_name
    _, write = timed(lambda: pq.write_table(table, path))
    print(f"wrote {path.name}: {path.stat().st_size / 1e6:.0f} MB in {write.wall:.1f} s")
    return path


def main(argv: list[str] | None = None) -> None:
    """Generate, time, print the summary and the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events in the log")
    parser.add_argument("--users", type=int, default=200_000, help="distinct users")
    parser.add_argument("--days", type=int, default=14, help="days the log spans")
    parser.add_argument("--beta-samples", type=int, default=10_000_000, help="Beta draws")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)

    experiment = Experiment("benchmark")
    with tempfile.TemporaryDirectory() as folder:
        path = write_log(args, Path(folder))
        daily, daily_t = timed(lambda: engagement_report(path, granularity="day"))
        by_variant, variant_t = timed(lambda: engagement_report(path, cohorts=experiment.assign))
        ab, ab_t = timed(lambda: analyze_experiment(path, experiment))

    beta_per_s = beta_throughput(args.beta_samples, batches=10, seed=args.seed)
    metrics_s = max(daily_t.wall, variant_t.wall, ab_t.wall)
    first = daily.rows[0]
    treatment = ab.variants[1]
    print(
        f"\nmetrics over {args.events:,} events ({os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}), bar <= {METRICS_BAR_SECONDS:.0f} s each:"
    )
    print(f"  daily report        {daily_t}  {len(daily.rows)} days")
    print(f"  per-variant report  {variant_t}  {len(by_variant.rows)} variants")
    print(f"  A/B comparison      {ab_t}  {sum(v.users for v in ab.variants):,} users")
    print(
        f"  day 1: {first.users:,} users, score/user {first.score_per_user:.3f}, "
        f"score/1k impressions {first.score_per_1000_impressions:.1f}"
    )
    if treatment.difference is not None:
        print(
            f"  A/A (no real effect; 1 in 20 excludes 0 by chance): treatment - control = "
            f"{treatment.difference.absolute:+.3f} [{treatment.difference.ci_low:+.3f}, "
            f"{treatment.difference.ci_high:+.3f}], p = {treatment.difference.p_value:.3f}; "
            f"sample ratio p = {ab.sample_ratio.p_value:.3f}"
        )
    print(
        f"Beta sampling: {beta_per_s / 1e6:.1f}M draws/s "
        f"(bar >= {BETA_BAR_PER_SECOND / 1e6:.0f}M/s)"
    )
    verdict = metrics_s <= METRICS_BAR_SECONDS and beta_per_s >= BETA_BAR_PER_SECOND
    print(f"bars met: {'yes' if verdict else 'NO'}")
    result = {
        "events": args.events,
        "metrics_seconds": round(metrics_s, 3),
        "beta_samples_per_s": round(beta_per_s),
    }
    print(f"RESULT {json.dumps(result)}")


if __name__ == "__main__":
    main()
