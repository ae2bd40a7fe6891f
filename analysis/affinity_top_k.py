"""One key per user for the affinity features: what a top-K list keeps, costs and loses.

Issue 19 measures a redesign before it is built. Today ``user_author_affinity``
holds one row per (user, author) pair. At the brief's scale that is 50B Redis
keys, 92% of the online store. The candidate redesign keeps, per user, the K
authors the user has seen most, with the pair's three features as lists under
the user's key. A pair outside the top K reads as missing, exactly like a
pair the user never met.

For each K this script:

1. **Masks the training set as the redesign would serve it.** A row keeps
   its ``ua_*`` features only if its author is among the user's top K at the
   snapshot the row reads (the latest daily snapshot at or before the
   impression, point in time as Feast joins it). The ranking is by
   cumulative impressions, ties broken by author id.
2. **Trains and evaluates** the same model on the masked set, with the same
   seed and settings as ``feedrank train``: the lift share @50 on the test
   day, next to the unmasked set's.
3. **Measures the bytes of one user's key.** Feast's Redis layout for a
   list view (Feast's entity key plus a scratch project name, murmur3 field
   names, ``ValueProto`` lists: author ids and the three features, the
   ``_ts`` field) is written for a sample of users to the local Redis and
   read back with ``MEMORY USAGE``; the keys are deleted after. Scaled to
   the brief's 500M users, that is the view's share of the online store.

    .venv/bin/python -m analysis.affinity_top_k [--workspace DIR] [--k 8 32 128] [--redis URL]

Ends with ``RESULT {json}``: per K ``lift_share_at_50``, ``pair_rows_kept``
(the share of rows with pair features that keep them), ``bytes_per_user_key``,
and the capacity plan at the brief's scale with that key
(:func:`analysis.capacity.plan`: ``online_store_tb_at_scale``, the Redis
shards for memory, for operations, and in all); and the same figures for
today's pair view (``*_pairs``).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import redis
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.Value_pb2 import FloatList, Int64List, Value
from google.protobuf.timestamp_pb2 import Timestamp

from analysis import capacity
from core.actions import load_actions
from core.feast_layout import EntityKeys, redis_keys
from core.feast_store import training_set_path
from core.workspace import REPO_ROOT, Workspace
from training.evaluate import evaluate
from training.train import TrainConfig, train

PAIR_FEATURES = ("ua_impressions", "ua_positive_rate", "ua_negative_count")
TB = 1e12


def top_k_keys(pairs: pd.DataFrame, k: int) -> dict[pd.Timestamp, np.ndarray]:
    """Per daily snapshot: the sorted ``user << 32 | author`` keys of each user's top K.

    ``pairs`` is the ``user_author_affinity`` table: cumulative rows, one per
    day a pair was active. At a snapshot, a pair's value is its latest row
    at or before it.
    """
    pairs = pairs.sort_values("event_timestamp", kind="stable")
    out = {}
    for snapshot in pairs["event_timestamp"].unique():
        latest = pairs[pairs["event_timestamp"] <= snapshot].drop_duplicates(
            ["user_id", "author_id"], keep="last"
        )
        ranked = latest.sort_values(
            ["user_id", "ua_impressions", "author_id"], ascending=[True, False, True]
        )
        kept = ranked[ranked.groupby("user_id").cumcount() < k]
        keys = kept["user_id"].to_numpy(np.int64) << 32 | kept["author_id"].to_numpy(np.int64)
        out[pd.Timestamp(snapshot)] = np.sort(keys)
    return out


def in_top_k(frame: pd.DataFrame, tops: dict[pd.Timestamp, np.ndarray]) -> np.ndarray:
    """Whether each training row's author is in its user's top K at the snapshot it reads."""
    snapshots = pd.DatetimeIndex(sorted(tops)).tz_convert(None).to_numpy("datetime64[us]")
    times = frame["event_timestamp"].dt.tz_convert(None).to_numpy("datetime64[us]")
    which = np.searchsorted(snapshots, times, side="right") - 1
    keys = frame["user_id"].to_numpy(np.int64) << 32 | frame["author_id"].to_numpy(np.int64)
    kept = np.zeros(len(frame), dtype=bool)
    ordered = sorted(tops)
    for i in np.unique(which[which >= 0]):
        rows = np.flatnonzero(which == i)
        kept[rows] = np.isin(keys[rows], tops[ordered[i]], assume_unique=False)
    return kept


def masked_training_set(source: Path, target: Path, kept: np.ndarray) -> float:
    """Copy the training set with the pair features of rows outside the top K set to null.

    Returns the share of rows with pair features that keep them.
    """
    frame = pq.read_table(source).to_pandas()
    had = frame[PAIR_FEATURES[0]].notna().to_numpy()
    for name in PAIR_FEATURES:
        frame.loc[~kept, name] = np.nan
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(target, index=False)
    return float((had & kept).sum() / max(had.sum(), 1))


def lift_share(ws: Workspace, dataset: Path, config: TrainConfig) -> float:
    """Train on ``dataset`` and return the test day's share of the oracle's lift @50."""
    actions = load_actions()
    result = train(dataset, config, actions, progress=False)
    evaluation = evaluate(result.ranker, result.splits.test, ws, actions)
    return float(evaluation.result(actions)["oracle_lift_share_at_50"])


def user_key_bytes(url: str, pairs: pd.DataFrame, k: int, sample: int = 2000) -> float:
    """Mean ``MEMORY USAGE`` of a user's top-K hash in Feast's Redis layout (scratch keys)."""
    latest = pairs.drop_duplicates(["user_id", "author_id"], keep="last")
    ranked = latest.sort_values(
        ["user_id", "ua_impressions", "author_id"], ascending=[True, False, True]
    )
    top = ranked[ranked.groupby("user_id").cumcount() < k]
    client = redis.Redis.from_url(url)
    # A scratch project name: Feast's keys are the serialized entity key plus the
    # project, so these can meet no real key; they are deleted at the end.
    project = f"scratch{uuid.uuid4().hex[:8]}"
    entity = EntityKeys.of(["user_id"])
    view = "user_top_authors"
    names = [_mmh3(f"{view}:{f}") for f in ("ids", "impressions", "positive", "negative")]
    stamp = Timestamp()
    stamp.GetCurrentTime()
    sizes, written = [], []
    try:
        for user, rows in list(top.groupby("user_id"))[:sample]:
            key = redis_keys([entity.encode({"user_id": [user]})[0].tobytes()], project)[0]
            values = [
                Value(int64_list_val=Int64List(val=rows["author_id"].tolist())).SerializeToString(),
                Value(
                    int64_list_val=Int64List(val=rows["ua_impressions"].tolist())
                ).SerializeToString(),
                Value(
                    float_list_val=FloatList(val=rows["ua_positive_rate"].tolist())
                ).SerializeToString(),
                Value(
                    int64_list_val=Int64List(val=rows["ua_negative_count"].tolist())
                ).SerializeToString(),
            ]
            fields = dict(zip(names, values, strict=True))
            fields[f"_ts:{view}".encode()] = stamp.SerializeToString()
            client.hset(key, mapping=fields)
            written.append(key)
            sizes.append(int(client.memory_usage(key, samples=0) or 0))
    finally:
        if written:
            client.delete(*written)
    return float(np.mean(sizes)) if sizes else 0.0


def main() -> None:
    """Measure each K and print the RESULT line."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.affinity_top_k", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workspace", type=Path, default=REPO_ROOT)
    parser.add_argument("--k", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--scratch", type=Path, default=None, help="Folder for masked sets.")
    args = parser.parse_args()
    started = time.perf_counter()
    ws = Workspace(args.workspace)
    source = training_set_path(ws)
    pairs = pq.read_table(ws.data / "features" / "user_author_affinity.parquet").to_pandas()
    frame = pq.read_table(source, columns=["user_id", "author_id", "event_timestamp"]).to_pandas()
    config = TrainConfig()
    today = capacity.plan(capacity.load_figures())
    result: dict[str, Any] = {
        "lift_share_at_50_pairs": round(lift_share(ws, source, config), 4),
        "online_store_tb_at_scale_pairs": round(today.online_store_gb / 1000, 3),
        "redis_shards_pairs": today.redis_shards,
    }
    print(f"today's pair view: lift share @50 {result['lift_share_at_50_pairs']}", flush=True)
    scratch = args.scratch or ws.data / "analysis" / "affinity_top_k"
    for k in args.k:
        kept = in_top_k(frame, top_k_keys(pairs, k))
        dataset = scratch / f"top_{k}.parquet"
        kept_share = masked_training_set(source, dataset, kept)
        share = lift_share(ws, dataset, config)
        per_key = user_key_bytes(args.redis, pairs, k)
        at_scale = capacity.plan(capacity.load_figures(), top_k_affinity_bytes=per_key)
        result[f"k{k}"] = {
            "lift_share_at_50": round(share, 4),
            "pair_rows_kept": round(kept_share, 4),
            "bytes_per_user_key": round(per_key, 1),
            "affinity_tb_at_scale": round(at_scale.store_bytes["user_author"] / TB, 3),
            "online_store_tb_at_scale": round(at_scale.online_store_gb / 1000, 3),
            "redis_shards_for_memory": at_scale.shards_for_memory,
            "redis_shards_for_ops": at_scale.shards_for_ops,
            "redis_shards": at_scale.redis_shards,
        }
        print(f"K={k}: {result[f'k{k}']}", flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
