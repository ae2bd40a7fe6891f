"""A/B analysis of weighted engagement: variant assignment, effect, confidence, sample ratio.

A user's variant is a pure function of (experiment name, user_id), so serving
(which picks the ranker to use) and this analysis (which reads the event log)
agree without sharing a table, in any process and any Python version. The unit
of analysis is the user: each user's weighted engagement over the experiment's
range, zero for users who were shown tweets and did nothing, so a variant that
makes people leave is not flattered by averaging over those who stayed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from core.actions import IMPRESSION, ActionSet, load_actions
from metrics.engagement import (
    Denominator,
    EventSource,
    Period,
    UserActions,
    user_actions,
)

SRM_THRESHOLD = 0.001
"""p-value below which a sample-ratio mismatch is flagged: the split is broken, not unlucky."""

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def assignment_unit(user_ids: npt.ArrayLike, experiment: str) -> npt.NDArray[np.float64]:
    """A uniform number in [0, 1) per user, fixed by (experiment, user_id).

    The user_id-th output of a splitmix64 stream whose seed is the first 8
    bytes of blake2b(experiment name): integer arithmetic only, so it is the
    same on every platform, process and Python version (unlike ``hash()``),
    vectorised (1M users in milliseconds), and independent across experiments
    because each name seeds a different stream.

    Args:
        user_ids: integer user ids.
        experiment: the experiment's name.

    Returns:
        One float per user, uniform in [0, 1).
    """
    seed = np.uint64(
        int.from_bytes(hashlib.blake2b(experiment.encode(), digest_size=8).digest(), "little")
    )
    ids = np.asarray(user_ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = seed + (ids + np.uint64(1)) * _GOLDEN_GAMMA
        z = (z ^ (z >> np.uint64(30))) * _MIX_1
        z = (z ^ (z >> np.uint64(27))) * _MIX_2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class Experiment:
    """An experiment: its name (the hash salt), its variants and their traffic shares.

    The first variant is the control that the others are compared with.
    """

    name: str
    variants: tuple[str, ...] = ("control", "treatment")
    split: tuple[float, ...] | None = None
    """Traffic share per variant, summing to 1; ``None`` splits evenly."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("experiment name must not be empty: it salts the assignment")
        if len(self.variants) < 2 or len(set(self.variants)) != len(self.variants):
            raise ValueError(f"need at least two distinct variants, got {self.variants}")
        if self.split is not None:
            if len(self.split) != len(self.variants):
                raise ValueError(
                    f"split {self.split} has {len(self.split)} shares "
                    f"for {len(self.variants)} variants"
                )
            if min(self.split) <= 0 or abs(sum(self.split) - 1.0) > 1e-9:
                raise ValueError(f"split {self.split} must be positive shares summing to 1")

    @property
    def control(self) -> str:
        """The variant the others are compared with."""
        return self.variants[0]

    @property
    def shares(self) -> tuple[float, ...]:
        """Traffic share per variant, in variant order."""
        if self.split is None:
            return tuple(1.0 / len(self.variants) for _ in self.variants)
        return self.split

    def assign(self, user_ids: npt.ArrayLike) -> npt.NDArray[np.str_]:
        """The variant of each user: where its unit number falls in the cumulative split."""
        edges = np.cumsum(self.shares)[:-1]
        index = np.searchsorted(edges, assignment_unit(user_ids, self.name), side="right")
        return np.asarray(self.variants)[index]


@dataclass(frozen=True)
class Difference:
    """A variant's mean minus the control's, with Welch's confidence interval."""

    absolute: float
    relative: float | None
    """``absolute / |control mean|``, so positive is better even when the control
    mean is negative; ``None`` when the control mean is 0."""
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float

    @property
    def significant(self) -> bool:
        """Whether the interval excludes zero (p below 1 - confidence)."""
        return self.ci_low > 0 or self.ci_high < 0


def welch_difference(
    treatment: npt.ArrayLike, control: npt.ArrayLike, confidence: float = 0.95
) -> Difference:
    """Difference of means with Welch's t interval and two-sided p-value.

    Welch's test does not assume equal variances, which matters here: a
    ranker that changes how many users report tweets changes the spread of
    per-user scores (a report weighs -369) as much as their mean.

    Args:
        treatment: per-user scores of the variant.
        control: per-user scores of the control.
        confidence: coverage of the interval.

    Raises:
        ValueError: fewer than two users on either side (no variance estimate).
    """
    t = np.asarray(treatment, dtype=np.float64)
    c = np.asarray(control, dtype=np.float64)
    if len(t) < 2 or len(c) < 2:
        raise ValueError(f"need at least 2 users per variant, got {len(t)} and {len(c)} (control)")
    diff = float(t.mean() - c.mean())
    var_t, var_c = t.var(ddof=1) / len(t), c.var(ddof=1) / len(c)
    se = float(np.sqrt(var_t + var_c))
    if se == 0.0:
        low = high = diff
        p_value = 1.0 if diff == 0.0 else 0.0
    else:
        dof = (var_t + var_c) ** 2 / (var_t**2 / (len(t) - 1) + var_c**2 / (len(c) - 1))
        half_width = float(stats.t.ppf(0.5 + confidence / 2, dof)) * se
        low, high = diff - half_width, diff + half_width
        p_value = float(2 * stats.t.sf(abs(diff) / se, dof))
    control_mean = float(c.mean())
    return Difference(
        absolute=diff,
        relative=diff / abs(control_mean) if control_mean != 0.0 else None,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        confidence=confidence,
    )


