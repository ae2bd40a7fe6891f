"""The shared ranking policy: weighted score, de-duplication, author diversity, chrono."""

from __future__ import annotations

import numpy as np
import pytest

from core.actions import load_actions
from core.policy import (
    rank,
    rank_within_groups,
    reverse_chronological,
    weighted_scores,
)

pytestmark = pytest.mark.unit


def test_weighted_scores_use_the_configured_weights() -> None:
    actions = load_actions()
    probs = np.eye(len(actions.names))
    np.testing.assert_allclose(weighted_scores(probs), actions.weights)
    with pytest.raises(ValueError, match="shape"):
        weighted_scores(np.ones((2, len(actions.names) + 1)))


def test_rank_sorts_by_score_and_respects_limit() -> None:
    order = rank(np.array([1.0, 3.0, 2.0]), np.array([1, 2, 3]), np.array([10, 20, 30]), limit=2)
    assert order.tolist() == [1, 2]


def test_duplicate_tweets_keep_their_best_copy() -> None:
    order = rank(np.array([1.0, 3.0, 2.0]), np.array([7, 7, 8]), np.array([1, 1, 2]))
    assert order.tolist() == [1, 2]


def test_author_diversity_demotes_an_authors_repeats() -> None:
    scores = np.array([10.0, 9.0, 8.5, 8.0])
    authors = np.array([1, 1, 1, 2])
    assert rank(scores, np.arange(4), authors, diversity=1.0).tolist() == [0, 1, 2, 3]
    # Author 1's second tweet: 9 * 0.8 = 7.2; third: 8.5 * 0.64 = 5.44; author 2's 8 moves up.
    assert rank(scores, np.arange(4), authors, diversity=0.8).tolist() == [0, 3, 1, 2]


def test_negative_scores_of_repeats_become_more_negative() -> None:
    order = rank(np.array([-1.0, -1.1, -1.5]), np.arange(3), np.array([1, 1, 2]), diversity=0.5)
    assert order.tolist() == [0, 2, 1]


def test_reverse_chronological_is_newest_first() -> None:
    created = np.array(["2026-01-01", "2026-01-03", "2026-01-02"], dtype="datetime64[s]")
    assert reverse_chronological(created).tolist() == [1, 2, 0]
    assert reverse_chronological(np.array([5, 9, 7]), limit=1).tolist() == [1]


def test_rank_within_groups_ranks_each_feed_separately() -> None:
    groups = np.array([2, 1, 2, 1, 2])
    scores = np.array([0.1, 0.5, 0.9, 0.7, 0.5])
    assert rank_within_groups(groups, scores).tolist() == [2, 1, 0, 0, 1]
