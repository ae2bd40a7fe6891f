"""Off-policy evaluation: what another ranking policy would have earned, from explored logs.

The logs are those of the served policy (:func:`core.exploration.served_feed`:
the greedy feed, or on a share of requests a Plackett-Luce draw over the same
scores). Here they are simulated on the held-out day of the training set:
each visit's candidates are ranked by the logging policy, exactly as /rank
ranks them, and the simulator samples what the user did with the top
``limit`` tweets (position bias included).

A candidate policy (another model version, other action weights, no
diversity, newest first) is a deterministic ranking of the same candidates.
Its value is the weighted engagement per user it would have earned. Three
estimators give it from the logs alone, under the position-based model (a
tweet in slot k is examined with probability ``b(k)``, and what an examined
tweet earns does not depend on its slot):

- **IPS**: each shown tweet's reward, divided by ``b`` of the slot it was
  shown in and by ``mu``, the probability that the logging policy shows it
  at all (in the top ``limit``), times ``b`` of the slot the candidate policy
  gives it (0 if it does not show it);
- **SNIPS**: IPS divided by its control variate (the same weights without the
  reward, whose expectation is the number of slots);
- **doubly robust (DR)**: the model's predicted engagement of the candidate's
  feed (the direct method), plus IPS of the model's errors on what was shown.

``mu`` has no closed form for Plackett-Luce beyond the first slot; it is
estimated from ``mc_draws`` Gumbel-top-k draws per visit
(:func:`core.exploration.top_k_shares`), and its largest standard error is
reported. Intervals come from a bootstrap over users (a user's visits stay
together). The truth of each candidate, the number the estimates are checked
against, is exact: ``sum_k b(k) * true score of the tweet in slot k``, from the
simulator's probabilities, averaged in the same way.

``b`` is the simulator's examination curve (:func:`simulation.truth.position_bias`),
which the estimator assumes known. In production it would be estimated,
for example from the explored traffic itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from core import tables
from core.actions import ActionSet, ActionsFileError, load_actions
from core.exploration import plackett_luce_logits, served_feed, top_k_shares
from core.model import Ranker
from core.policy import diversity_adjusted, rank, weighted_scores
from core.workspace import Workspace
from metrics.replay import held_out_day
from simulation.truth import position_bias, read_oracle, sample_outcomes

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class LoggingPolicy:
    """The served policy whose logs are evaluated (the serving settings of the same name)."""

    share: float = 1.0
    """Share of requests explored (``FEEDRANK_EXPLORE_SHARE``)."""
    temperature: float = 0.5
    """``FEEDRANK_EXPLORE_TEMPERATURE``."""
    diversity: float = 0.8
    """``FEEDRANK_DIVERSITY``."""
    limit: int = 20
    """Slots of a feed."""


@dataclass
class Logs:
    """The logged feeds of the held-out visits, one entry per visit."""

    users: np.ndarray
    """The visit's user."""
    shown: list[np.ndarray] = field(default_factory=list)
    """Row indices shown, slot by slot."""
    reward: list[np.ndarray] = field(default_factory=list)
    """Weighted engagement the user gave each shown tweet (simulated)."""
    shown_share: list[np.ndarray] = field(default_factory=list)
    """``mu``: the probability that the logging policy shows each shown tweet."""
    mc_error: float = 0.0
    """Largest standard error of a ``mu`` estimate."""


@dataclass(frozen=True)
class Estimate:
    """One estimator's value of a candidate policy, with its bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class PolicyResult:
    """The estimates of one candidate policy and its true value."""

    name: str
    estimates: dict[str, Estimate]
    true_value: float

    def covered(self, estimator: str) -> bool:
        """Whether the estimator's interval holds the true value."""
        e = self.estimates[estimator]
        return e.ci_low <= self.true_value <= e.ci_high