@dataclass(frozen=True)
class SampleRatioCheck:
    """Chi-square test of the users per variant against the configured split.

    A mismatch means the assignment or the logging is broken (a variant
    crashes before logging, bots land in one arm): the effect estimates are
    then not trustworthy, however small their p-values.
    """

    observed: Mapping[str, int]
    expected: Mapping[str, float]
    statistic: float
    p_value: float

    @property
    def mismatch(self) -> bool:
        """Whether the split is off beyond chance (p < :data:`SRM_THRESHOLD`)."""
        return self.p_value < SRM_THRESHOLD


def sample_ratio_check(observed: Mapping[str, int], experiment: Experiment) -> SampleRatioCheck:
    """Compare users per variant with the experiment's split (chi-square goodness of fit)."""
    counts = np.array([observed.get(v, 0) for v in experiment.variants], dtype=np.float64)
    expected = counts.sum() * np.asarray(experiment.shares)
    if counts.sum() == 0:
        statistic, p_value = 0.0, 1.0
    else:
        result = stats.chisquare(counts, expected)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return SampleRatioCheck(
        observed={v: int(n) for v, n in zip(experiment.variants, counts, strict=True)},
        expected={v: float(n) for v, n in zip(experiment.variants, expected, strict=True)},
        statistic=statistic,
        p_value=p_value,
    )


@dataclass(frozen=True)
class VariantResult:
    """One variant's users, per-user weighted engagement and per-action breakdown."""

    variant: str
    users: int
    mean_score: float | None
    """Per-user mean of weighted engagement; ``None`` without users."""
    counts: Mapping[str, int]
    """Events per action (and ``impression``) over all the variant's users."""
    per_user: Mapping[str, float | None]
    """Events per action (and ``impression``) per user."""
    difference: Difference | None
    """Against the control; ``None`` for the control itself or too few users."""


@dataclass(frozen=True)
class ExperimentResult:
    """Everything :func:`analyze_users` concludes about an experiment."""

    experiment: Experiment
    denominator: Denominator
    variants: tuple[VariantResult, ...]
    sample_ratio: SampleRatioCheck
    period: Period | None
    """The range analysed; ``None`` when it was empty."""

    def to_frame(self) -> pd.DataFrame:
        """One row per variant: users, mean score, difference and CI, p-value, per-action rates."""
        records = []
        for result in self.variants:
            diff = result.difference
            records.append(
                {
                    "variant": result.variant,
                    "users": result.users,
                    "mean_score": result.mean_score,
                    "difference": diff.absolute if diff else None,
                    "relative_difference": diff.relative if diff else None,
                    "ci_low": diff.ci_low if diff else None,
                    "ci_high": diff.ci_high if diff else None,
                    "p_value": diff.p_value if diff else None,
                    **{f"{name}_per_user": rate for name, rate in result.per_user.items()},
                }
            )
        return pd.DataFrame.from_records(records)


def analyze_users(
    users: UserActions,
    experiment: Experiment,
    *,
    denominator: Denominator = "active",
    confidence: float = 0.95,
    actions: ActionSet | None = None,
) -> ExperimentResult:
    """Compare each variant with the control on per-user weighted engagement.

    Args:
        users: per-user counts with ``cohort`` holding each user's variant;
            users in no variant of ``experiment`` are left out.
        experiment: the variants (control first) and their split.
        denominator: ``active`` keeps every user with an event; ``exposed``
            keeps users with at least one impression.
        confidence: coverage of the intervals.
        actions: the action weights; default ``core/actions.yaml``.
    """
    actions = actions if actions is not None else load_actions()
    keep = (
        users.counts[IMPRESSION] > 0
        if denominator == "exposed"
        else np.ones_like(users.user_id, dtype=bool)
    )
    scores = users.scores(actions)
    kinds = (IMPRESSION, *actions.names)
    members = {v: keep & (users.cohort == v) for v in experiment.variants}
    control = scores[members[experiment.control]]

    results = []
    for variant, member in members.items():
        n = int(member.sum())
        counts = {kind: int(users.counts[kind][member].sum()) for kind in kinds}
        difference = None
        if variant != experiment.control and n >= 2 and len(control) >= 2:
            difference = welch_difference(scores[member], control, confidence)
        results.append(
            VariantResult(
                variant=variant,
                users=n,
                mean_score=float(scores[member].mean()) if n else None,
                counts=counts,
                per_user={kind: counts[kind] / n if n else None for kind in kinds},
                difference=difference,
            )
        )
    return ExperimentResult(
        experiment=experiment,
        denominator=denominator,
        variants=tuple(results),
        sample_ratio=sample_ratio_check({r.variant: r.users for r in results}, experiment),
        period=users.period,
    )


def analyze_experiment(
    events: EventSource,
    experiment: Experiment,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    denominator: Denominator = "active",
    confidence: float = 0.95,
    actions: ActionSet | None = None,
) -> ExperimentResult:
    """Read the event log over ``[start, end)`` and compare the experiment's variants.

    Every user in the log is assigned with :meth:`Experiment.assign`, as
    serving does, so no assignment table is needed.

    Args:
        events: the event log (``core.tables.EVENTS`` schema).
        experiment: the variants (control first) and their split.
        start: first instant included; default the first event's time.
        end: first instant excluded; default just after the last event.
        denominator: ``active`` or ``exposed`` users form each variant.
        confidence: coverage of the intervals.
        actions: the action weights; default ``core/actions.yaml``.

    Raises:
        TableError: the log is missing, unreadable or off-schema (names the file).
        UnknownActionError: events in the range name undefined actions.
    """
    users = user_actions(events, start=start, end=end, cohorts=experiment.assign, actions=actions)
    return analyze_users(
        users, experiment, denominator=denominator, confidence=confidence, actions=actions
    )
