"""Offline replay: each ranking policy on the same held-out visits, judged by the simulator.

Every test-day visit's candidates are ranked by four policies through the
serving ranking code: ``chrono`` (newest first, the brief's baseline),
``model`` (weighted score of the predicted probabilities, with the serving
diversity and de-duplication), ``model+explore`` (the model with a share of
slots given to fresh tweets by Thompson sampling) and ``oracle`` (weighted
score of the TRUE probabilities). The simulator then samples what the user
does with the top ``limit`` tweets, position bias included, with the same
random stream for every policy. The events go through the metrics module,
each policy a cohort: weighted engagement per user and Welch's interval of
each policy's difference to ``chrono``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from core import tables
from core.actions import IMPRESSION, ActionSet, load_actions
from core.exploration import ExplorationPolicy, explore
from core.feast_store import training_set_path
from core.model import Ranker
from core.policy import rank, weighted_scores
from core.workspace import Workspace
from metrics.ab import Difference, welch_difference
from metrics.engagement import user_actions
from simulation.truth import read_oracle, sample_outcomes

POLICIES = ("chrono", "model", "model+explore", "oracle")
CONTROL = "chrono"
FRESH_IMPRESSIONS = 20
"""A tweet shown fewer times than this is fresh: exploration may give it a slot."""


@dataclass(frozen=True)
class ReplayResult:
    """Per-policy weighted engagement per user and the differences to ``chrono``."""

    table: pd.DataFrame
    differences: dict[str, Difference]
    visits: int
    users: int

    def result(self) -> dict[str, float]:
        """The ``RESULT`` keys of ``feedrank evaluate replay``."""
        model = self.differences["model"]
        means = self.table.set_index("policy")["weighted_engagement_per_user"]
        return {
            "model_minus_chrono": model.absolute,
            "model_minus_chrono_ci_low": model.ci_low,
            "model_minus_chrono_ci_high": model.ci_high,
            "oracle_minus_model": float(means["oracle"] - means["model"]),
        }


def held_out_day(workspace: Workspace) -> pd.DataFrame:
    """Rows of the training set on its last day: the held-out visits."""
    frame = pq.read_table(training_set_path(workspace)).to_pandas()
    day = frame["event_timestamp"].dt.floor("D")
    return frame[day == day.max()].reset_index(drop=True)


def _orders(
    frame: pd.DataFrame,
    probs: np.ndarray,
    oracle: np.ndarray,
    created: np.ndarray,
    actions: ActionSet,
    limit: int,
    rng: np.random.Generator,
    explore_share: float,
) -> dict[str, list[np.ndarray]]:
    """Per policy, per visit: the row indices shown, best first."""
    model_score = weighted_scores(probs, actions)
    true_score = weighted_scores(oracle, actions)
    tweets = frame["tweet_id"].to_numpy()
    authors = frame["author_id"].to_numpy()
    shown = frame["tweet_impressions"].fillna(0).to_numpy()
    # The bandit's success: a long dwell, at most one per impression (a like and a
    # long dwell of the same impression would count twice in a sum of actions).
    engaged = np.minimum(frame["tweet_long_dwell_count"].fillna(0).to_numpy(), shown)
    policy = ExplorationPolicy(share=explore_share, top_n=limit)
    out: dict[str, list[np.ndarray]] = {p: [] for p in POLICIES}
    for rows in frame.groupby("visit_id", sort=True).indices.values():
        rows = np.asarray(rows)
        out["chrono"].append(rows[np.argsort(-created[rows], kind="stable")][:limit])
        model_order = rows[rank(model_score[rows], tweets[rows], authors[rows])]
        out["model"].append(model_order[:limit])
        out["oracle"].append(
            rows[rank(true_score[rows], tweets[rows], authors[rows], diversity=1.0)][:limit]
        )
        fresh = model_order[shown[model_order] < FRESH_IMPRESSIONS]
        row_of = dict(zip(tweets[model_order], model_order, strict=True))
        feed = explore(
            tweets[model_order], tweets[fresh], engaged[fresh], shown[fresh], rng, policy
        )
        out["model+explore"].append(np.array([row_of[t] for t in feed[:limit]], dtype=np.int64))
    return out


def _events(
    frame: pd.DataFrame,
    orders: dict[str, list[np.ndarray]],
    oracle: np.ndarray,
    actions: ActionSet,
    seed: int,
    draws: int,
) -> tuple[pa.Table, pa.Table]:
    """Sampled events of every policy (event-log schema) and the user -> policy cohorts.

    Users are keyed per policy (``user * n_policies + policy``) so each
    policy is a cohort of its own; every policy sees the same random draws.
    """
    users = frame["user_id"].to_numpy()
    parts = []
    for p, name in enumerate(POLICIES):
        rows = np.concatenate(orders[name])
        positions = np.concatenate([np.arange(len(o)) for o in orders[name]])
        for draw in range(draws):
            rng = np.random.default_rng([seed, draw])
            outcomes, dwell = sample_outcomes(rng, oracle[rows], positions, actions)
            key = users[rows] * len(POLICIES) + p
            parts.append((key, frame["tweet_id"].to_numpy()[rows], outcomes, dwell))
    user_col, tweet_col, action_col, dwell_col = [], [], [], []
    for key, tweet, outcomes, dwell in parts:
        user_col.append(key)
        tweet_col.append(tweet)
        action_col.append(np.full(len(key), IMPRESSION, dtype=object))
        dwell_col.append(dwell.astype(np.float64))
        for j, action in enumerate(actions.names):
            hit = outcomes[:, j]
            user_col.append(key[hit])
            tweet_col.append(tweet[hit])
            action_col.append(np.full(int(hit.sum()), action, dtype=object))
            dwell_col.append(np.full(int(hit.sum()), np.nan))
    n = sum(len(u) for u in user_col)
    events = pa.table(
        {
            "event_id": pa.array(np.arange(n).astype(str)),
            "user_id": pa.array(np.concatenate(user_col), pa.int64()),
            "tweet_id": pa.array(np.concatenate(tweet_col), pa.int64()),
            "action": pa.array(np.concatenate(action_col), pa.string()),
            "dwell_seconds": pa.array(np.concatenate(dwell_col), pa.float32(), from_pandas=True),
            "timestamp": pa.array(np.zeros(n, dtype="datetime64[us]")).cast(
                pa.timestamp("us", tz="UTC")
            ),
        }
    )
    keys = np.unique(np.concatenate(user_col))
    cohorts = pa.table(
        {
            "user_id": pa.array(keys, pa.int64()),
            "cohort": pa.array(np.asarray(POLICIES, dtype=object)[keys % len(POLICIES)]),
        }
    )
    return events, cohorts


def replay(
    workspace: Workspace,
    ranker: Ranker,
    limit: int = 50,
    explore_share: float = 0.1,
    draws: int = 5,
    seed: int = 0,
    actions: ActionSet | None = None,
) -> ReplayResult:
    """Replay the held-out visits under every policy and compare them to ``chrono``.

    Args:
        workspace: holds the training set (its last day is held out) and the truth.
        ranker: the model to replay (e.g. the champion).
        limit: tweets shown per visit.
        explore_share: share of the top ``limit`` slots given to fresh tweets.
        draws: independent simulations of each visit (narrower intervals).
        seed: seeds exploration and the simulated users.
    """
    actions = actions or load_actions()
    frame = held_out_day(workspace)
    probs = ranker.predict_proba({c: frame[c].to_numpy() for c in frame.columns})
    oracle = read_oracle(workspace.truth, frame["impression_id"].to_numpy(), actions)
    created = tables.tweet_created(workspace.world, frame["tweet_id"].to_numpy()).astype(np.float64)
    orders = _orders(
        frame, probs, oracle, created, actions, limit, np.random.default_rng(seed), explore_share
    )
    events, cohorts = _events(frame, orders, oracle, actions, seed, draws)
    counts = user_actions(events, cohorts=cohorts, actions=actions)
    scores = counts.scores(actions) / draws
    by_policy = {p: scores[counts.cohort == p] for p in POLICIES}
    differences = {p: welch_difference(by_policy[p], by_policy[CONTROL]) for p in POLICIES}
    rows = []
    for p in POLICIES:
        d = differences[p]
        in_policy = counts.cohort == p
        rows.append(
            {
                "policy": p,
                "users": int(in_policy.sum()),
                "weighted_engagement_per_user": float(by_policy[p].mean()),
                "minus_chrono": d.absolute,
                "ci_low": d.ci_low,
                "ci_high": d.ci_high,
                **{
                    f"{a}_per_user": float(
                        counts.counts[a][in_policy].sum() / in_policy.sum() / draws
                    )
                    for a in actions.names
                },
            }
        )
    return ReplayResult(
        table=pd.DataFrame(rows),
        differences=differences,
        visits=len(orders[CONTROL]),
        users=int(frame["user_id"].nunique()),
    )


def plot(result: ReplayResult, path: Path) -> Path:
    """Bar chart of weighted engagement per user by policy, with 95% intervals vs chrono."""
    table = result.table
    fig = Figure(figsize=(6, 4))  # no pyplot: no GUI backend, no global state
    ax = fig.add_subplot()
    base = float(table.loc[table.policy == CONTROL, "weighted_engagement_per_user"].iloc[0])
    errors = np.array([table.minus_chrono - table.ci_low, table.ci_high - table.minus_chrono])
    ax.bar(
        table.policy,
        table.weighted_engagement_per_user,
        yerr=errors,
        capsize=6,
        color=["#999999", "#1f77b4", "#2ca02c", "#ff7f0e"],
    )
    ax.axhline(base, color="black", linewidth=0.8, linestyle="--")
    ax.set_ylabel("weighted engagement per user")
    ax.set_xlabel("error bars: 95% Welch interval of the difference to chrono")
    ax.set_title(f"Replay of {result.visits:,} held-out visits ({result.users:,} users)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