@dataclass(frozen=True)
class OffPolicyResult:
    """Every candidate's estimates, and what the logs were."""

    policies: list[PolicyResult]
    visits: int
    users: int
    logging: LoggingPolicy
    mc_error: float

    def table(self) -> pd.DataFrame:
        """One row per candidate and estimator."""
        return pd.DataFrame(
            [
                {
                    "policy": p.name,
                    "estimator": name,
                    "estimate": e.value,
                    "ci_low": e.ci_low,
                    "ci_high": e.ci_high,
                    "true_value": p.true_value,
                    "covered": p.covered(name),
                }
                for p in self.policies
                for name, e in p.estimates.items()
            ]
        )

    def result(self, estimator: str = "dr") -> dict[str, object]:
        """``RESULT`` keys: per candidate ``ope_estimate``, CI and ``true_value``; the coverage."""
        out: dict[str, object] = {
            "ope_estimator": estimator,
            "ope_visits": self.visits,
            "ope_users": self.users,
            "ope_mu_mc_error_max": round(self.mc_error, 4),
            "ope_ci_covers_truth": sum(p.covered(estimator) for p in self.policies),
            "ope_policies": len(self.policies),
        }
        for p in self.policies:
            e = p.estimates[estimator]
            out[p.name] = {
                "ope_estimate": round(e.value, 4),
                "ope_ci_low": round(e.ci_low, 4),
                "ope_ci_high": round(e.ci_high, 4),
                "true_value": round(p.true_value, 4),
            }
        return out


Orders = list[np.ndarray]
"""Per visit, the row indices a policy shows, slot by slot."""


def simulate_logs(  # pylint: disable=too-many-arguments,too-many-locals
    frame: pd.DataFrame,
    visits: list[np.ndarray],
    scores: np.ndarray,
    oracle: np.ndarray,
    actions: ActionSet,
    policy: LoggingPolicy,
    mc_draws: int,
    seed: int,
) -> Logs:
    """The served policy's feeds of ``visits``, what the users did, and each ``mu``."""
    tweets = frame["tweet_id"].to_numpy()
    authors = frame["author_id"].to_numpy()
    weights = np.asarray(actions.weights)
    logs = Logs(users=frame["user_id"].to_numpy()[[rows[0] for rows in visits]])
    for i, rows in enumerate(visits):
        rng = np.random.default_rng([seed, i])
        feed = served_feed(
            scores[rows],
            tweets[rows],
            authors[rows],
            policy.limit,
            diversity=policy.diversity,
            share=policy.share,
            temperature=policy.temperature,
            rng=rng,
        )
        kept, adjusted = diversity_adjusted(
            scores[rows], tweets[rows], authors[rows], policy.diversity
        )
        greedy = np.zeros(len(rows))
        greedy[kept[np.argsort(-adjusted, kind="stable")[: policy.limit]]] = 1.0
        explored = np.zeros(len(rows))
        shares, errors = top_k_shares(
            plackett_luce_logits(adjusted, policy.temperature), policy.limit, mc_draws, rng
        )
        explored[kept] = shares
        mu = (1.0 - policy.share) * greedy + policy.share * explored
        outcomes, _ = sample_outcomes(
            rng, oracle[rows[feed.order]], np.arange(len(feed.order)), actions
        )
        logs.shown.append(rows[feed.order])
        logs.reward.append(outcomes @ weights)
        logs.shown_share.append(mu[feed.order])
        logs.mc_error = max(logs.mc_error, policy.share * float(errors.max(initial=0.0)))
    return logs


