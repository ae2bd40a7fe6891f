"""Data sources: the feature tables written by `feedrank features build`.

Paths are relative to this folder (Feast resolves them against the repo path).
"""

from feast import Field, FileSource, PushSource, RequestSource
from feast.types import Int64


def _features(name: str) -> FileSource:
    return FileSource(
        name=f"{name}_source",
        path=f"../data/features/{name}.parquet",
        timestamp_field="event_timestamp",
        description=f"Daily snapshots of {name}, each computed from events before its timestamp.",
    )


user_stats_source = _features("user_stats")
author_stats_source = _features("author_stats")
tweet_content_source = _features("tweet_content")
tweet_engagement_source = _features("tweet_engagement")
user_author_affinity_source = _features("user_author_affinity")
user_top_authors_source = _features("user_top_authors")

tweet_engagement_push = PushSource(
    name="tweet_engagement_push",
    batch_source=tweet_engagement_source,
    description="Fresh engagement counters of a tweet, pushed as /events arrive.",
)

ranking_request = RequestSource(
    name="ranking_request",
    schema=[Field(name="request_ts", dtype=Int64, description="Request time, Unix seconds.")],
    description="Known only when a feed is requested (for training: the impression time).",
)

candidate_request = RequestSource(
    name="candidate_request",
    schema=[
        Field(
            name="candidate_author_id",
            dtype=Int64,
            description="The candidate tweet's author (for training: the impression's author).",
        )
    ],
    description=(
        "Known from candidate retrieval. Not the author_id join key: Feast takes a request "
        "field out of the join keys, and author_stats needs it there."
    ),
)
