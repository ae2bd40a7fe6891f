"""Model ceiling: how close can any model of the observable features get to the oracle?

The oracle scores with the simulator's true probabilities, which hold two
hidden terms no feature observes: a per-(user, author) pair noise and a
per-user, per-action propensity. This scores the held-out rows of
``feedrank evaluate`` with partial oracles and judges them with the same
metric code (:func:`training.evaluate.head_metrics` and
:func:`training.evaluate.ranking_metrics`):

- ``oracle``: the true probabilities, recomputed from the latent state (and
  checked against ``truth/oracle.parquet``);
- ``no_pair_noise``: everything but the pair noise;
- ``no_hidden``: neither the pair noise nor the propensity;
- ``estimated_propensity``: ``no_pair_noise`` with the propensity replaced by
  its MAP estimate from the days before the test day;
- ``estimated_hidden``: both hidden terms replaced by MAP estimates from that
  history (the interest, quality and toxicity still exact);
- ``joint_posterior``: nothing exact; every hidden term fitted jointly from
  the history by a scorer that knows the simulator's equations and priors
  (:mod:`analysis.joint_posterior`): about the best any model of the
  history can do, give or take the test day's own earlier visits. Skipped
  with ``--joint-steps 0`` (it takes 2-3 minutes of the run);
- the registered champion model (``auc_*`` and ``oracle_lift_share_*`` keys,
  as ``feedrank evaluate`` prints them), unless ``--no-model``.

    .venv/bin/python -m analysis.model_ceiling [--workspace DIR] [--no-model] [--joint-steps N]

Ends with ``RESULT {json}``: per scenario the AUC of each head, its gap to the
oracle's AUC (per head and the max) and the share of the oracle's lift over
reverse-chronological at K = 10 and 50. With the model and ``joint_posterior``
both scored, also the model against that scorer (issue 22's bars):
``lift_share_vs_joint_at_50``, and per head ``auc_gap_vs_joint_<head>`` with
its 95% interval, against the test day's engagements and, as
``expected_auc_gap_vs_joint_<head>``, against the labels' expectation (the
AUC expected over the day's label draws: see :func:`auc_gaps_vs_joint`).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.joint_posterior import STEPS, estimate_jointly
from core import tables
from core.actions import ActionSet, load_actions
from core.feast_store import training_set_path
from core.workspace import REPO_ROOT, Workspace
from simulation.truth import (
    _DEFAULT_EFFECT,  # pylint: disable=protected-access
    _EFFECTS,  # pylint: disable=protected-access
    PAIR_NOISE_SD,
    PROPENSITY_SD,
    Latent,
    position_bias,
    read_oracle,
    true_probabilities,
)
from simulation.world import US_PER_DAY
from training.dataset import Split, load_splits
from training.evaluate import (
    TOP_K,
    head_metrics,
    label_expectation,
    ranking_metrics,
    weighted_auc,
)
from training.train import TrainConfig

ESTIMATE_ROUNDS = 3
"""Alternations of the propensity and pair-noise estimates (the joint MAP)."""
BOOTSTRAP_DRAWS = 200
"""Paired bootstrap draws of the model's AUC gap to ``joint_posterior``."""


def load_impressions(ws: Workspace) -> pd.DataFrame:
    """Every impression, indexed by id, with what the truth reads: tweet topic, media, age."""
    impressions = tables.read_table(tables.IMPRESSIONS, ws.world)
    tweets = tables.read_table(tables.TWEETS, ws.world)
    frame = impressions.drop_columns(["impression_time"]).to_pandas()
    frame["when"] = impressions["impression_time"].cast("int64").to_numpy()
    by_tweet = pd.DataFrame(
        {
            "topic": tweets["topic"].to_numpy(),
            "media_type": tweets["media_type"].to_numpy(),
            "created": tweets["created_at"].cast("int64").to_numpy(),
        },
        index=tweets["tweet_id"].to_numpy(),
    ).reindex(frame["tweet_id"].to_numpy())
    frame["topic"] = by_tweet["topic"].to_numpy()
    frame["media_type"] = by_tweet["media_type"].to_numpy()
    # As the world generator computes it: (visit time - creation time) / day.
    frame["age_days"] = (frame["when"].to_numpy() - by_tweet["created"].to_numpy()) / US_PER_DAY
    return frame.set_index("impression_id")


