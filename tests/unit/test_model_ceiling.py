"""The model's AUC gap to joint_posterior and its paired bootstrap interval, against the
test day's labels and against the true probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.model_ceiling import auc_gaps_vs_joint
from core.actions import load_actions
from training.dataset import Split

pytestmark = pytest.mark.unit


def test_gap_interval_covers_the_gap_and_names_the_worst_head() -> None:
    actions = load_actions()
    rng = np.random.default_rng(1)
    n, heads = 4000, len(actions.names)
    truth = rng.random((n, heads))
    labels = (rng.random((n, heads)) < truth).astype(np.float32)
    joint = truth
    model = truth + rng.normal(0.0, 0.3, (n, heads))  # noisier: a positive gap
    model[:, 0] = truth[:, 0] + rng.normal(0.0, 3.0, n)  # far noisier on the first head
    test = Split(columns={}, labels=labels, keys={"visit_id": np.arange(n) // 10})
    out = auc_gaps_vs_joint(model, joint, test, actions, draws=100)
    assert out["auc_gap_vs_joint_max_head"] == actions.names[0]
    for a in actions.names:
        gap = out[f"auc_gap_vs_joint_{a}"]
        assert 0 < out[f"auc_gap_vs_joint_{a}_ci_low"] < gap < out[f"auc_gap_vs_joint_{a}_ci_high"]


def test_gap_against_the_true_probabilities_is_the_expected_gap_without_label_noise() -> None:
    actions = load_actions()
    rng = np.random.default_rng(2)
    n, heads = 6000, len(actions.names)
    truth = rng.random((n, heads)) * 0.02  # a rare action: about 60 positives per head
    joint = truth
    model = truth * np.exp(rng.normal(0.0, 0.5, (n, heads)))
    test = Split(columns={}, labels=np.zeros((n, heads)), keys={"visit_id": np.arange(n) // 10})

    def gap(labels: np.ndarray) -> dict[str, float | str]:
        drawn = Split(columns={}, labels=labels, keys=test.keys)
        return auc_gaps_vs_joint(model, joint, drawn, actions, draws=50)

    expected = auc_gaps_vs_joint(
        model, joint, test, actions, labels=truth, key="expected_auc_gap_vs_joint", draws=50
    )
    drawn = [gap((rng.random((n, heads)) < truth).astype(np.float64)) for _ in range(40)]
    first = actions.names[0]
    mean_gap = np.mean([d[f"auc_gap_vs_joint_{first}"] for d in drawn])
    assert expected[f"expected_auc_gap_vs_joint_{first}"] == pytest.approx(mean_gap, abs=0.01)
    width = [
        d[f"auc_gap_vs_joint_{first}_ci_high"] - d[f"auc_gap_vs_joint_{first}_ci_low"]
        for d in drawn
    ]
    expected_width = (
        expected[f"expected_auc_gap_vs_joint_{first}_ci_high"]
        - expected[f"expected_auc_gap_vs_joint_{first}_ci_low"]
    )
    assert expected_width < np.mean(width) / 3
