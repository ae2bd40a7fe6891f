"""Request and response bodies of the serving API (pydantic: validated before any work).

Limits live here, next to the fields they bound, so the OpenAPI schema that
BentoML publishes states them and a bad request is a 400 naming the field,
never a half-done ranking. ``extra="forbid"``: a misspelt field is an error,
not silently ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from core.actions import IMPRESSION, load_actions

MAX_CANDIDATES = 2000
MAX_LIMIT = 500
MAX_EVENTS = 1000
ECHO_CHARS = 32
"""The longest prefix of a bad value an error message repeats."""

ACTION_NAMES: tuple[str, ...] = (IMPRESSION, *load_actions().names)
ActionName = Literal[ACTION_NAMES]  # type: ignore[valid-type]  # an enum in the OpenAPI schema

UserId = Annotated[
    int, Field(ge=0, le=2**63 - 1, strict=True, description="User id (0 .. 2^63-1).")
]
TweetId = Annotated[
    int, Field(ge=0, le=2**63 - 1, strict=True, description="Tweet id (0 .. 2^63-1).")
]


def _aware(value: datetime) -> datetime:
    """Naive times are read as UTC: the world and the event log are in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class RankRequest(BaseModel):
    """``POST /rank``: a feed for one user."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    candidate_tweet_ids: list[TweetId] | None = Field(
        None,
        max_length=MAX_CANDIDATES,
        description="Tweets to rank; omitted: the followees' tweets since the last visit.",
    )
    limit: int = Field(
        50, ge=1, le=MAX_LIMIT, strict=True, description="How many tweets to return."
    )
    request_time: AwareDatetime | None = Field(
        None,
        description="ISO time the feed is for (default: now; the demo passes the world's end).",
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        strict=True,
        description="Seed of this request's exploration draw (default: a random one, "
        "returned in the answer): the same seed, scores and settings give the same feed.",
    )


class RankedItem(BaseModel):
    """One tweet of the feed."""

    tweet_id: int
    author_id: int
    rank: int = Field(description="0-based position in the feed.")
    score: float = Field(description="Weighted engagement (reverse-chronological feed: 0).")
    probabilities: dict[str, float] = Field(description="P(action) per action (empty if degraded).")
    propensity: float = Field(
        description="Probability that the serving policy put this tweet in this slot, given "
        "the slots above: 1 in a greedy or fallback feed, the Plackett-Luce "
        "probability in an explored one. Send it back with the impression's event."
    )


class RankResponse(BaseModel):
    """``POST /rank`` answer; ``degraded`` says the ranking fell back to newest-first."""

    request_id: str = Field(
        description="This answer's id: in the log lines and feature samples it caused."
    )
    items: list[RankedItem]
    model_version: str
    candidate_count: int
    candidate_source: str = Field(description="followees, cold_start or request.")
    degraded: bool
    reason: str | None
    explored: bool = Field(
        description="The feed was drawn by exploration (Plackett-Luce), not sorted greedily."
    )
    seed: int = Field(description="The exploration seed used (the request's, or a random one).")
    timings_ms: dict[str, float]


class Event(BaseModel):
    """One engagement event, in the schema of ``core.tables.EVENTS``."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=128, description="Unique; a retry keeps it.")
    user_id: UserId
    tweet_id: TweetId
    action: ActionName = Field(description="'impression' or an action of core/actions.yaml.")
    dwell_seconds: float | None = Field(None, ge=0, allow_inf_nan=False)
    timestamp: AwareDatetime
    request_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The `request_id` of the /rank answer that showed the tweet.",
    )
    propensity: float | None = Field(
        None,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="The item's `propensity` from that answer (logged for off-policy evaluation).",
    )

    @field_validator("action", mode="wrap")
    @classmethod
    def _known_action(cls, action: Any, handler: ValidatorFunctionWrapHandler) -> str:
        try:
            return str(handler(action))
        except ValidationError:
            shown = repr(action[:ECHO_CHARS]) if isinstance(action, str) else type(action).__name__
            raise ValueError(
                f"unknown action {shown}{'...' if len(str(action)) > ECHO_CHARS else ''}; "
                f"known: {', '.join(ACTION_NAMES)}"
            ) from None


EventBatch = Annotated[list[Event], Field(min_length=1, max_length=MAX_EVENTS)]


class EventsResponse(BaseModel):
    """``POST /events`` answer."""

    received: int
    accepted: int = Field(description="New events appended to the log.")
    duplicates: int = Field(description="Events whose id was already logged (retries).")
    pushed_tweets: int = Field(description="Tweets whose fresh counters reached Feast.")
    unknown: int = Field(
        default=0,
        description="Events naming a user or tweet the system does not know: "
        "counted and logged, never applied to features or candidates.",
    )
