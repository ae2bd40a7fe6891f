"""The promotion gate: whether a challenger may replace the champion.

A pure function of both models' test metrics and the thresholds, so the rule
is read and tested on its own; :func:`training.registry.promote` evaluates the
two versions on the same test days and records the decision in MLflow.

The challenger passes only if it captures a larger share of the oracle's lift
than the champion and no head's AUC is worse by more than a tolerance (or
there is no champion yet). The AUC check comes first: a model that wins on
the weighted feed value by giving up a head is refused for that head.

The AUC is the expected one, against the labels' expectation from the oracle's
probabilities (:func:`training.evaluate.expected_auc`), as the lift share is the oracle's:
against the test day's labels, a head with 66 positives (report, on the demo)
moves by about +-0.05 from one draw of the labels to the next, ten times the
tolerance, and the gate refused a better model on that noise alone.

Optionally (``feedrank promote --offpolicy``) an off-policy estimate of both
models' weighted engagement per user, from the champion's explored logs, is a
further check: a challenger whose whole interval lies below the champion's
estimate is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

GATE_METRIC = "oracle_lift_share_at_50"
"""The feed-value metric a challenger must improve."""
HEAD_METRIC = "expected_auc"
"""Each head's metric no challenger may lower by more than the tolerance (``<this>_<head>``)."""


@dataclass(frozen=True)
class OffPolicyEvidence:
    """Both models' off-policy estimates of weighted engagement per user, same logs."""

    estimator: str
    challenger: float
    challenger_ci_low: float
    challenger_ci_high: float
    champion: float

    def summary(self) -> str:
        """One line for the decision's reason and tags."""
        return (
            f"off-policy {self.estimator}: challenger {self.challenger:.4f} "
            f"[{self.challenger_ci_low:.4f}, {self.challenger_ci_high:.4f}], "
            f"champion {self.champion:.4f}"
        )


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the promotion gate and the reason recorded with it."""

    passed: bool
    reason: str


def gate(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    heads: Iterable[str],
    auc_tolerance: float = 0.005,
    min_gain: float = 0.0,
    offpolicy: OffPolicyEvidence | None = None,
) -> GateDecision:
    """Whether a challenger beats the champion on the same test days.

    Args:
        challenger: the challenger's metrics (``GATE_METRIC`` and ``expected_auc_<head>``).
        champion: the champion's metrics on the same rows, None when there is none.
        heads: the action names whose AUC is checked.
        auc_tolerance: how much lower a head's expected AUC may be.
        min_gain: how much the gate metric must exceed the champion's (strictly).
        offpolicy: both models' off-policy estimates, or None to skip that check.
    """
    if champion is None:
        return GateDecision(True, "no champion yet")
    share_c, share_p = challenger[GATE_METRIC], champion[GATE_METRIC]
    worse = [
        f"{a} {challenger[f'{HEAD_METRIC}_{a}']:.4f} < {champion[f'{HEAD_METRIC}_{a}']:.4f}"
        for a in heads
        if challenger[f"{HEAD_METRIC}_{a}"] < champion[f"{HEAD_METRIC}_{a}"] - auc_tolerance
    ]
    if worse:
        return GateDecision(
            False, f"expected AUC worse by more than {auc_tolerance}: {'; '.join(worse)}"
        )
    if offpolicy is not None and offpolicy.challenger_ci_high < offpolicy.champion:
        return GateDecision(False, f"{offpolicy.summary()}: interval below the champion")
    if not share_c > share_p + min_gain:
        return GateDecision(
            False, f"{GATE_METRIC} {share_c:.4f} does not beat champion's {share_p:.4f}"
        )
    passed = f"{GATE_METRIC} {share_c:.4f} > champion's {share_p:.4f}"
    return GateDecision(True, passed if offpolicy is None else f"{passed}; {offpolicy.summary()}")
