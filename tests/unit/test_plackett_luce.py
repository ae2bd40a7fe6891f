"""Served exploration: Plackett-Luce draws, their exact propensities, and the served feed."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from core.exploration import (
    plackett_luce,
    plackett_luce_logits,
    served_feed,
    top_k_shares,
)
from core.policy import rank

pytestmark = pytest.mark.unit

SCORES = np.array([1.2, 0.9, 0.5, 0.1, -0.4])


def test_each_rankings_frequency_is_the_product_of_its_propensities() -> None:
    logits = plackett_luce_logits(SCORES, temperature=1.0)
    rng = np.random.default_rng(0)
    draws = 60_000
    seen: Counter[tuple[int, ...]] = Counter()
    product: dict[tuple[int, ...], float] = {}
    for _ in range(draws):
        order, propensity = plackett_luce(logits, 2, rng)
        seen[tuple(order.tolist())] += 1
        product[tuple(order.tolist())] = float(np.prod(propensity))
    assert len(seen) == 20  # every ordered pair of 5 candidates
    for ranking, count in seen.items():
        expected = product[ranking]
        assert abs(count / draws - expected) < 4 * np.sqrt(expected * (1 - expected) / draws)
    exact = np.exp(logits) / np.exp(logits).sum()
    first = [r[0] for r in seen.elements()]
    np.testing.assert_allclose(np.bincount(first, minlength=5) / draws, exact, atol=0.01)


def test_propensities_stay_finite_for_logits_far_below_the_best() -> None:
    scores = np.concatenate(([0.0], np.full(499, -1.0)))
    logits = plackett_luce_logits(scores, temperature=0.001)  # exp() of these underflows
    order, propensity = plackett_luce(logits, 50, np.random.default_rng(1))
    assert order[0] == 0 and propensity[0] == pytest.approx(1.0)
    assert np.isfinite(propensity).all() and (propensity > 0).all()


def test_top_k_shares_sum_to_k_and_are_exact_where_a_formula_exists() -> None:
    logits = plackett_luce_logits(SCORES, temperature=0.5)
    rng = np.random.default_rng(2)
    shares, errors = top_k_shares(logits, 3, 20_000, rng)
    assert shares.sum() == pytest.approx(3.0, abs=1e-9)
    assert (errors > 0).all() and (errors < 0.004).all()
    # Exhaustive: the probability of each candidate in the top 3, from every ordering.
    exact = np.zeros(5)
    weights = np.exp(logits)
    for ranking in itertools.permutations(range(5), 3):
        left, chance = weights.sum(), 1.0
        for i in ranking:
            chance *= weights[i] / left
            left -= weights[i]
        exact[list(ranking)] += chance
    assert np.abs(shares - exact).max() < 4 * errors.max()
    softmax, none = top_k_shares(logits, 1, 10, rng)
    np.testing.assert_allclose(softmax, weights / weights.sum())
    assert not none.any()
    assert (top_k_shares(logits, 5, 10, rng)[0] == 1.0).all()


def test_the_greedy_feed_is_the_ranking_and_the_explored_one_is_reproducible() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=200)
    tweets = np.arange(200)
    authors = rng.integers(0, 40, 200)
    common = {"diversity": 0.8, "temperature": 0.5}

    greedy = served_feed(scores, tweets, authors, 50, share=0.0, rng=rng, **common)
    assert not greedy.explored and greedy.cost == 0.0
    np.testing.assert_array_equal(greedy.order, rank(scores, tweets, authors, 50, 0.8))
    assert (greedy.propensity == 1.0).all()

    def explored(seed: int) -> np.ndarray:
        feed = served_feed(
            scores, tweets, authors, 50, share=1.0, rng=np.random.default_rng(seed), **common
        )
        assert feed.explored and feed.cost >= 0.0
        assert ((feed.propensity > 0) & (feed.propensity <= 1)).all()
        assert len(set(feed.order.tolist())) == 50
        return feed.order

    np.testing.assert_array_equal(explored(7), explored(7))
    assert any((explored(7) != explored(s)).any() for s in range(8, 12))


def test_a_temperature_of_zero_or_a_share_above_one_is_refused() -> None:
    with pytest.raises(ValueError, match="temperature"):
        plackett_luce_logits(SCORES, 0.0)
    with pytest.raises(ValueError, match="share"):
        served_feed(
            SCORES,
            np.arange(5),
            np.arange(5),
            3,
            diversity=1.0,
            share=1.5,
            temperature=1.0,
            rng=np.random.default_rng(0),
        )
