"""A/B analysis: stable assignment, sample-ratio check, Welch intervals, per-user denominators."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from core.tables import EVENTS, TS
from metrics.ab import (
    Experiment,
    analyze_experiment,
    analyze_users,
    assignment_unit,
    sample_ratio_check,
    welch_difference,
)
from metrics.engagement import UserActions, engagement_report

pytestmark = pytest.mark.unit

DAY1 = datetime(2024, 1, 1, tzinfo=UTC)


def make_events(user_ids: np.ndarray, actions: list[str]) -> pa.Table:
    """An EVENTS table with every event on DAY1."""
    n = len(actions)
    return pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "user_id": pa.array(np.asarray(user_ids, dtype=np.int64)),
            "tweet_id": pa.array(np.zeros(n, dtype=np.int64)),
            "action": pa.array(actions, pa.string()),
            "dwell_seconds": pa.nulls(n, pa.float32()),
            "timestamp": pa.array([DAY1] * n, TS),
        },
        schema=EVENTS.schema,
    )


def per_user(cohort: np.ndarray, likes: np.ndarray) -> UserActions:
    """Per-user counts where every user saw one tweet and liked it ``likes`` times."""
    n = len(cohort)
    zeros = np.zeros(n, dtype=np.int64)
    counts = {
        "impression": np.ones(n, dtype=np.int64),
        "like": likes.astype(np.int64),
        **{name: zeros for name in ("reply", "retweet", "long_dwell", "hide", "report")},
    }
    return UserActions(
        user_id=np.arange(n, dtype=np.int64),
        cohort=cohort.astype(object),
        counts=counts,
        dwell_seconds=np.zeros(n),
        period=None,
    )


def test_assignment_is_pinned_across_processes_and_versions() -> None:
    # Fixed expected values: a change here reshuffles every running experiment.
    units = assignment_unit([0, 1, 2, 3, 12345678901], "ranker-v2")

    np.testing.assert_allclose(
        units,
        [
            0.7754055832098488,
            0.12215094410785388,
            0.942211165173349,
            0.19365663931696642,
            0.8319152158932968,
        ],
        rtol=0,
        atol=1e-15,
    )
    assert Experiment("ranker-v2").assign(np.arange(6)).tolist() == [
        "treatment",
        "control",
        "treatment",
        "control",
        "control",
        "control",
    ]


def test_assignment_is_balanced_and_follows_an_uneven_split() -> None:
    users = np.arange(200_000)

    even = Experiment("ranker-v2").assign(users)
    uneven = Experiment("ranker-v3", ("control", "a", "b"), (0.8, 0.1, 0.1)).assign(users)

    assert abs((even == "control").mean() - 0.5) < 0.005
    assert abs((uneven == "control").mean() - 0.8) < 0.005
    assert abs((uneven == "b").mean() - 0.1) < 0.005


def test_experiments_with_different_names_assign_independently() -> None:
    users = np.arange(100_000)

    first = Experiment("exp-a").assign(users)
    second = Experiment("exp-b").assign(users)

    assert abs((first == second).mean() - 0.5) < 0.01


def test_sample_ratio_mismatch_is_flagged_for_a_skewed_split_only() -> None:
    experiment = Experiment("ranker-v2")
    assigned = experiment.assign(np.arange(10_000))
    fair = {v: int((assigned == v).sum()) for v in experiment.variants}

    assert not sample_ratio_check(fair, experiment).mismatch
    assert sample_ratio_check({"control": 5000, "treatment": 4500}, experiment).mismatch
    skewed_for_90_10 = sample_ratio_check(
        {"control": 5000, "treatment": 5000}, Experiment("x", split=(0.9, 0.1))
    )
    assert skewed_for_90_10.mismatch


def test_welch_matches_scipy_and_finds_a_planted_effect() -> None:
    rng = np.random.default_rng(7)
    control = rng.normal(10.0, 5.0, 4000)
    treatment = rng.normal(10.6, 6.0, 4000)

    diff = welch_difference(treatment, control)

    assert diff.ci_low > 0
    assert diff.ci_low < 0.6 < diff.ci_high
    assert diff.significant
    expected = stats.ttest_ind(treatment, control, equal_var=False)
    assert diff.p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_an_a_a_test_has_an_interval_around_zero() -> None:
    rng = np.random.default_rng(11)
    scores = rng.exponential(3.0, 8000)
    cohort = np.where(rng.random(8000) < 0.5, "control", "treatment")

    diff = welch_difference(scores[cohort == "treatment"], scores[cohort == "control"])

    assert diff.ci_low < 0 < diff.ci_high
    assert not diff.significant


def test_relative_difference_is_positive_for_an_improvement_over_a_negative_control() -> None:
    diff = welch_difference([-1.0, -1.2, -0.8], [-2.0, -2.2, -1.8])

    assert diff.absolute == pytest.approx(1.0)
    assert diff.relative == pytest.approx(0.5)


def test_a_planted_effect_on_likes_is_detected_per_user() -> None:
    rng = np.random.default_rng(3)
    cohort = np.where(rng.random(6000) < 0.5, "control", "treatment")
    likes = rng.poisson(np.where(cohort == "treatment", 1.3, 1.0))

    result = analyze_users(per_user(cohort, likes), Experiment("likes-test"))

    control, treatment = result.variants
    assert treatment.difference is not None
    assert treatment.difference.ci_low > 0
    assert treatment.difference.ci_low < 0.5 * 0.3 < treatment.difference.ci_high
    assert treatment.per_user["like"] == pytest.approx(likes[cohort == "treatment"].mean())
    assert control.difference is None
    assert not result.sample_ratio.mismatch


def test_exposed_users_without_engagement_are_in_the_denominator() -> None:
    experiment = Experiment("denominator-test")
    users = np.arange(400)
    variant = experiment.assign(users)
    engaged = users[variant == "treatment"][:10]
    events = make_events(
        np.concatenate([users, engaged]), ["impression"] * len(users) + ["reply"] * len(engaged)
    )

    result = analyze_experiment(events, experiment, denominator="exposed")

    treatment = result.variants[1]
    assert treatment.users == int((variant == "treatment").sum())
    assert treatment.mean_score == pytest.approx(10 * 13.5 / treatment.users)
    assert result.variants[0].mean_score == 0.0


def test_variant_means_agree_with_the_engagement_report_per_variant() -> None:
    rng = np.random.default_rng(5)
    users = np.arange(300)
    actors = rng.choice(users, 200)
    kinds = rng.choice(["like", "reply", "hide"], 200).tolist()
    events = make_events(np.concatenate([users, actors]), ["impression"] * 300 + kinds)
    experiment = Experiment("agreement")

    result = analyze_experiment(events, experiment)
    report = engagement_report(events, cohorts=experiment.assign)

    by_variant = {row.cohort: row.score_per_user for row in report.rows}
    for variant in result.variants:
        assert variant.mean_score == pytest.approx(by_variant[variant.variant])


def test_an_experiment_needs_distinct_variants_and_a_matching_split() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Experiment("x", ("a", "a"))
    with pytest.raises(ValueError, match="shares"):
        Experiment("x", ("a", "b"), (0.5, 0.3, 0.2))
