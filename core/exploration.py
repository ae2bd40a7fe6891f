"""Exploration: feeds that are not always the model's greedy order, so the logs teach something.

Two kinds live here.

**Plackett-Luce sampling (served by /rank).** On a configured share of
requests the feed is drawn from the Plackett-Luce model over the request's
scores instead of sorted by them: slot by slot, a remaining candidate is
picked with probability proportional to ``exp(score / temperature)``. Every
shown item then has an exact **propensity**, the probability that the policy
put it in that slot given the slots above, which off-policy evaluation
(:mod:`metrics.offpolicy`) needs to weigh what was logged. The probability
that an item appears anywhere in the top ``limit`` has no closed form; it is
estimated by :func:`top_k_shares` from repeated draws, with its error.

**Thompson sampling (offline replay's ``model+explore``).**

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

from core.policy import diversity_adjusted


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


def plackett_luce_logits(scores: npt.ArrayLike, temperature: float) -> npt.NDArray[np.float64]:
    """The Plackett-Luce logits of a request's scores: ``(score - max) / (temperature * std)``.

    The temperature is in standard deviations of the request's scores, so one
    setting means the same softness whatever the score scale (the action
    weights make weighted scores span orders of magnitude). Equal scores
    (std 0) give equal logits: a uniform draw.

    Raises:
        ValueError: ``temperature`` not > 0.
    """
    if not temperature > 0:
        raise ValueError(f"exploration temperature must be > 0, got {temperature}")
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    spread = float(s.std())
    return (s - s.max()) / (temperature * spread) if spread > 0 else np.zeros_like(s)


def plackett_luce(
    logits: npt.ArrayLike, limit: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """A ranking drawn from the Plackett-Luce model, and each slot's exact propensity.

    Slot by slot, each remaining candidate is picked with probability
    ``exp(l_i) / sum(exp(l_j) for j remaining)``. The draw is one argsort of
    ``logits + Gumbel noise`` (the Gumbel-top-k trick), which has exactly
    that distribution.

    Args:
        logits: (n,) see :func:`plackett_luce_logits`.
        limit: slots to fill (at most n are).
        rng: the source of randomness (a request's seeded generator).

    Returns:
        The candidates' indices slot by slot, and per slot the probability that
        the sampler put that candidate there given the slots above it (their
        product is the probability of the whole ranking).
    """
    z = np.asarray(logits, dtype=np.float64)
    order = np.argsort(-(z + rng.gumbel(size=z.shape)), kind="stable")[:limit]
    # Log of the weight still unplaced at slot k: the candidates never placed,
    # plus slots k.. (a reverse running logaddexp; no exp of a large logit).
    unplaced = np.delete(z, order)
    tail = np.logaddexp.accumulate(z[order][::-1])[::-1]
    rest = np.logaddexp(tail, np.logaddexp.reduce(unplaced)) if len(unplaced) else tail
    return order.astype(np.int64), np.exp(z[order] - rest)


def top_k_shares(
    logits: npt.ArrayLike, limit: int, draws: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """P(candidate in the top ``limit``) under Plackett-Luce, by Monte Carlo, with its error.

    Exact only for ``limit`` 1 (the softmax) or ``limit >= n`` (1 for all);
    otherwise the share of ``draws`` Gumbel-top-k rankings that show the
    candidate. The share is floored at ``1 / (2 * draws)``: a candidate that
    was shown has a positive probability even if no draw showed it again.

    Returns:
        (shares, standard errors), each (n,).
    """
    z = np.asarray(logits, dtype=np.float64)
    n = len(z)
    if limit >= n:
        return np.ones(n), np.zeros(n)
    if limit == 1:
        p = np.exp(z - np.logaddexp.reduce(z))
        return p, np.zeros(n)
    keys = z[None, :] + rng.gumbel(size=(draws, n))
    top = np.argpartition(-keys, limit - 1, axis=1)[:, :limit]
    counts = np.bincount(top.ravel(), minlength=n).astype(np.float64)
    shares = np.maximum(counts / draws, 0.5 / draws)
    return shares, np.sqrt(shares * (1.0 - shares) / draws)


@dataclass(frozen=True)
class ServedFeed:
    """A feed as /rank serves it: the slots, their propensities, and what exploring cost."""

    order: npt.NDArray[np.int64]
    """Indices into the candidates, slot by slot."""
    propensity: npt.NDArray[np.float64]
    """Per slot: the probability the policy put that candidate there, given the slots above."""
    explored: bool
    cost: float
    """Discounted weighted engagement given up against the greedy feed (0 when greedy):
    ``sum_k d(k) * (greedy_k - shown_k)`` over the diversity-adjusted scores, with
    ``d(k) = 1 / log2(k + 2)`` standing in for the unknown position bias."""


def served_feed(  # pylint: disable=too-many-arguments
    scores: npt.ArrayLike,
    tweet_ids: npt.ArrayLike,
    author_ids: npt.ArrayLike,
    limit: int,
    *,
    diversity: float,
    share: float,
    temperature: float,
    rng: np.random.Generator,
) -> ServedFeed:
    """The greedy feed, or on a ``share`` of requests a Plackett-Luce draw over the same scores.

    Both rank what :func:`core.policy.diversity_adjusted` keeps, by its adjusted
    scores: the greedy feed sorts them (every propensity 1), the explored one
    samples from them (:func:`plackett_luce`). The first number ``rng`` draws
    decides which, so a seeded generator gives the same feed again.
    """
    _check_share(share)
    kept, adjusted = diversity_adjusted(
        np.asarray(scores), np.asarray(tweet_ids), np.asarray(author_ids), diversity
    )
    greedy = np.argsort(-adjusted, kind="stable")[:limit]
    if not rng.random() < share:
        return ServedFeed(kept[greedy], np.ones(len(greedy)), False, 0.0)
    picks, propensity = plackett_luce(plackett_luce_logits(adjusted, temperature), limit, rng)
    discount = 1.0 / np.log2(np.arange(len(greedy)) + 2.0)
    cost = float(discount @ adjusted[greedy] - discount @ adjusted[picks])
    return ServedFeed(kept[picks], propensity, True, cost)
