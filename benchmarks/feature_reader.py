"""The online feature read of ``/rank``, in process: the fast reader next to Feast's own.

``serve_latency.py`` measures ``/rank`` over HTTP, where a shared 2-core
machine's swings are larger than a millisecond saved in the reader. This
measures the reader alone, in one process, on the requests of
``serve_latency.py`` (a random user, 500 random tweets of the last two days):

- ``OnlineFeatureReader.read`` p50/p99 for the SQLite (embedded) and Redis
  (production) profiles, the reader warmed as the service warms it and the
  heap frozen as the service freezes it, with the time of each feature view;
- on Redis, the candidates' author and creation-time lookup
  (``RedisCandidates.lookup``);
- Feast's ``get_online_features(...).to_dict()`` on the first requests, and
  the ratio of the two p50s, per profile.

    .venv/bin/python benchmarks/feature_reader.py [--workspace DIR] [--requests N]

The production profile gets a Feast project and candidate keys of its own
(Redis and PostgreSQL on 127.0.0.1), dropped at the end. Ends with ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from core.actions import load_actions
from core.feast_store import FEATURE_SERVICE, Workspace, drop_project, entity_rows, open_store
from core.tables import TWEETS, read_table
from core.workspace import REPO_ROOT
from feedrank.pipeline import publish_features
from load.harness import rank_requests
from serving.candidates import RedisCandidates, load_redis_candidates
from serving.features import OnlineFeatureReader
from simulation.world import load_world_config, world_end

WARMUP = 100


def _ms(seconds: list[float]) -> dict[str, float]:
    p50, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 99])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3)}


def _entities(ws: Workspace, requests: list[dict[str, Any]]) -> list[dict[str, np.ndarray]]:
    tweets = read_table(TWEETS, ws.world)
    author_of = dict(
        zip(tweets["tweet_id"].to_pylist(), tweets["author_id"].to_pylist(), strict=True)
    )
    return [
        {
            "user_id": np.full(len(r["candidate_tweet_ids"]), r["user_id"], dtype=np.int64),
            "author_id": np.asarray([author_of[t] for t in r["candidate_tweet_ids"]], np.int64),
            "tweet_id": np.asarray(r["candidate_tweet_ids"], dtype=np.int64),
        }
        for r in requests
    ]


def _fast(
    store: Any, service: str, batches: list[dict[str, np.ndarray]], request_ts: int
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """``read`` p50/p99 after the warm-up, and the same per feature view."""
    reader = OnlineFeatureReader(store, service)
    for entities in batches[:WARMUP]:
        reader.read(entities, request_ts)
    gc.collect()
    gc.freeze()  # as FeedRanker.__init__ does
    views: dict[str, list[float]] = defaultdict(list)
    rows = reader._rows  # pylint: disable=protected-access  # timed per view

    def timed(spec: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return rows(spec, *args, **kwargs)
        finally:
            views[spec.view.name].append(time.perf_counter() - start)

    reader._rows = timed  # type: ignore[method-assign]  # pylint: disable=protected-access
    times = []
    for entities in batches[WARMUP:]:
        start = time.perf_counter()
        reader.read(entities, request_ts)
        times.append(time.perf_counter() - start)
    gc.unfreeze()
    reader.close()
    return _ms(times), {name: _ms(t) for name, t in views.items()}


def _feast(
    store: Any, service: str, batches: list[dict[str, np.ndarray]], request_ts: int
) -> dict[str, float]:
    """Feast's own online read of the same rows (the naive path, without the model)."""
    feature_service = store.get_feature_service(service)
    times = []
    for entities in batches:
        rows = entity_rows(store, service, entities, request_ts)
        start = time.perf_counter()
        store.get_online_features(features=feature_service, entity_rows=rows).to_dict()
        times.append(time.perf_counter() - start)
    return _ms(times)


def _lookups(client: Any, prefix: str, requests: list[dict[str, Any]]) -> dict[str, float]:
    source = RedisCandidates(client, prefix)
    times = []
    for body in requests:
        ids = np.asarray(body["candidate_tweet_ids"], dtype=np.int64)
        start = time.perf_counter()
        source.lookup(ids)
        times.append(time.perf_counter() - start)
    return _ms(times[WARMUP:])


def _profile(
    label: str,
    store: Any,
    batches: list[dict[str, np.ndarray]],
    request_ts: int,
    naive: int,
    result: dict[str, float],
) -> None:
    read, views = _fast(store, FEATURE_SERVICE, batches, request_ts)
    feast = _feast(store, FEATURE_SERVICE, batches[WARMUP : WARMUP + naive], request_ts)
    print(f"{label}: read {read}, Feast get_online_features {feast}", flush=True)
    for name, figures in views.items():
        print(f"  {name:22s} {figures}", flush=True)
    result |= {
        f"read_p50_ms_{label}": read["p50_ms"],
        f"read_p99_ms_{label}": read["p99_ms"],
        f"feast_p50_ms_{label}": feast["p50_ms"],
        f"feast_ratio_p50_{label}": round(feast["p50_ms"] / read["p50_ms"], 1),
    }
    result |= {f"view_p50_ms_{label}_{name}": f["p50_ms"] for name, f in views.items()}


def main() -> None:
    """Run both profiles and print the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=REPO_ROOT)
    parser.add_argument("--requests", type=int, default=400, help="Timed requests per profile.")
    parser.add_argument("--naive-requests", type=int, default=20)
    args = parser.parse_args()
    ws = Workspace(args.workspace)
    requests = rank_requests(ws, WARMUP + args.requests)
    batches = _entities(ws, requests)
    request_ts = int(world_end(load_world_config(ws.world)).timestamp())
    result: dict[str, float] = {}
    _profile("sqlite", open_store(ws), batches, request_ts, args.naive_requests, result)

    import redis  # pylint: disable=import-outside-toplevel

    project = f"bench{uuid.uuid4().hex[:8]}"
    store = open_store(ws, "production", project=project)
    client = redis.Redis("127.0.0.1", 6379)
    prefix = f"feedrank:{project}:"
    try:
        publish_features(store, ws)
        load_redis_candidates(client, ws.world, load_actions(), prefix=prefix)
        _profile("redis", store, batches, request_ts, args.naive_requests, result)
        lookup = _lookups(client, prefix, requests)
        print(f"redis: candidates lookup {lookup}", flush=True)
        result["candidates_lookup_p50_ms_redis"] = lookup["p50_ms"]
    finally:
        drop_project(store)
        for key in client.scan_iter(match=f"{prefix}*", count=10_000):
            client.unlink(key)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
