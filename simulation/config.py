"""Size and shape of the synthetic world, with the named presets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Preset = Literal["tiny", "demo", "long", "large", "xlarge"]


class WorldConfig(BaseModel):
    """Parameters of the simulated world. Equal configs give byte-equal worlds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(7, description="Seed of every random draw.")
    n_users: int = Field(gt=1, description="Users; every user can also post (be an author).")
    n_topics: int = Field(16, gt=1, le=64, description="Tweet topics.")
    days: int = Field(gt=1, description="Length of the simulated period in days.")
    start: datetime = Field(
        datetime(2026, 1, 5, tzinfo=UTC), description="First instant of the world (UTC)."
    )
    mean_followees: float = Field(gt=0, description="Mean accounts a user follows.")
    popularity_alpha: float = Field(
        1.2, gt=0, description="Pareto tail index of author popularity: lower, heavier tail."
    )
    topical_follow_share: float = Field(
        0.5, ge=0, le=1, description="Share of follows chosen within the user's interests."
    )
    tweets_per_author_day: float = Field(
        0.5, gt=0, description="Mean tweets an author posts a day."
    )
    visits_per_user_day: float = Field(
        3.0, gt=0, description="Mean feed visits a user makes a day."
    )
    max_feed: int = Field(100, gt=0, description="Newest candidates shown per visit.")
    shard_visits: int = Field(
        200_000,
        gt=0,
        description="Visits per shard of impressions: blocks of whole users, each drawn from a "
        "random stream of its own, in parallel on Ray. Part of the world's definition: one "
        "config gives one world on any runner.",
    )
    interest_shift: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of users whose interests move to other topics after they chose "
        "whom to follow: a distribution shift, for drift monitoring.",
    )


PRESETS: dict[str, dict[str, float | int]] = {
    # Unit tests: seconds.
    "tiny": {"n_users": 300, "days": 6, "mean_followees": 20},
    # The default: >= 5k users and >= 1M impressions.
    "demo": {"n_users": 5000, "days": 10, "mean_followees": 50},
    # The demo over 16 days: model quality with a longer history (analysis.model_ceiling).
    "long": {"n_users": 5000, "days": 16, "mean_followees": 50},
    # Benchmarks: >= 10M impressions.
    "large": {"n_users": 30000, "days": 10, "mean_followees": 100},
    # Scale-out: about 100M impressions, by shard (`data generate --preset xlarge`).
    "xlarge": {"n_users": 250000, "days": 10, "mean_followees": 100},
}


def world_config(preset: Preset = "demo", **overrides: object) -> WorldConfig:
    """The config of a preset, with overrides (None values are ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return WorldConfig.model_validate(values)
