"""Thompson-sampling exploration: give fresh tweets a few feed slots while they are unknown.

A fresh tweet has no engagement history, so the model cannot rank it with
confidence and, ranked greedily, it may never be shown long enough to learn
better. Thompson sampling treats each fresh tweet as a Bernoulli bandit arm
(engaged or not, per impression), keeps a Beta posterior over its engagement
rate, and ranks fresh tweets by one random draw from that posterior: a tweet
with few impressions has a wide posterior and sometimes draws high (it gets
explored), a tweet with many impressions draws close to its true rate (it is
exploited, or left out). A share of the feed's top slots is reserved for the
best draws; the model's order fills the rest.

All functions are pure: randomness comes from the ``numpy.random.Generator``
passed in, so a seeded generator gives a reproducible feed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class BetaPrior:
    """The Beta(alpha, beta) prior of a tweet's engagement rate before any impression.

    ``alpha / (alpha + beta)`` is the rate a brand-new tweet is assumed to
    have, and ``alpha + beta`` how many impressions that belief is worth; the
    uniform Beta(1, 1) is the default, a prior centred on the feed's average
    engagement rate is the usual refinement.
    """

    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        if self.alpha <= 0 or self.beta <= 0:
            raise ValueError(f"Beta prior needs alpha > 0 and beta > 0, got {self}")


@dataclass(frozen=True)
class ExplorationPolicy:
    """How much of the feed goes to exploration, and the prior used to rank fresh tweets."""

    share: float = 0.1
    """Share of the top ``top_n`` slots reserved for fresh tweets (0.1: every 10th slot)."""
    top_n: int = 50
    """How many leading slots the share applies to: the part of the feed users see."""
    prior: BetaPrior = field(default_factory=BetaPrior)

    def __post_init__(self) -> None:
        _check_share(self.share)
        if self.top_n < 1:
            raise ValueError(f"top_n must be at least 1, got {self.top_n}")


def thompson_sample(
    successes: npt.ArrayLike,
    failures: npt.ArrayLike,
    rng: np.random.Generator,
    prior: BetaPrior | None = None,
) -> npt.NDArray[np.float64]:
    """Draw one engagement rate per tweet from its Beta posterior.

    The posterior of a Bernoulli rate under a Beta(alpha, beta) prior after
    ``s`` successes and ``f`` failures is Beta(alpha + s, beta + f); one
    vectorised ``Generator.beta`` call draws for every tweet at once.

    Args:
        successes: engaged impressions per tweet.
        failures: impressions without engagement per tweet.
        rng: the source of randomness.
        prior: the Beta prior; default Beta(1, 1).

    Returns:
        One draw in [0, 1] per tweet.

    Raises:
        ValueError: negative counts or arrays of different shapes.
    """
    prior = prior if prior is not None else BetaPrior()
    s = np.asarray(successes, dtype=np.float64)
    f = np.asarray(failures, dtype=np.float64)
    if s.shape != f.shape:
        raise ValueError(f"successes {s.shape} and failures {f.shape} differ in shape")
    if (s < 0).any() or (f < 0).any():
        raise ValueError("successes and failures must be non-negative counts")
    return rng.beta(prior.alpha + s, prior.beta + f)


def thompson_sample_impressions(
    engagements: npt.ArrayLike,
    impressions: npt.ArrayLike,
    rng: np.random.Generator,
    prior: BetaPrior | None = None,
) -> npt.NDArray[np.float64]:
    """:func:`thompson_sample` from the counters serving keeps: engagements and impressions.

    Raises:
        ValueError: a tweet with more engagements than impressions.
    """
    e = np.asarray(engagements, dtype=np.float64)
    n = np.asarray(impressions, dtype=np.float64)
    if (e > n).any():
        raise ValueError("a tweet has more engagements than impressions")
    return thompson_sample(e, n - e, rng, prior)


def exploration_slots(n_slots: int, share: float) -> npt.NDArray[np.int64]:
    """The 0-based positions, spread evenly over ``n_slots``, reserved for exploration.

    Slot ``i`` is reserved when ``floor((i + 1) * share)`` steps up, which puts
    ``floor(n_slots * share)`` slots at even spacing and never at the very
    top when ``share < 1``: with share 0.1 they are slots 9, 19, 29, ...
    (every 10th), so the first thing a user sees is the model's best pick.

    Raises:
        ValueError: ``share`` outside [0, 1].
    """
    _check_share(share)
    steps = np.floor(np.arange(1, n_slots + 1) * share + 1e-9)
    previous = np.concatenate(([0.0], steps[:-1]))
    return np.flatnonzero(steps > previous).astype(np.int64)


def merge_fresh(
    ranked: npt.ArrayLike,
    fresh: npt.ArrayLike,
    fresh_scores: npt.ArrayLike,
    *,
    share: float,
    top_n: int,
) -> npt.NDArray[np.int64]:
    """Put the best-scoring fresh tweets into the reserved slots of a ranked feed.

    The model's order is kept for every other slot. A fresh tweet that the
    model also ranked moves to its reserved slot (no duplicates); fresh tweets
    that win no slot keep their model position, or stay out if the model did
    not rank them. Reserved slots left over when there are fewer fresh tweets
    go back to the model's order, so the feed has no holes.

    Args:
        ranked: tweet ids in the model's order, best first, without repeats.
        fresh: candidate fresh tweet ids, without repeats.
        fresh_scores: one score per fresh tweet, higher first (a Thompson draw).
        share: share of the leading slots reserved for fresh tweets.
        top_n: how many leading slots the share applies to (at most ``len(ranked)``,
            so exploration never outweighs what the model had to offer).

    Returns:
        The merged feed: ``ranked`` plus the fresh tweets placed, as tweet ids.

    Raises:
        ValueError: repeated ids, scores not matching ``fresh``, or a share outside [0, 1].
    """
    ranked_ids = np.asarray(ranked, dtype=np.int64)
    fresh_ids = np.asarray(fresh, dtype=np.int64)
    scores = np.asarray(fresh_scores, dtype=np.float64)
    if scores.shape != fresh_ids.shape:
        raise ValueError(f"{len(fresh_ids)} fresh tweets but {len(scores)} scores")
    for name, ids in (("ranked", ranked_ids), ("fresh", fresh_ids)):
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"{name} tweet ids repeat")

    slots = exploration_slots(min(top_n, len(ranked_ids)), share)
    placed = fresh_ids[np.argsort(-scores, kind="stable")][: len(slots)]
    slots = slots[: len(placed)]
    rest = ranked_ids[~np.isin(ranked_ids, placed)]

    merged = np.empty(len(rest) + len(placed), dtype=np.int64)
    reserved = np.zeros(len(merged), dtype=bool)
    reserved[slots] = True
    merged[reserved] = placed
    merged[~reserved] = rest
    return merged


def explore(
    ranked: npt.ArrayLike,
    fresh: npt.ArrayLike,
    engagements: npt.ArrayLike,
    impressions: npt.ArrayLike,
    rng: np.random.Generator,
    policy: ExplorationPolicy | None = None,
) -> npt.NDArray[np.int64]:
    """Thompson-sample the fresh tweets and merge the winners into the ranked feed.

    Args:
        ranked: tweet ids in the model's order, best first.
        fresh: candidate fresh tweet ids.
        engagements: engaged impressions per fresh tweet so far.
        impressions: impressions per fresh tweet so far.
        rng: the source of randomness (seed it for a reproducible feed).
        policy: share of slots, how many top slots, and the prior.

    Returns:
        The merged feed as tweet ids (see :func:`merge_fresh`).
    """
    policy = policy if policy is not None else ExplorationPolicy()
    draws = thompson_sample_impressions(engagements, impressions, rng, policy.prior)
    return merge_fresh(ranked, fresh, draws, share=policy.share, top_n=policy.top_n)


def _check_share(share: float) -> None:
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"exploration share must be in [0, 1], got {share}")
