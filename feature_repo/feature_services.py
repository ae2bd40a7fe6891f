"""Feature services: the named feature sets a model version reads.

Training (get_historical_features) and serving (get_online_features) both ask
for the service recorded with the model by name, so they read the same
features. A model that needs other features gets a new service; the old one
stays for the model versions that still use it (``ranker_v2`` added the
follow-graph features, ``ranker_v3`` reads the pair features from the user's
top-author list, ``ranker_v4`` adds the user's and the author's counts over
all history; the older models keep reading theirs, without the columns added
to their views since).
"""

from feast import FeatureService
from feature_views import (
    author_stats,
    tweet_content,
    tweet_engagement,
    user_author_affinity,
    user_stats,
    user_top_authors,
)
from on_demand_views import follow_features, request_features, top_author_affinity


def _before_v4(view, *dropped: str):
    """The view without the all-history columns ranker_v4 added (``*_all``), nor ``dropped``."""
    return view[
        [f.name for f in view.features if not f.name.endswith("_all") and f.name not in dropped]
    ]


ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[
        _before_v4(user_stats, "user_follow_topics"),
        _before_v4(author_stats, "author_topic_mix"),
        tweet_content,
        tweet_engagement,
        user_author_affinity,
        request_features,
    ],
    description="Features of the engagement model v1 (models registered before v2 read them).",
)

ranker_v2 = FeatureService(
    name="ranker_v2",
    features=[
        _before_v4(user_stats),
        _before_v4(author_stats),
        tweet_content,
        tweet_engagement,
        user_author_affinity,
        request_features,
        follow_features,
    ],
    description="v1 plus the follow graph's topic mix: follow_topic_share, follow_author_affinity.",
)

ranker_v3 = FeatureService(
    name="ranker_v3",
    features=[
        _before_v4(user_stats),
        _before_v4(author_stats),
        tweet_content,
        tweet_engagement,
        user_top_authors,
        request_features,
        follow_features,
        top_author_affinity,
    ],
    description=(
        "v2 with the pair features from one key per user (user_top_authors, top 32 "
        "authors) instead of one per (user, author) pair: the online store at scale."
    ),
)

ranker_v4 = FeatureService(
    name="ranker_v4",
    features=[
        user_stats,
        author_stats,
        tweet_content,
        tweet_engagement,
        user_top_authors,
        request_features,
        follow_features,
        top_author_affinity,
    ],
    description=(
        "v3 plus each user's and author's impressions and smoothed action rates over all "
        "history (user_*_all, author_*_all), next to the 7-day ones."
    ),
)
