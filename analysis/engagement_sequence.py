"""The user's recent engagement sequence as features: what it adds, measured before it is served.

Issue 22 asks to try the user's last N engaged authors and topics (X's 2026
ranker reads the engagement sequence). Served, that is a Feast list feature
kept fresh by ``/events``, an on-demand view against the candidate and a new
FeatureService; this measures what it is worth first. For every impression,
from the user's impressions of earlier visits only (point in time: a feed is
ranked before the visit's own engagements):

- ``seq_length``: the positive engagements in the window (the last ``window``);
- ``seq_author_share``: the share of them on the candidate's author (NaN if none);
- ``seq_topic_share``: the share on the candidate tweet's topic (NaN if none);
- ``seq_negative_author_hits``: the candidate's author among the user's last
  ``window`` hides and reports.

The columns are added to a copy of the workspace's training set, and the
default config (``TrainConfig()``, the ensemble) trains with and without them,
once per seed.

    .venv/bin/python -m analysis.engagement_sequence [--workspace DIR] [--window 32] [--seeds 7 10]

Ends with ``RESULT {json}``: ``lift_share_at_50_without_seed<S>`` and
``lift_share_at_50_with_seed<S>`` per seed, and ``mean_gain_at_50``. Measured
2026-12-07 with a scratch version of this and one network per seed: +0.0015
and +0.002 (docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.lift_gap import fit_and_score
from core import tables
from core.actions import ActionSet, load_actions
from core.feast_store import training_set_path
from core.workspace import REPO_ROOT, Workspace
from training.train import TrainConfig

WINDOW = 32
"""Engagements kept per user: the length of the sequence."""


def window_hits(
    events: pd.DataFrame, rows: pd.DataFrame, key: str, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, among the user's last ``window`` events before ``visit_t``, how many share ``key``.

    Args:
        events: ``user_id``, ``t`` and ``key`` of each engagement.
        rows: ``user_id``, ``visit_t`` (the visit's first impression time) and ``key``.

    Returns:
        (hits, length): the matching events and the events in the window, per row.
    """
    events = events.sort_values(["user_id", "t"], kind="stable")
    users = events["user_id"].to_numpy(np.int64)
    times = events["t"].to_numpy(np.int64)
    first = np.searchsorted(users, users, side="left")
    position = np.arange(len(events)) - first  # the event's index in its user's sequence
    row_users = rows["user_id"].to_numpy(np.int64)
    # The user's events before the visit: (user, time) pairs are sorted, so search them.
    order = pd.MultiIndex.from_arrays([users, times])
    asked = pd.MultiIndex.from_arrays([row_users, rows["visit_t"].to_numpy(np.int64)])
    before = order.searchsorted(asked, side="left") - np.searchsorted(users, row_users)
    start = np.maximum(before - window, 0)
    # Each (user, key) pair's events by position: count those in [start, before).
    codes, pairs = pd.factorize(pd.MultiIndex.from_arrays([users, events[key].to_numpy()]))
    slots = np.sort(codes.astype(np.int64) * (len(events) + 1) + position)
    row_codes = pd.Index(pairs).get_indexer(
        pd.MultiIndex.from_arrays([row_users, rows[key].to_numpy()])
    )
    found = row_codes >= 0
    base = row_codes.astype(np.int64) * (len(events) + 1)
    hits = np.where(
        found,
        np.searchsorted(slots, base + before) - np.searchsorted(slots, base + start),
        0,
    )
    return hits, before - start


def sequence_features(
    impressions: pd.DataFrame, actions: ActionSet, window: int = WINDOW
) -> pd.DataFrame:
    """The four sequence columns per impression (``impression_id`` first), point in time.

    Args:
        impressions: the world's impressions with each tweet's ``topic`` and the
            time ``t`` (microseconds).
    """
    frame = impressions.assign(visit_t=impressions.groupby("visit_id")["t"].transform("min"))
    positive = frame[list(actions.positive)].to_numpy().any(axis=1)
    negative = frame[list(actions.negative)].to_numpy().any(axis=1)
    liked = frame.loc[positive, ["user_id", "t", "author_id", "topic"]]
    author_hits, length = window_hits(liked, frame, "author_id", window)
    topic_hits, _ = window_hits(liked, frame, "topic", window)
    negative_hits, _ = window_hits(
        frame.loc[negative, ["user_id", "t", "author_id"]], frame, "author_id", window
    )
    some = length > 0
    return pd.DataFrame(
        {
            "impression_id": frame["impression_id"].to_numpy(),
            "seq_length": length.astype(np.float64),
            "seq_author_share": np.where(some, author_hits / np.maximum(length, 1), np.nan),
            "seq_topic_share": np.where(some, topic_hits / np.maximum(length, 1), np.nan),
            "seq_negative_author_hits": negative_hits.astype(np.float64),
        }
    )


def with_sequence(ws: Workspace, actions: ActionSet, window: int, out: Path) -> Path:
    """A copy of the training set with the sequence columns, matched by ``impression_id``."""
    impressions = tables.read_table(tables.IMPRESSIONS, ws.world).to_pandas()
    topics = tables.read_table(tables.TWEETS, ws.world).to_pandas().set_index("tweet_id")["topic"]
    impressions["topic"] = topics.reindex(impressions["tweet_id"]).to_numpy()
    impressions["t"] = impressions["impression_time"].astype("int64")
    columns = sequence_features(impressions, actions, window).set_index("impression_id")
    table = pq.read_table(training_set_path(ws))
    matched = columns.reindex(table["impression_id"].to_numpy())
    for name in matched.columns:
        table = table.append_column(name, pa.array(matched[name].to_numpy()))
    pq.write_table(table, out)
    return out


def main() -> None:
    """Train with and without the sequence columns and print the lift shares."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.engagement_sequence", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workspace", type=Path, default=REPO_ROOT)
    parser.add_argument("--window", type=int, default=WINDOW, help="Engagements per user.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 10], help="Training seeds.")
    args = parser.parse_args()
    start = time.perf_counter()
    ws, actions = Workspace(args.workspace), load_actions()
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        extended = with_sequence(ws, actions, args.window, Path(tmp) / "with_sequence.parquet")
        for seed in args.seeds:
            config = TrainConfig(seed=seed)
            for name, dataset in (("without", training_set_path(ws)), ("with", extended)):
                share = fit_and_score(dataset, ws, config)["lift_share_at_50"]
                result[f"lift_share_at_50_{name}_seed{seed}"] = share
                print(f"seed {seed}, {name} the sequence: lift share @50 {share:.4f}", flush=True)
    gains = [
        result[f"lift_share_at_50_with_seed{s}"] - result[f"lift_share_at_50_without_seed{s}"]
        for s in args.seeds
    ]
    result["mean_gain_at_50"] = float(np.mean(gains))
    result = {k: round(v, 5) for k, v in result.items()}
    result["seconds"] = round(time.perf_counter() - start, 1)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
