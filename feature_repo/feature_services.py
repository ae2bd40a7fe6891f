"""Feature services: the named feature sets a model version reads.

Training (get_historical_features) and serving (get_online_features) both ask
for the service recorded with the model by name, so they read the same
features. A model that needs other features gets a new service; the old one
stays for the model versions that still use it (``ranker_v2`` added the
follow-graph features, ``ranker_v3`` reads the pair features from the user's
top-author list; ``ranker_v1`` and ``ranker_v2`` models keep reading theirs).
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

ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[
        user_stats[[f.name for f in user_stats.features if f.name != "user_follow_topics"]],
        author_stats[[f.name for f in author_stats.features if f.name != "author_topic_mix"]],
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
        user_stats,
        author_stats,
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
        "v2 with the pair features from one key per user (user_top_authors, top 32 "
        "authors) instead of one per (user, author) pair: the online store at scale."
    ),
)
