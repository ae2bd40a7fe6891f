"""Off-policy estimates on a synthetic day whose truth is known exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.actions import ActionsFileError, load_actions
from metrics import offpolicy as ope

pytestmark = pytest.mark.unit

ACTIONS = load_actions()


def _day(visits: int = 3000, per_visit: int = 8, seed: int = 0) -> ope.HeldOut:
    """Visits of ``per_visit`` candidates; the model's probabilities are the truth plus noise."""
    rng = np.random.default_rng(seed)
    n = visits * per_visit
    oracle = np.zeros((n, len(ACTIONS.names)))
    oracle[:, ACTIONS.names.index("like")] = rng.uniform(0.05, 0.6, n)
    oracle[:, ACTIONS.names.index("long_dwell")] = rng.uniform(0.0, 0.3, n)
    oracle[:, ACTIONS.names.index("hide")] = rng.uniform(0.0, 0.01, n)
    noisy = np.clip(oracle + rng.normal(0, 0.05, oracle.shape), 0, 1)
    noisy[:, ACTIONS.names.index("hide")] = oracle[:, ACTIONS.names.index("hide")]
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(visits) % 700, per_visit),
            "tweet_id": np.arange(n),
            "author_id": rng.integers(0, 50, n),
        }
    )
    return ope.HeldOut(
        frame=frame,
        visits=[np.arange(i * per_visit, (i + 1) * per_visit) for i in range(visits)],
        probabilities=noisy,
        oracle=oracle,
        created=rng.uniform(0, 1e6, n),
    )


def test_estimates_cover_the_exact_value_of_policies_near_and_far_from_the_logs() -> None:
    day = _day()
    truth_scores = day.oracle @ np.asarray(ACTIONS.weights)
    candidates = {
        "model": ope.greedy_policy(day.probabilities @ np.asarray(ACTIONS.weights), 0.8, 3),
        "oracle": ope.greedy_policy(truth_scores, 1.0, 3),
        "chrono": ope.chrono_policy(day.created, 3),
    }
    result = ope.evaluate(
        day,
        candidates,
        ope.LoggingPolicy(share=1.0, temperature=1.0, limit=3),
        mc_draws=400,
        n_boot=200,
    )
    values = {p.name: p.true_value for p in result.policies}
    assert values["oracle"] > values["model"] > values["chrono"]  # the truth tells them apart
    for policy in result.policies:
        for name in ope.ESTIMATORS:
            estimate = policy.estimates[name]
            assert estimate.ci_low < estimate.value < estimate.ci_high
            assert policy.covered(name), (policy.name, name, estimate, policy.true_value)
    # Informative, not just wide: near the logs, the interval is a few percent of the value.
    model = result.policies[0].estimates["dr"]
    assert model.ci_high - model.ci_low < 0.3 * values["model"]
    figures = result.result("dr")
    assert figures["ope_ci_covers_truth"] == 3 and figures["ope_policies"] == 3
    assert 0 < figures["ope_mu_mc_error_max"] < 0.03


def test_a_greedy_logging_policy_gives_no_support_to_a_different_feed() -> None:
    """With no exploration, tweets the greedy feed never shows have mu 0: IPS cannot see them."""
    day = _day(visits=200)
    logs = ope.simulate_logs(
        day.frame,
        day.visits,
        day.probabilities @ np.asarray(ACTIONS.weights),
        day.oracle,
        ACTIONS,
        ope.LoggingPolicy(share=0.0, limit=3),
        mc_draws=50,
        seed=0,
    )
    assert all((mu == 1.0).all() for mu in logs.shown_share)  # only the greedy feed is logged


def test_a_weights_file_with_other_actions_is_refused_naming_it(tmp_path) -> None:
    day = _day(visits=10)
    bad = tmp_path / "weights.yaml"
    bad.write_text("long_dwell_seconds: 10\nactions:\n  like: {weight: 1, description: x}\n")
    with pytest.raises(ActionsFileError, match=r"weights\.yaml"):
        ope.candidate(str(bad), day, lambda _: None, ACTIONS, 3, 0.8)
    name, _ = ope.candidate("chrono", day, lambda _: None, ACTIONS, 3, 0.8)
    assert name == "chrono"