def truth(
    latent: Latent, actions: ActionSet, rows: pd.DataFrame, pair_noise: bool = True
) -> np.ndarray:
    """True probabilities (n, n_actions) of ``rows`` under ``latent``, as float64."""
    return true_probabilities(
        latent,
        actions,
        rows["user_id"].to_numpy(),
        rows["author_id"].to_numpy(),
        rows["topic"].to_numpy(),
        rows["media_type"].to_numpy(),
        rows["age_days"].to_numpy(),
        pair_noise=pair_noise,
    ).astype(np.float64)


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities."""
    return np.log(p) - np.log1p(-p)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Probabilities of log-odds."""
    return 1.0 / (1.0 + np.exp(-x))


def pair_noise_effects(actions: ActionSet) -> np.ndarray:
    """Per head, the logit shift of one standard deviation of pair noise."""
    return PAIR_NOISE_SD * np.array([_EFFECTS.get(a, _DEFAULT_EFFECT)[2] for a in actions.names])


def map_offsets(
    groups: np.ndarray,
    n_groups: int,
    logits: np.ndarray,
    labels: np.ndarray,
    bias: np.ndarray,
    coef: np.ndarray | float,
    prior_sd: float,
    iterations: int = 25,
) -> np.ndarray:
    """MAP estimate of one hidden offset per group, by Fisher scoring.

    Entry ``i`` is a Bernoulli outcome of probability
    ``bias_i * sigmoid(logits_i + coef_i * offset[groups_i])`` (the label was
    sampled after position bias); each offset has the prior N(0, prior_sd^2).
    """
    offset = np.zeros(n_groups)
    for _ in range(iterations):
        s = sigmoid(logits + coef * offset[groups])
        q = np.clip(bias * s, 1e-12, 1 - 1e-12)
        dq = bias * s * (1.0 - s) * coef
        grad = np.bincount(groups, dq * (labels - q) / (q * (1 - q)), n_groups)
        info = np.bincount(groups, dq * dq / (q * (1 - q)), n_groups)
        offset += (grad - offset / prior_sd**2) / (info + 1.0 / prior_sd**2)
    return offset


def estimate_hidden(
    latent: Latent,
    actions: ActionSet,
    history: pd.DataFrame,
    pairs: bool,
) -> tuple[np.ndarray, pd.Series]:
    """MAP estimates of the propensity (n_users, n_actions) and the pair noise from history.

    The pair noise (one standard normal per user-author pair, shared by every
    head through its affinity effect) is estimated only when ``pairs``; the
    two estimates then alternate ``ESTIMATE_ROUNDS`` times.

    Returns:
        (propensity, pair noise indexed by ``user_id << 32 | author_id``).
    """
    n_users, n_actions = latent.propensity.shape
    blind = replace(latent, propensity=np.zeros_like(latent.propensity))
    base = logit(truth(blind, actions, history, pair_noise=False))
    labels = history[list(actions.names)].to_numpy(np.float64)
    bias = np.repeat(position_bias(history["position"].to_numpy()), n_actions)
    users = history["user_id"].to_numpy()
    codes, keys = pd.factorize(users.astype(np.int64) << 32 | history["author_id"].to_numpy())
    affinity = pair_noise_effects(actions)
    noise = np.zeros(len(keys))
    propensity = np.zeros((n_users, n_actions))
    for _ in range(ESTIMATE_ROUNDS if pairs else 1):
        propensity = map_offsets(
            (users[:, None] * n_actions + np.arange(n_actions)).ravel(),
            n_users * n_actions,
            (base + affinity * noise[codes][:, None]).ravel(),
            labels.ravel(),
            bias,
            1.0,
            PROPENSITY_SD,
        ).reshape(n_users, n_actions)
        if pairs:
            noise = map_offsets(
                np.repeat(codes, n_actions),
                len(keys),
                (base + propensity[users]).ravel(),
                labels.ravel(),
                bias,
                np.tile(affinity, len(users)),
                1.0,
            )
    return propensity, pd.Series(noise, index=keys)


