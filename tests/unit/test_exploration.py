"""Thompson-sampling exploration: posterior draws, reserved slots, no duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from core.exploration import (
    BetaPrior,
    ExplorationPolicy,
    exploration_slots,
    explore,
    merge_fresh,
    thompson_sample,
    thompson_sample_impressions,
)

pytestmark = pytest.mark.unit


def test_beta_draws_average_to_the_posterior_mean() -> None:
    successes = np.repeat([0, 3, 40], 100_000)
    failures = np.repeat([0, 7, 10], 100_000)
    prior = BetaPrior(alpha=2.0, beta=3.0)

    draws = thompson_sample(successes, failures, np.random.default_rng(0), prior)

    means = draws.reshape(3, -1).mean(axis=1)
    expected = [(2 + s) / (2 + 3 + s + f) for s, f in [(0, 0), (3, 7), (40, 10)]]
    np.testing.assert_allclose(means, expected, atol=0.003)
    assert ((draws >= 0) & (draws <= 1)).all()


def test_draws_are_reproducible_with_a_seeded_generator() -> None:
    first = thompson_sample_impressions([1, 5], [10, 50], np.random.default_rng(42))
    again = thompson_sample_impressions([1, 5], [10, 50], np.random.default_rng(42))
    other = thompson_sample_impressions([1, 5], [10, 50], np.random.default_rng(43))

    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_invalid_counts_are_rejected() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="more engagements than impressions"):
        thompson_sample_impressions([5], [4], rng)
    with pytest.raises(ValueError, match="non-negative"):
        thompson_sample([-1], [1], rng)
    with pytest.raises(ValueError, match="alpha > 0"):
        BetaPrior(alpha=0.0)


def test_slots_are_spread_evenly_and_respect_the_share() -> None:
    assert exploration_slots(50, 0.1).tolist() == [9, 19, 29, 39, 49]
    assert len(exploration_slots(100, 0.29)) == 29
    assert exploration_slots(10, 0.0).tolist() == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        exploration_slots(10, 1.5)


def test_reserved_slots_hold_the_best_fresh_tweets_and_nothing_repeats() -> None:
    ranked = np.arange(100)
    fresh = np.arange(1000, 1030)
    scores = np.linspace(0.0, 1.0, 30)  # tweet 1029 scores best

    merged = merge_fresh(ranked, fresh, scores, share=0.1, top_n=50)

    assert len(merged) == len(set(merged.tolist())) == 105
    assert merged[[9, 19, 29, 39, 49]].tolist() == [1029, 1028, 1027, 1026, 1025]
    is_fresh = merged >= 1000
    assert is_fresh[:50].sum() == 5
    assert not is_fresh[50:].any()
    assert merged[~is_fresh].tolist() == ranked.tolist()


def test_a_fresh_tweet_the_model_also_ranked_moves_instead_of_repeating() -> None:
    ranked = np.arange(20)
    fresh = np.array([15, 100])

    merged = merge_fresh(ranked, fresh, [0.9, 0.1], share=0.1, top_n=20)

    assert merged.tolist().count(15) == 1
    assert merged[9] == 15
    assert merged[19] == 100
    assert sorted(merged.tolist()) == sorted([*range(20), 100])


def test_unused_reserved_slots_go_back_to_the_model_order() -> None:
    merged = merge_fresh(np.arange(30), [500], [0.5], share=0.2, top_n=30)

    assert merged.tolist() == [*range(4), 500, *range(4, 30)]


def test_explore_puts_a_proven_fresh_tweet_first_among_the_fresh() -> None:
    policy = ExplorationPolicy(share=0.25, top_n=8)
    fresh = np.array([7001, 7002, 7003])

    merged = explore(
        np.arange(8), fresh, [990, 1, 2], [1000, 1000, 1000], np.random.default_rng(1), policy
    )

    assert merged[3] == 7001
    assert len(merged) == 10
    assert set(merged[[3, 7]].tolist()) <= set(fresh.tolist())