def _slot_weights(order: np.ndarray, shown: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``b`` of the slot ``order`` gives each shown row (0 where it does not show it)."""
    slot = {row: k for k, row in enumerate(order.tolist())}
    return np.array([bias[slot[r]] if r in slot else 0.0 for r in shown.tolist()])


def per_visit(
    logs: Logs, orders: Orders, predicted: np.ndarray, bias: np.ndarray
) -> dict[str, np.ndarray]:
    """Per visit: the IPS and DR terms and the SNIPS control variate of a candidate."""
    ips, dr, control = (np.zeros(len(orders)) for _ in range(3))
    for i, order in enumerate(orders):
        shown = logs.shown[i]
        weight = _slot_weights(order, shown, bias) / logs.shown_share[i]
        examined = bias[: len(shown)]
        ips[i] = np.sum(logs.reward[i] / examined * weight)
        direct = float(bias[: len(order)] @ predicted[order])
        dr[i] = direct + np.sum((logs.reward[i] / examined - predicted[shown]) * weight)
        control[i] = np.sum((weight > 0) / logs.shown_share[i]) / max(len(order), 1)
    return {"ips": ips, "dr": dr, "control": control}


def _bootstrap(  # pylint: disable=too-many-arguments
    terms: dict[str, np.ndarray],
    users: np.ndarray,
    days: int,
    n_boot: int,
    seed: int,
    confidence: float,
) -> dict[str, Estimate]:
    """Each estimator per user and day, with a percentile interval from resampling users."""
    ids, user_of = np.unique(users, return_inverse=True)
    n = len(ids)
    sums = {k: np.bincount(user_of, weights=v, minlength=n) for k, v in terms.items()}
    visits = np.bincount(user_of, minlength=n).astype(np.float64)

    def values(pick: np.ndarray) -> dict[str, float]:
        ips = sums["ips"][pick].sum() / (n * days)
        control = sums["control"][pick].sum() / visits[pick].sum()
        return {"ips": ips, "snips": ips / control, "dr": sums["dr"][pick].sum() / (n * days)}

    point = values(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = [values(rng.integers(0, n, n)) for _ in range(n_boot)]
    tail = (1.0 - confidence) / 2.0
    return {
        name: Estimate(
            point[name],
            float(np.quantile([d[name] for d in draws], tail)),
            float(np.quantile([d[name] for d in draws], 1.0 - tail)),
        )
        for name in ESTIMATORS
    }


def true_value(
    orders: Orders, true_scores: np.ndarray, users: np.ndarray, bias: np.ndarray
) -> float:
    """The candidate's expected weighted engagement per user, from the simulator's probabilities."""
    total = sum(float(bias[: len(o)] @ true_scores[o]) for o in orders)
    return total / len(np.unique(users))


CandidateRanker = Callable[[pd.DataFrame, list[np.ndarray]], Orders]
"""Ranks every visit's candidates: (held-out frame, visits) -> per visit the rows shown."""


def greedy_policy(scores: np.ndarray, diversity: float, limit: int) -> CandidateRanker:
    """A greedy ranking of fixed scores (a model's weighted scores, other weights)."""

    def orders(frame: pd.DataFrame, visits: list[np.ndarray]) -> Orders:
        tweets, authors = frame["tweet_id"].to_numpy(), frame["author_id"].to_numpy()
        return [
            rows[rank(scores[rows], tweets[rows], authors[rows], limit, diversity)]
            for rows in visits
        ]

    return orders


def chrono_policy(created: np.ndarray, limit: int) -> CandidateRanker:
    """Newest first: the brief's baseline, as far from the logging policy as a policy gets."""

    def orders(_frame: pd.DataFrame, visits: list[np.ndarray]) -> Orders:
        return [rows[np.argsort(-created[rows], kind="stable")][:limit] for rows in visits]

    return orders


def candidate(  # pylint: disable=too-many-arguments
    spec: str,
    data: HeldOut,
    load_model: Callable[[str], Ranker],
    actions: ActionSet,
    limit: int,
    diversity: float,
) -> tuple[str, CandidateRanker]:
    """A candidate policy from its command-line name, and the name it is reported under.

    ``chrono``: newest first. ``no-diversity``: the logging model's scores
    without the author penalty. A file ending in ``.yaml``: the logging
    model's probabilities under that file's action weights (the format of
    ``core/actions.yaml``, same actions). Anything else is a registered
    version or alias (``champion``, ``3``), whose own model ranks greedily.

    Raises:
        ActionsFileError: a weights file that cannot be read or names other actions.
    """
    if spec == "chrono":
        return spec, chrono_policy(data.created, limit)
    if spec == "no-diversity":
        return spec, greedy_policy(weighted_scores(data.probabilities, actions), 1.0, limit)
    if spec.endswith((".yaml", ".yml")):
        other = load_actions(spec)
        if set(other.names) != set(actions.names):
            raise ActionsFileError(
                f"{spec}: actions {', '.join(other.names)} differ from {', '.join(actions.names)}"
            )
        weights = np.array([other.weight(a) for a in actions.names])
        scores = weighted_scores(data.probabilities, weights=weights)
        return f"weights:{Path(spec).stem}", greedy_policy(scores, diversity, limit)
    model = load_model(spec)
    probabilities = model.predict_proba({c: data.frame[c].to_numpy() for c in data.frame.columns})
    name = spec if not spec.isdigit() else f"version {spec}"
    return name, greedy_policy(weighted_scores(probabilities, actions), diversity, limit)


def candidates(  # pylint: disable=too-many-arguments
    specs: Iterable[str],
    data: HeldOut,
    load_model: Callable[[str], Ranker],
    actions: ActionSet,
    limit: int,
    diversity: float,
) -> dict[str, CandidateRanker]:
    """Every :func:`candidate` of ``specs``, by the name each is reported under."""
    return dict(candidate(s, data, load_model, actions, limit, diversity) for s in specs)


@dataclass(frozen=True)
class HeldOut:
    """The held-out day: its rows, visits, and what is known about each row."""

    frame: pd.DataFrame
    visits: list[np.ndarray]
    probabilities: np.ndarray
    """The logging model's predicted probabilities."""
    oracle: np.ndarray
    """The simulator's true probabilities."""
    created: np.ndarray


def held_out(workspace: Workspace, ranker: Ranker, actions: ActionSet) -> HeldOut:
    """The training set's last day, with the logging model's and the truth's probabilities."""
    frame = held_out_day(workspace)
    visits = [np.asarray(v) for v in frame.groupby("visit_id", sort=True).indices.values()]
    return HeldOut(
        frame=frame,
        visits=visits,
        probabilities=ranker.predict_proba({c: frame[c].to_numpy() for c in frame.columns}),
        oracle=read_oracle(workspace.truth, frame["impression_id"].to_numpy(), actions),
        created=tables.tweet_created(workspace.world, frame["tweet_id"].to_numpy()).astype(
            np.float64
        ),
    )


def evaluate(  # pylint: disable=too-many-arguments
    data: HeldOut,
    policies: dict[str, CandidateRanker],
    logging: LoggingPolicy | None = None,
    actions: ActionSet | None = None,
    mc_draws: int = 1000,
    days: int = 1,
    n_boot: int = 400,
    confidence: float = 0.95,
    seed: int = 0,
) -> OffPolicyResult:
    """Estimate each candidate's weighted engagement per user from the logging policy's logs.

    Args:
        data: the held-out day (:func:`held_out`).
        policies: name -> ranking of the visits.
        logging: the served policy that wrote the logs.
        actions: the weights of the value (default ``core/actions.yaml``).
        mc_draws: Plackett-Luce draws per visit for ``mu``.
        days: logged days: each held-out visit is logged this many times, with
            independent draws (as if the day recurred), for narrower intervals.
        n_boot: bootstrap resamples of users.
        confidence: coverage of the intervals.
        seed: seeds the logged feeds, the users' actions and the bootstrap.
    """
    actions = actions or load_actions()
    logging = logging or LoggingPolicy()
    scores = weighted_scores(data.probabilities, actions)
    logs = simulate_logs(
        data.frame, data.visits * days, scores, data.oracle, actions, logging, mc_draws, seed
    )
    bias = position_bias(np.arange(logging.limit))
    truth = weighted_scores(data.oracle, actions)
    results = []
    for name, orders_of in policies.items():
        orders = orders_of(data.frame, data.visits)
        terms = per_visit(logs, orders * days, scores, bias)
        results.append(
            PolicyResult(
                name=name,
                estimates=_bootstrap(terms, logs.users, days, n_boot, seed, confidence),
                true_value=true_value(orders, truth, logs.users, bias),
            )
        )
    return OffPolicyResult(
        policies=results,
        visits=len(data.visits) * days,
        users=len(np.unique(logs.users)),
        logging=logging,
        mc_error=logs.mc_error,
    )


def plot(result: OffPolicyResult, path: Path, estimator: str = "dr") -> Path:
    """Each candidate's estimate with its interval, next to its true value."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    names = [p.name for p in result.policies]
    x = np.arange(len(names))
    est = [p.estimates[estimator] for p in result.policies]
    ax.errorbar(
        x,
        [e.value for e in est],
        yerr=[[e.value - e.ci_low for e in est], [e.ci_high - e.value for e in est]],
        fmt="o",
        capsize=6,
        label=f"{estimator.upper()} estimate, 95% interval",
    )
    ax.scatter(x, [p.true_value for p in result.policies], marker="x", color="black", label="truth")
    ax.set_xticks(x, names)
    ax.set_ylabel("weighted engagement per user")
    ax.set_title(f"Off-policy estimates from {result.visits:,} logged visits")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