def estimated(
    latent: Latent, actions: ActionSet, history: pd.DataFrame, rows: pd.DataFrame
) -> dict[str, np.ndarray]:
    """Scores of ``rows`` with the hidden terms estimated from ``history``.

    ``estimated_propensity``: no pair noise, the propensity estimated;
    ``estimated_hidden``: both estimated (pairs never seen in history get 0).
    """
    blind = replace(latent, propensity=np.zeros_like(latent.propensity))
    base = logit(truth(blind, actions, rows, pair_noise=False))
    users = rows["user_id"].to_numpy()
    propensity, _ = estimate_hidden(latent, actions, history, pairs=False)
    out = {"estimated_propensity": sigmoid(base + propensity[users])}
    propensity, noise = estimate_hidden(latent, actions, history, pairs=True)
    keys = users.astype(np.int64) << 32 | rows["author_id"].to_numpy()
    pair_noise = noise.reindex(keys).fillna(0.0).to_numpy()[:, None]
    shift = propensity[users] + pair_noise_effects(actions) * pair_noise
    out["estimated_hidden"] = sigmoid(base + shift)
    return out


def key_prefixes(name: str) -> tuple[str, str]:
    """Prefixes of a scorer's AUC keys and share keys (the model's: ``feedrank evaluate``'s)."""
    if name == "model":
        return "", "oracle_lift_share"
    return f"{name}_", f"{name}_lift_share"


def scores(
    name: str,
    probs: np.ndarray,
    test: Split,
    oracle: np.ndarray,
    created: np.ndarray,
    actions: ActionSet,
) -> dict[str, float]:
    """Per-head AUC and gap to the oracle, the max gap and the lift shares of one scorer.

    Keys are prefixed ``<name>_``; the model's (``name="model"``) are those of
    ``feedrank evaluate``. The oracle only gets its AUCs: its gaps are 0 and its
    share 1 by definition.
    """
    heads = head_metrics(probs, test.labels, oracle, test.keys["position"], actions)
    if name == "oracle":
        return {f"oracle_auc_{a}": heads[f"oracle_auc_{a}"] for a in actions.names}
    ranking = ranking_metrics(test.keys["visit_id"], probs, oracle, created, actions)
    prefix, share = key_prefixes(name)
    out = {f"{prefix}auc_{a}": heads[f"auc_{a}"] for a in actions.names}
    out |= {
        f"{prefix}auc_gap_{a}": heads[f"oracle_auc_{a}"] - heads[f"auc_{a}"] for a in actions.names
    }
    out[f"{prefix}auc_gap_max"] = heads["auc_gap_max"]
    out[f"{prefix}ece_max"] = heads["ece_max"]
    out |= {f"{share}_at_{k}": ranking[f"oracle_lift_share_at_{k}"] for k in TOP_K}
    return out


def _auc_gap(ranks: list, labels: np.ndarray, weights: np.ndarray) -> float:
    """The first scorer's weighted AUC minus the second's, from their ``np.unique`` ranks."""
    (first_values, first_groups), (second_values, second_groups) = ranks
    return weighted_auc(first_groups, len(first_values), labels, weights) - weighted_auc(
        second_groups, len(second_values), labels, weights
    )


