"""The evaluation's AUCs: with row weights, and against the true probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from simulation.truth import position_bias
from training.evaluate import expected_auc, label_expectation, weighted_auc

pytestmark = pytest.mark.unit


def _ranked(scores: np.ndarray) -> tuple[np.ndarray, int]:
    uniq, groups = np.unique(scores, return_inverse=True)
    return groups, len(uniq)


def test_weighted_auc_is_sklearns_with_ties_and_weights() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(500), 1)  # many ties
    labels = (rng.random(500) < 0.3).astype(np.float64)
    weights = rng.poisson(1.0, 500).astype(np.float64)
    groups, n = _ranked(scores)
    assert weighted_auc(groups, n, labels, np.ones(500)) == pytest.approx(
        roc_auc_score(labels, scores)
    )
    assert weighted_auc(groups, n, labels, weights) == pytest.approx(
        roc_auc_score(labels, scores, sample_weight=weights)
    )


def test_expected_auc_counts_each_row_as_p_of_a_positive_and_1_minus_p_of_a_negative() -> None:
    rng = np.random.default_rng(3)
    truth = rng.random(300) * 0.1
    scores = np.round(truth + rng.normal(0.0, 0.02, 300), 2)  # noisy, with ties
    stacked = roc_auc_score(
        np.r_[np.ones(300), np.zeros(300)],
        np.r_[scores, scores],
        sample_weight=np.r_[truth, 1.0 - truth],
    )
    assert expected_auc(truth, scores) == pytest.approx(stacked)
    draws = [roc_auc_score(rng.random(300) < truth, scores) for _ in range(2000)]
    assert expected_auc(truth, scores) == pytest.approx(np.mean(draws), abs=0.01)
    assert expected_auc(truth, truth) > expected_auc(truth, scores)


def test_the_label_expectation_is_the_true_probability_at_the_rows_slot() -> None:
    oracle = np.array([[0.5, 0.2], [0.5, 0.2]])
    expected = label_expectation(oracle, np.array([0, 9]))
    np.testing.assert_allclose(expected[0], oracle[0] * position_bias(np.array([0]))[0])
    np.testing.assert_allclose(expected[1], oracle[1] * position_bias(np.array([9]))[0])
    assert expected[1, 0] < expected[0, 0]  # a lower slot is examined less
