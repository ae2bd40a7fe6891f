"""Feature services: the named feature sets a model version reads.

Training (get_historical_features) and serving (get_online_features) both ask
for ``ranker_v1`` by name, so they read the same features. A model that needs
other features gets a new service (``ranker_v2``); the old one stays for the
model versions that still use it.
"""

from feast import FeatureService
from feature_views import (
    author_stats,
    tweet_content,
    tweet_engagement,
    user_author_affinity,
    user_stats,
)
from on_demand_views import request_features

ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[
        user_stats,
        author_stats,
        tweet_content,
        tweet_engagement,
        user_author_affinity,
        request_features,
    ],
    description="Features of the engagement model v1 (training and serving).",
)