def auc_gaps_vs_joint(  # pylint: disable=too-many-arguments  # the labels and key are options
    model: np.ndarray,
    joint: np.ndarray,
    test: Split,
    actions: ActionSet,
    labels: np.ndarray | None = None,
    key: str = "auc_gap_vs_joint",
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> dict[str, float | str]:
    """Per head, ``joint_posterior``'s AUC minus the model's, with a 95% interval.

    The interval is a paired Poisson bootstrap over visits: each draw weighs
    every visit by a Poisson(1) count, the same weights for both scorers, so
    the interval is of the gap itself (the rows of a visit are not independent).

    ``labels`` default to the test day's engagements. Given their expectation
    instead (:func:`training.evaluate.label_expectation`), each row counts as
    ``p`` of a positive and ``1 - p`` of a negative: the AUC expected over
    every draw of the day's labels, with the noise of those draws taken out
    (a head with 66 positives has an interval of about +-0.05 against its
    labels). The interval then holds what is left, the sampling of the day's
    visits. Keys start with ``key``.
    """
    labels = test.labels if labels is None else labels
    _, visit = np.unique(test.keys["visit_id"], return_inverse=True)
    rng = np.random.default_rng(seed)
    weights = [rng.poisson(1.0, visit.max() + 1)[visit].astype(np.float64) for _ in range(draws)]
    out: dict[str, float | str] = {}
    for j, name in enumerate(actions.names):
        y = labels[:, j].astype(np.float64)
        ranks = [np.unique(p[:, j], return_inverse=True) for p in (joint, model)]
        gap = _auc_gap(ranks, y, np.ones_like(y))
        low, high = np.percentile([_auc_gap(ranks, y, w) for w in weights], [2.5, 97.5])
        out |= {
            f"{key}_{name}": gap,
            f"{key}_{name}_ci_low": float(low),
            f"{key}_{name}_ci_high": float(high),
        }
    worst = max(actions.names, key=lambda a: out[f"{key}_{a}"])
    out[f"{key}_max"] = out[f"{key}_{worst}"]
    out[f"{key}_max_head"] = worst
    out[f"{key}_max_ci_low"] = out[f"{key}_{worst}_ci_low"]
    out[f"{key}_max_ci_high"] = out[f"{key}_{worst}_ci_high"]
    return out


def table(result: dict[str, float], names: list[str], actions: ActionSet) -> str:
    """The RESULT figures as a text table: one line per scorer."""
    lines = [
        f"{'':<21}" + "".join(f"{a:>11}" for a in actions.names) + "    gap_max  share@10  share@50"
    ]
    for name in names:
        prefix, share = key_prefixes(name)
        cells = "".join(f"{result[f'{prefix}auc_{a}']:>11.4f}" for a in actions.names)
        gap = result.get(f"{prefix}auc_gap_max", 0.0)
        # The oracle's share is 1 by definition (its prefix is the model's).
        shares = [1.0 if name == "oracle" else result[f"{share}_at_{k}"] for k in TOP_K]
        lines.append(f"{name:<21}{cells}{gap:>11.4f}" + "".join(f"{v:>10.3f}" for v in shares))
    return "\n".join(lines)


def main() -> None:
    """Score the held-out rows with the oracle, partial oracles and the champion."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.model_ceiling", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workspace", type=Path, default=REPO_ROOT)
    parser.add_argument("--no-model", action="store_true", help="Skip the champion model.")
    parser.add_argument(
        "--joint-steps",
        type=int,
        default=STEPS,
        help=f"Adam steps of the joint posterior fit (default {STEPS}; 0 skips that scorer).",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    ws, actions = Workspace(args.workspace), load_actions()
    test = load_splits(training_set_path(ws), TrainConfig.model_validate({}), actions).test
    oracle = read_oracle(ws.truth, test.keys["impression_id"], actions)
    created = tables.tweet_created(ws.world, test.keys["tweet_id"])
    impressions = load_impressions(ws)
    rows = impressions.loc[test.keys["impression_id"]]
    history = impressions[impressions["when"] < rows["when"].min()]
    latent = Latent.load(ws.truth / "latent.npz")
    blind = replace(latent, propensity=np.zeros_like(latent.propensity))

    recomputed = truth(latent, actions, rows)
    probs = {
        "oracle": recomputed,
        "no_pair_noise": truth(latent, actions, rows, pair_noise=False),
        "no_hidden": truth(blind, actions, rows, pair_noise=False),
    }
    probs |= estimated(latent, actions, history, rows)
    fit: dict[str, float] = {}
    if args.joint_steps > 0:
        shape = latent.interests.shape
        probs["joint_posterior"], fit = estimate_jointly(
            ws, actions, history, rows, shape, args.joint_steps
        )

    result: dict[str, float] = {
        "test_rows": len(test),
        "history_rows": len(history),
        "oracle_recompute_max_abs_diff": float(np.abs(recomputed - oracle).max()),
        **{f"positives_{a}": test.labels[:, j].sum() for j, a in enumerate(actions.names)},
        **fit,
    }
    if not args.no_model:
        from core.model_registry import load_ranker  # pylint: disable=import-outside-toplevel

        probs["model"] = load_ranker(ws, "champion").predict_proba(test.inputs)
    for name, p in probs.items():
        result |= scores(name, p, test, oracle, created, actions)
    against: dict[str, float | str] = {}
    if "model" in probs and "joint_posterior" in probs:
        pair = (probs["model"], probs["joint_posterior"], test, actions)
        against = auc_gaps_vs_joint(*pair)
        expected = label_expectation(oracle, test.keys["position"])
        against |= auc_gaps_vs_joint(*pair, labels=expected, key="expected_auc_gap_vs_joint")
        against["lift_share_vs_joint_at_50"] = (
            result["oracle_lift_share_at_50"] / result["joint_posterior_lift_share_at_50"]
        )
    result = {k: round(float(v), 5) for k, v in result.items()}
    result |= {k: v if isinstance(v, str) else round(float(v), 5) for k, v in against.items()}
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(table(result, list(probs), actions))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
