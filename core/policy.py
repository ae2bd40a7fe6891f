"""The ranking policy shared by offline evaluation, replay and the serving endpoint.

Scores are the weighted engagement of predicted probabilities, with the
weights of ``core/actions.yaml`` (negative actions subtract), so the model
optimises exactly the business metric. Post-ranking heuristics keep a feed
readable: a tweet appears once, and an author's k-th tweet in the feed has its
score multiplied by ``diversity ** k`` (positive scores shrink, negative ones
grow more negative), so one prolific author cannot fill the page.

Pure numpy and vectorised: no Python loop over candidates.
"""

from __future__ import annotations

import numpy as np

from core.actions import ActionSet, load_actions


def action_weights(actions: ActionSet | None = None) -> np.ndarray:
    """The action weights in head order, float64."""
    return np.asarray((actions or load_actions()).weights, dtype=np.float64)


def weighted_scores(
    probs: np.ndarray, actions: ActionSet | None = None, weights: np.ndarray | None = None
) -> np.ndarray:
    """Expected weighted engagement per candidate: ``probs @ weights``.

    Args:
        probs: (n, n_actions) probabilities in head order.
        actions: the weights (default ``core/actions.yaml``).
        weights: :func:`action_weights` computed once by the caller (serving).
    """
    weights = action_weights(actions) if weights is None else weights
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(weights):
        raise ValueError(f"probs must have shape (n, {len(weights)}), got {probs.shape}")
    return probs @ weights


def _occurrence(keys: np.ndarray, order: np.ndarray) -> np.ndarray:
    """For candidates visited in ``order``: how many earlier ones share their key (0, 1, ...)."""
    ordered = keys[order]
    sort = np.argsort(ordered, kind="stable")
    sorted_keys = ordered[sort]
    starts = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(sort)), 0))
    count = np.empty(len(sort), dtype=np.int64)
    count[sort] = np.arange(len(sort)) - group_start
    out = np.empty_like(count)
    out[order] = count
    return out


def rank(
    scores: np.ndarray,
    tweet_ids: np.ndarray,
    author_ids: np.ndarray,
    limit: int | None = None,
    diversity: float = 0.8,
) -> np.ndarray:
    """Indices of the candidates to show, best first.

    Sorts the candidates :func:`diversity_adjusted` keeps by their adjusted score.

    Args:
        scores: (n,) weighted scores (see :func:`weighted_scores`).
        tweet_ids: (n,) candidate tweet ids.
        author_ids: (n,) their authors.
        limit: keep at most this many (None: all).
        diversity: the per-repeat multiplier in (0, 1]; 1 turns diversity off.

    Returns:
        int64 indices into the inputs.
    """
    kept, adjusted = diversity_adjusted(scores, tweet_ids, author_ids, diversity)
    order = kept[np.argsort(-adjusted, kind="stable")]
    return order if limit is None else order[:limit]


def diversity_adjusted(
    scores: np.ndarray,
    tweet_ids: np.ndarray,
    author_ids: np.ndarray,
    diversity: float = 0.8,
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates worth ranking and the scores the feed sorts them by.

    Duplicate tweet ids keep only their best-scored copy. Each author's k-th
    tweet (k = 0, 1, ... in raw score order) has its score multiplied by
    ``diversity ** k`` for positive scores and divided by it for negative ones.

    Returns:
        (kept, adjusted): int64 indices into the inputs (in input order) and
        their adjusted scores. :func:`rank` sorts them; exploration samples from them.
    """
    if not 0.0 < diversity <= 1.0:
        raise ValueError(f"diversity must be in (0, 1], got {diversity}")
    scores = np.asarray(scores, dtype=np.float64)
    by_score = np.argsort(-scores, kind="stable")
    keep = _occurrence(np.asarray(tweet_ids), by_score) == 0
    kept = np.flatnonzero(keep)
    repeat = _occurrence(np.asarray(author_ids)[kept], np.argsort(-scores[kept], kind="stable"))
    factor = diversity ** repeat.astype(np.float64)
    adjusted = np.where(scores[kept] >= 0, scores[kept] * factor, scores[kept] / factor)
    return kept, adjusted


def reverse_chronological(created_at: np.ndarray, limit: int | None = None) -> np.ndarray:
    """The baseline: indices newest first (ties keep input order).

    Args:
        created_at: (n,) creation times (any orderable dtype: datetime64, Unix seconds).
        limit: keep at most this many (None: all).
    """
    created = np.asarray(created_at)
    if created.dtype.kind == "M":
        created = created.astype("datetime64[us]").astype(np.int64)
    order = np.argsort(-np.asarray(created, dtype=np.float64), kind="stable")
    return order if limit is None else order[:limit]


def rank_within_groups(groups: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """0-based rank of each row inside its group by descending score (ties keep input order).

    Ranks many feeds at once (offline evaluation and replay rank every visit in one call).
    """
    order = np.lexsort((-np.asarray(scores, dtype=np.float64), np.asarray(groups)))
    sorted_groups = np.asarray(groups)[order]
    starts = np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order)) - group_start
    return ranks
