"""On-demand features: computed at request time from stored features and the request."""

import numpy as np
import pandas as pd
from data_sources import ranking_request
from feast import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float32
from feature_views import tweet_content, user_stats


@on_demand_feature_view(
    sources=[tweet_content, user_stats, ranking_request],
    schema=[
        # Field descriptions would make Feast's schema inference fail (it
        # compares the declared fields, descriptions included, with inferred ones).
        Field(name="tweet_age_hours", dtype=Float32),
        Field(name="user_topic_affinity", dtype=Float32),
    ],
    description="Request-time features of a (user, tweet) pair.",
)
def request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """Tweet age in hours at the request, and the user's engagement rate on the tweet's topic.

    Written with numpy on the columns (no per-column pandas operations):
    serving calls this same function on every /rank request.
    """
    request_ts = inputs["request_ts"].to_numpy(dtype="float64", na_value=np.nan)
    created = inputs["tweet_created_s"].to_numpy(dtype="float64", na_value=np.nan)
    topic = inputs["tweet_topic"].to_numpy(dtype="float64", na_value=np.nan)
    affinity = np.full(len(inputs), np.nan, dtype="float32")
    for i, (rates, t) in enumerate(zip(inputs["user_topic_rates"], topic, strict=True)):
        if isinstance(rates, (list, np.ndarray)) and 0 <= t < len(rates):
            affinity[i] = rates[int(t)]
    return pd.DataFrame(
        {
            "tweet_age_hours": np.maximum((request_ts - created) / 3600.0, 0.0).astype("float32"),
            "user_topic_affinity": affinity,
        },
        index=inputs.index,
    )
