"""Offline evaluation on the held-out test days: per-head quality and feed value.

Classification metrics compare predictions with the sampled labels of the
same rows. Labels were sampled with position bias, and the model (trained
without position) predicts the position-averaged probability, so calibration
against the labels of the logged rows is the right check.

Plots use matplotlib's object API (``Figure``), which renders with Agg and
never touches a GUI backend or global pyplot state.

Feed value uses the simulator's true, position-free probabilities: for every
test visit the shown candidates are re-ranked by a policy and the top K are
worth ``sum_k position_bias(k) * sum_a weight_a * p_true_a(slot k)``. The
policies are reverse-chronological (the baseline), the model's weighted score
and the oracle's (the best possible ranking). All three rank by plain score:
the diversity heuristics of :mod:`core.policy` would cost the oracle value
and blur what the model alone captures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from core import tables
from core.actions import ActionSet, load_actions
from core.model import Ranker
from core.policy import rank_within_groups, weighted_scores
from core.workspace import Workspace
from simulation.truth import position_bias, read_oracle
from training.dataset import Split

TOP_K = (10, 50)
ECE_BINS = 15


@dataclass
class Evaluation:
    """Metrics (flat, MLflow-ready) and the plots written."""

    metrics: dict[str, float]
    plots: list[Path] = field(default_factory=list)

    def result(self, actions: ActionSet) -> dict[str, float]:
        """The ``RESULT`` line's keys: gates first, then per head."""
        keys = ["oracle_lift_share_at_50", "oracle_lift_share_at_10", "auc_gap_max", "ece_max"]
        for prefix in ("auc", "oracle_auc", "expected_auc", "ece"):
            keys += [f"{prefix}_{a}" for a in actions.names]
        return {k: round(self.metrics[k], 5) for k in keys}


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> tuple[float, np.ndarray, np.ndarray]:
    """ECE over equal-mass bins, and each bin's mean prediction and positive rate.

    Equal-mass (quantile) bins, because with equal-width bins a 0.05 % action
    puts every row in the first bin and any model looks calibrated.
    """
    order = np.argsort(probs, kind="stable")
    chunks = [c for c in np.array_split(order, bins) if len(c)]
    mean_p = np.array([probs[c].mean() for c in chunks])
    rate = np.array([labels[c].mean() for c in chunks])
    sizes = np.array([len(c) for c in chunks])
    return float(np.sum(sizes * np.abs(mean_p - rate)) / len(probs)), mean_p, rate


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p)))


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def weighted_auc(
    groups: np.ndarray, n_groups: int, labels: np.ndarray, weights: np.ndarray
) -> float:
    """AUC with row weights; ``groups`` ranks the scores (ties share a group, counted half).

    ``labels`` may be fractions: a row of label ``p`` counts ``p`` of a positive
    and ``1 - p`` of a negative.
    """
    pos = np.bincount(groups, weights * labels, n_groups)
    neg = np.bincount(groups, weights * (1.0 - labels), n_groups)
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def label_expectation(oracle: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Each logged row's probability of each label: the true probability at its slot
    (the oracle's, at slot 0, times the position bias of the slot it was shown in)."""
    return oracle.astype(np.float64) * position_bias(positions)[:, None]


def expected_auc(expected_labels: np.ndarray, scores: np.ndarray) -> float:
    """The AUC of ``scores`` against the labels' expectation instead of their one draw.

    Each row counts ``p`` of a positive and ``1 - p`` of a negative (``p`` from
    :func:`label_expectation`): the AUC expected over every draw of the rows'
    labels, without the noise of the one draw the test day holds (a head with
    66 positives moves by +-0.05 from draw to draw; this by the sampling of
    the rows only).
    """
    values, groups = np.unique(scores, return_inverse=True)
    return weighted_auc(groups, len(values), expected_labels, np.ones(len(scores)))


def head_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    oracle: np.ndarray,
    positions: np.ndarray,
    actions: ActionSet,
) -> dict[str, float]:
    """AUC, log loss, RCE, ECE per head, the oracle's AUC on the same labels, and the
    AUC against the labels' expectation (``expected_auc_<head>``, the gate's)."""
    expected = label_expectation(oracle, positions)
    out: dict[str, float] = {}
    for j, name in enumerate(actions.names):
        y, p = labels[:, j], probs[:, j]
        base = np.full_like(p, y.mean())
        loss = _log_loss(p, y)
        out[f"auc_{name}"] = _auc(y, p)
        out[f"oracle_auc_{name}"] = _auc(y, oracle[:, j])
        out[f"expected_auc_{name}"] = expected_auc(expected[:, j], p)
        out[f"log_loss_{name}"] = loss
        out[f"rce_{name}"] = 100.0 * (1.0 - loss / _log_loss(base, y))
        out[f"ece_{name}"] = expected_calibration_error(p, y)[0]
        out[f"base_rate_{name}"] = float(y.mean())
    gaps = [out[f"oracle_auc_{a}"] - out[f"auc_{a}"] for a in actions.names]
    out["auc_gap_max"] = float(np.nanmax(gaps))
    out["ece_max"] = max(out[f"ece_{a}"] for a in actions.names)
    return out


def feed_value(visits: np.ndarray, scores: np.ndarray, true_value: np.ndarray, k: int) -> float:
    """Mean over visits of the examined true value of the top ``k`` by ``scores``."""
    ranks = rank_within_groups(visits, scores)
    top = ranks < k
    total = np.sum(position_bias(ranks[top]) * true_value[top])
    return float(total / len(np.unique(visits)))


def ranking_metrics(
    visits: np.ndarray,
    probs: np.ndarray,
    oracle: np.ndarray,
    created: np.ndarray,
    actions: ActionSet,
) -> dict[str, float]:
    """Feed value at each K for chrono, model and oracle, and the model's share of the lift."""
    true_value = weighted_scores(oracle, actions)
    policies = {
        "chrono": created.astype(np.float64),
        "model": weighted_scores(probs, actions),
        "oracle": true_value,
    }
    out: dict[str, float] = {}
    for k in TOP_K:
        value = {n: feed_value(visits, s, true_value, k) for n, s in policies.items()}
        out.update({f"value_at_{k}_{n}": v for n, v in value.items()})
        lift = value["oracle"] - value["chrono"]
        share = (value["model"] - value["chrono"]) / lift if lift > 0 else float("nan")
        out[f"oracle_lift_share_at_{k}"] = share
    return out


def _plots(
    probs: np.ndarray,
    labels: np.ndarray,
    metrics: dict[str, float],
    actions: ActionSet,
    folder: Path,
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for j, name in enumerate(actions.names):
        y, p = labels[:, j], probs[:, j]
        _, mean_p, rate = expected_calibration_error(p, y)
        fig = Figure(figsize=(4.5, 4.5))
        ax = fig.add_subplot()
        top = max(mean_p.max(), rate.max()) * 1.05
        ax.plot([0, top], [0, top], "k--", lw=1, label="perfect")
        ax.plot(mean_p, rate, "o-", label=f"model (ECE {metrics[f'ece_{name}']:.4f})")
        ax.set(xlabel="mean predicted", ylabel="observed rate", title=f"calibration: {name}")
        ax.legend()
        paths.append(folder / f"calibration_{name}.png")
        fig.savefig(paths[-1], dpi=80, bbox_inches="tight")
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, p)
            fig = Figure(figsize=(4.5, 4.5))
            ax = fig.add_subplot()
            ax.plot(fpr, tpr, label=f"AUC {metrics[f'auc_{name}']:.3f}")
            ax.plot([0, 1], [0, 1], "k--", lw=1)
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {name}")
            ax.legend()
            paths.append(folder / f"roc_{name}.png")
            fig.savefig(paths[-1], dpi=80, bbox_inches="tight")
    fig = Figure(figsize=(4 * len(TOP_K), 3.5))
    for i, k in enumerate(TOP_K):
        ax = fig.add_subplot(1, len(TOP_K), i + 1)
        names = ["chrono", "model", "oracle"]
        ax.bar(names, [metrics[f"value_at_{k}_{n}"] for n in names], color=["grey", "C0", "C2"])
        ax.set(title=f"weighted engagement, top {k}", ylabel="expected value per visit")
    paths.append(folder / "lift.png")
    fig.savefig(paths[-1], dpi=80, bbox_inches="tight")
    return paths


def evaluate(
    ranker: Ranker,
    test: Split,
    workspace: Workspace,
    actions: ActionSet | None = None,
    plots_dir: Path | None = None,
) -> Evaluation:
    """Evaluate a model on a test split of ``workspace``'s training set.

    Args:
        ranker: the model.
        test: the held-out split (see :func:`training.dataset.load_splits`).
        workspace: where the oracle and the tweets are read.
        actions: heads and weights (default ``core/actions.yaml``).
        plots_dir: write calibration, ROC and lift plots here (None: no plots).
    """
    actions = actions or load_actions()
    if tuple(ranker.actions) != actions.names:
        raise ValueError(f"model heads {ranker.actions} differ from actions {actions.names}")
    probs = ranker.predict_proba(test.inputs)
    oracle = read_oracle(workspace.truth, test.keys["impression_id"], actions)
    metrics = head_metrics(probs, test.labels, oracle, test.keys["position"], actions)
    created = tables.tweet_created(workspace.world, test.keys["tweet_id"])
    metrics.update(ranking_metrics(test.keys["visit_id"], probs, oracle, created, actions))
    metrics["test_rows"] = float(len(test))
    metrics["test_visits"] = float(len(np.unique(test.keys["visit_id"])))
    plots = _plots(probs, test.labels, metrics, actions, plots_dir) if plots_dir else []
    return Evaluation(metrics, plots)
