"""Feature views: what each feature table holds, and how long a value stays valid.

Rate features are named after the actions in core/actions.yaml, so a new
action gets its features without an edit here.
"""

from datetime import timedelta

from data_sources import (
    author_stats_source,
    tweet_content_source,
    tweet_engagement_push,
    user_author_affinity_source,
    user_stats_source,
    user_top_authors_source,
)
from entities import author, tweet, user
from feast import FeatureView, Field
from feast.types import Array, Float32, Int64

from core.actions import load_actions

ACTIONS = load_actions().names

user_stats = FeatureView(
    name="user_stats",
    entities=[user],
    ttl=timedelta(days=2),
    schema=[
        Field(name="user_impressions_7d", dtype=Int64, description="Tweets shown, last 7 days."),
        *[
            Field(name=f"user_{a}_rate_7d", dtype=Float32, description=f"Smoothed {a} rate, 7d.")
            for a in ACTIONS
        ],
        Field(name="user_mean_dwell_7d", dtype=Float32, description="Mean seconds per view, 7d."),
        Field(name="user_impressions_all", dtype=Int64, description="Tweets shown, all history."),
        *[
            Field(
                name=f"user_{a}_rate_all",
                dtype=Float32,
                description=f"Smoothed {a} rate, all history.",
            )
            for a in ACTIONS
        ],
        Field(
            name="user_topic_rates",
            dtype=Array(Float32),
            description="Positive engagement rate per topic, all history, smoothed.",
        ),
        Field(
            name="user_follow_topics",
            dtype=Array(Float32),
            description="Mean topic mix of the authors the user follows.",
        ),
    ],
    source=user_stats_source,
    description="A user's own behaviour; daily snapshots.",
)

author_stats = FeatureView(
    name="author_stats",
    entities=[author],
    ttl=timedelta(days=2),
    schema=[
        Field(name="author_followers", dtype=Int64, description="Followers."),
        Field(name="author_tweets_7d", dtype=Int64, description="Tweets posted, 7d."),
        Field(name="author_impressions_7d", dtype=Int64, description="Times shown, 7d."),
        *[
            Field(
                name=f"author_{a}_rate_7d",
                dtype=Float32,
                description=f"Smoothed {a} rate received, 7d.",
            )
            for a in ACTIONS
        ],
        Field(name="author_impressions_all", dtype=Int64, description="Times shown, all history."),
        *[
            Field(
                name=f"author_{a}_rate_all",
                dtype=Float32,
                description=f"Smoothed {a} rate received, all history.",
            )
            for a in ACTIONS
        ],
        Field(
            name="author_topic_mix",
            dtype=Array(Float32),
            description="Share of the author's tweets per topic, all history, smoothed.",
        ),
    ],
    source=author_stats_source,
    description="What an author's tweets receive; daily snapshots.",
)

tweet_content = FeatureView(
    name="tweet_content",
    entities=[tweet],
    ttl=timedelta(days=365),
    schema=[
        Field(name="tweet_topic", dtype=Int64, description="Topic id."),
        Field(
            name="tweet_media_type", dtype=Int64, description="0 text, 1 image, 2 video, 3 link."
        ),
        Field(name="tweet_length", dtype=Int64, description="Characters."),
        Field(name="tweet_created_s", dtype=Int64, description="Creation time, Unix seconds."),
    ],
    source=tweet_content_source,
    description="What a tweet is; stamped at creation, never changes.",
)

tweet_engagement = FeatureView(
    name="tweet_engagement",
    entities=[tweet],
    ttl=timedelta(days=30),
    schema=[
        Field(name="tweet_impressions", dtype=Int64, description="Times shown so far."),
        *[Field(name=f"tweet_{a}_count", dtype=Int64, description=f"{a} so far.") for a in ACTIONS],
    ],
    source=tweet_engagement_push,
    description="Engagement a tweet received so far: daily batch plus live pushes.",
)

user_author_affinity = FeatureView(
    name="user_author_affinity",
    entities=[user, author],
    ttl=timedelta(days=90),
    schema=[
        Field(
            name="ua_impressions", dtype=Int64, description="The author's tweets shown to the user."
        ),
        Field(
            name="ua_positive_rate",
            dtype=Float32,
            description="Smoothed positive actions per impression, pair (a like and a long "
            "dwell count 2).",
        ),
        Field(name="ua_negative_count", dtype=Int64, description="Hides and reports, pair."),
    ],
    source=user_author_affinity_source,
    description="A user's history with an author; a row each day the pair was active.",
)

user_top_authors = FeatureView(
    name="user_top_authors",
    entities=[user],
    ttl=timedelta(days=90),
    schema=[
        Field(
            name="top_author_ids",
            dtype=Array(Int64),
            description="The user's most shown authors (at most 32), most shown first.",
        ),
        Field(
            name="top_author_impressions",
            dtype=Array(Int64),
            description="ua_impressions of each listed author.",
        ),
        Field(
            name="top_author_positive_rate",
            dtype=Array(Float32),
            description="ua_positive_rate of each listed author.",
        ),
        Field(
            name="top_author_negative_count",
            dtype=Array(Int64),
            description="ua_negative_count of each listed author.",
        ),
    ],
    source=user_top_authors_source,
    description=(
        "user_author_affinity as one key per user: the top authors by impressions and their "
        "pair features; a row each day the user was active."
    ),
)
