"""On-demand features: computed at request time from stored features and the request."""

import numpy as np
import pandas as pd
from data_sources import ranking_request
from feast import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float32
from feature_views import author_stats, tweet_content, user_stats


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


@on_demand_feature_view(
    sources=[tweet_content, user_stats, author_stats],
    schema=[
        Field(name="follow_topic_share", dtype=Float32),
        Field(name="follow_author_affinity", dtype=Float32),
    ],
    description="How much the user's follow graph leans to the tweet's topic and author.",
)
def follow_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """The followed authors' share of the tweet's topic, and the dot product of the
    followed-topic mix with the author's topic mix (NaN where a mix is missing).

    The lists become (rows, topics) matrices first, so the arithmetic is vectorised;
    a list object repeated over rows (serving's one user) is converted once.
    Serving calls this same function on every /rank request.
    """

    def as_matrix(column: pd.Series) -> np.ndarray:
        values = column.to_numpy()
        ids = np.fromiter(map(id, values), dtype=np.int64, count=len(values))
        _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        distinct = [values[i] for i in first]
        lengths = [len(v) if isinstance(v, (list, np.ndarray)) else 0 for v in distinct]
        width = max(lengths, default=0)
        rows = np.full((len(distinct), width), np.nan)
        for j, (v, length) in enumerate(zip(distinct, lengths, strict=True)):
            if length and length == width:
                rows[j] = v
        return rows[inverse.reshape(-1)]

    n = len(inputs)
    topic = inputs["tweet_topic"].to_numpy(dtype="float64", na_value=np.nan)
    mixes = [as_matrix(inputs[c]) for c in ("user_follow_topics", "author_topic_mix")]
    follows, author = mixes
    share = np.full(n, np.nan)
    known = ~np.isnan(topic) & (topic >= 0) & (topic < follows.shape[1])
    share[known] = follows[np.flatnonzero(known), topic[known].astype(np.int64)]
    affinity = (
        (follows * author).sum(axis=1)
        if follows.shape[1] == author.shape[1] > 0
        else np.full(n, np.nan)
    )
    return pd.DataFrame(
        {
            "follow_topic_share": share.astype("float32"),
            "follow_author_affinity": affinity.astype("float32"),
        },
        index=inputs.index,
    )
