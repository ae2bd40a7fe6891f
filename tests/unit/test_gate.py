"""The promotion gate on metrics alone: no MLflow, no model, no data."""

from __future__ import annotations

import pytest

from training.gate import GATE_METRIC, HEAD_METRIC, OffPolicyEvidence, gate

pytestmark = pytest.mark.unit

HEADS = ("like", "reply")


def _metrics(share: float, **aucs: float) -> dict[str, float]:
    """Gate metric and per-head expected AUCs; heads not named get 0.75.

    The AUCs against the labels are all 0.5: the gate must not read them.
    """
    return {
        GATE_METRIC: share,
        **{f"{HEAD_METRIC}_{h}": aucs.get(h, 0.75) for h in HEADS},
        **{f"auc_{h}": 0.5 for h in HEADS},
    }


def test_a_better_share_with_no_worse_head_is_promoted() -> None:
    decision = gate(_metrics(0.8), _metrics(0.7), HEADS)
    assert decision.passed
    assert decision.reason == f"{GATE_METRIC} 0.8000 > champion's 0.7000"


def test_an_equal_or_lower_share_is_refused() -> None:
    for share in (0.7, 0.6):
        decision = gate(_metrics(share), _metrics(0.7), HEADS)
        assert not decision.passed
        assert "does not beat champion's 0.7000" in decision.reason


def test_a_gain_within_min_gain_is_refused() -> None:
    decision = gate(_metrics(0.75), _metrics(0.5), HEADS, min_gain=0.25)
    assert not decision.passed  # 0.75 is not strictly above 0.5 + 0.25
    assert gate(_metrics(0.75), _metrics(0.5), HEADS, min_gain=0.125).passed


def test_one_head_worse_than_the_tolerance_refuses_despite_the_share() -> None:
    decision = gate(_metrics(0.9, reply=0.5), _metrics(0.7), HEADS, auc_tolerance=0.125)
    assert not decision.passed
    assert decision.reason == "expected AUC worse by more than 0.125: reply 0.5000 < 0.7500"


def test_a_head_exactly_at_the_tolerance_is_not_worse() -> None:
    decision = gate(_metrics(0.8, like=0.5), _metrics(0.7), HEADS, auc_tolerance=0.25)
    assert decision.passed


def test_only_the_listed_heads_are_checked() -> None:
    assert gate(_metrics(0.8, reply=0.5), _metrics(0.7), ("like",)).passed


def test_the_first_model_passes_without_a_champion() -> None:
    decision = gate(_metrics(0.1, like=0.5), None, HEADS)
    assert decision.passed
    assert decision.reason == "no champion yet"


def test_an_offpolicy_interval_below_the_champion_refuses_despite_the_share() -> None:
    below = OffPolicyEvidence("dr", 9.0, 8.5, 9.4, champion=9.5)
    decision = gate(_metrics(0.8), _metrics(0.7), HEADS, offpolicy=below)
    assert not decision.passed
    assert decision.reason == (
        "off-policy dr: challenger 9.0000 [8.5000, 9.4000], champion 9.5000: "
        "interval below the champion"
    )
    overlapping = OffPolicyEvidence("dr", 9.0, 8.5, 9.6, champion=9.5)
    decision = gate(_metrics(0.8), _metrics(0.7), HEADS, offpolicy=overlapping)
    assert decision.passed and decision.reason.endswith(overlapping.summary())
