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
    """Tweet age in hours at the request, and the user's engagement rate on the tweet's topic."""
    out = pd.DataFrame(index=inputs.index)
    age = (inputs["request_ts"] - inputs["tweet_created_s"]) / 3600.0
    out["tweet_age_hours"] = age.clip(lower=0.0).astype("float32")
    topic = inputs["tweet_topic"]
    out["user_topic_affinity"] = np.array(
        [
            rates[int(t)]
            if isinstance(rates, (list, np.ndarray)) and 0 <= t < len(rates)
            else np.nan
            for rates, t in zip(inputs["user_topic_rates"], topic.fillna(-1), strict=True)
        ],
        dtype="float32",
    )
    return out
