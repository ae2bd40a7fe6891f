"""On-demand features: computed at request time from stored features and the request.

Each view takes either of two inputs and answers in the same type:

- a DataFrame, on Feast's own paths (historical retrieval, ``get_online_features``);
- from serving (:class:`serving.features.OnlineFeatureReader`), a dict of
  numpy arrays, list features as float64 (rows, longest) matrices, NaN past
  each row's length. The same function, without a DataFrame in and out:
  building the input frame and reading its columns cost more than the
  arithmetic (1.6 ms of a 4.5 ms feature read for 500 rows).

Each view defines its helpers inside itself, even where two views share one
(``column``, ``as_matrix``): Feast stores the function alone in the registry,
and a module-level helper is a NameError when the registry's copy runs (tried).
"""

import numpy as np
import pandas as pd
from data_sources import candidate_request, ranking_request
from feast import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float32
from feature_views import author_stats, tweet_content, user_stats, user_top_authors


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

    Written with numpy on whole columns, the rates lists as one matrix: serving
    calls this same function on every /rank request (see the module docstring).
    """

    def column(name: str) -> np.ndarray:
        """A scalar input as float64 (NaN where missing)."""
        values = inputs[name]
        if isinstance(values, pd.Series):
            return values.to_numpy(dtype="float64", na_value=np.nan)
        return np.asarray(values, dtype="float64")

    def as_matrix(values: object) -> tuple[np.ndarray, np.ndarray]:
        """A list input as a NaN-padded (rows, longest) matrix and each row's length (0: missing).

        Serving passes that matrix (list values are never NaN: core/validation.py);
        Feast's own paths pass a column of objects (a list or an array per row),
        copied row by row.
        """
        if isinstance(values, np.ndarray):
            return values, np.count_nonzero(~np.isnan(values), axis=1)
        objects = values.to_numpy()
        lengths = np.fromiter(
            (len(v) if isinstance(v, (list, np.ndarray)) else 0 for v in objects),
            dtype=np.int64,
            count=len(objects),
        )
        matrix = np.full((len(objects), lengths.max(initial=0)), np.nan)
        present = np.flatnonzero(lengths)
        if len(present) and (lengths[present] == matrix.shape[1]).all():
            matrix[present] = np.array(objects[present].tolist())  # the usual case: one length
        else:
            for i in present.tolist():
                matrix[i, : lengths[i]] = objects[i]
        return matrix, lengths

    request_ts = column("request_ts")
    created = column("tweet_created_s")
    topic = column("tweet_topic")
    rates, lengths = as_matrix(inputs["user_topic_rates"])
    affinity = np.full(len(topic), np.nan, dtype="float32")
    known = np.flatnonzero((topic >= 0) & (topic < lengths))  # a NaN topic compares False
    affinity[known] = rates[known, topic[known].astype(np.int64)]
    out = {
        "tweet_age_hours": np.maximum((request_ts - created) / 3600.0, 0.0).astype("float32"),
        "user_topic_affinity": affinity,
    }
    return pd.DataFrame(out, index=inputs.index) if isinstance(inputs, pd.DataFrame) else out


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

    The lists become (rows, topics) matrices first, so the arithmetic is vectorised.
    A mix shorter than the longest one of its column counts as missing.
    Serving calls this same function on every /rank request (see the module docstring).
    """

    def column(name: str) -> np.ndarray:
        """A scalar input as float64 (NaN where missing)."""
        values = inputs[name]
        if isinstance(values, pd.Series):
            return values.to_numpy(dtype="float64", na_value=np.nan)
        return np.asarray(values, dtype="float64")

    def as_matrix(values: object) -> tuple[np.ndarray, np.ndarray]:
        """A list input as a NaN-padded (rows, longest) matrix and each row's length (0: missing).

        Serving passes that matrix (list values are never NaN: core/validation.py);
        Feast's own paths pass a column of objects (a list or an array per row),
        copied row by row.
        """
        if isinstance(values, np.ndarray):
            return values, np.count_nonzero(~np.isnan(values), axis=1)
        objects = values.to_numpy()
        lengths = np.fromiter(
            (len(v) if isinstance(v, (list, np.ndarray)) else 0 for v in objects),
            dtype=np.int64,
            count=len(objects),
        )
        matrix = np.full((len(objects), lengths.max(initial=0)), np.nan)
        present = np.flatnonzero(lengths)
        if len(present) and (lengths[present] == matrix.shape[1]).all():
            matrix[present] = np.array(objects[present].tolist())  # the usual case: one length
        else:
            for i in present.tolist():
                matrix[i, : lengths[i]] = objects[i]
        return matrix, lengths

    topic = column("tweet_topic")
    n = len(topic)
    follows, follow_lengths = as_matrix(inputs["user_follow_topics"])
    author, author_lengths = as_matrix(inputs["author_topic_mix"])
    follows[follow_lengths < follows.shape[1]] = np.nan
    author[author_lengths < author.shape[1]] = np.nan
    share = np.full(n, np.nan)
    known = np.flatnonzero((topic >= 0) & (topic < follows.shape[1]))
    share[known] = follows[known, topic[known].astype(np.int64)]
    affinity = (
        (follows * author).sum(axis=1)
        if follows.shape[1] == author.shape[1] > 0
        else np.full(n, np.nan)
    )
    out = {
        "follow_topic_share": share.astype("float32"),
        "follow_author_affinity": affinity.astype("float32"),
    }
    return pd.DataFrame(out, index=inputs.index) if isinstance(inputs, pd.DataFrame) else out


@on_demand_feature_view(
    sources=[user_top_authors, candidate_request],
    schema=[
        Field(name="ua_impressions", dtype=Float32),
        Field(name="ua_positive_rate", dtype=Float32),
        Field(name="ua_negative_count", dtype=Float32),
    ],
    description="The user-author pair's features, looked up in the user's top-author list.",
)
def top_author_affinity(inputs: pd.DataFrame) -> pd.DataFrame:
    """The candidate author's entry in the user's ``user_top_authors`` lists (NaN if absent).

    Same names and values as ``user_author_affinity`` for the authors in the
    list; an author outside it reads as missing, as a pair never met does.
    """

    def as_matrix(values: object) -> np.ndarray:
        """A list input as a NaN-padded (rows, longest) float64 matrix.

        Serving passes that matrix; Feast's own paths pass a column of objects
        (a list or an array per row), made one Arrow list array first (faster
        than copying row by row: 1M training rows a build).
        """
        if isinstance(values, np.ndarray):
            return values
        import pyarrow as pa  # pylint: disable=import-outside-toplevel
        import pyarrow.compute as pc  # pylint: disable=import-outside-toplevel

        values = pa.array(
            [v if isinstance(v, (list, np.ndarray)) else None for v in values.to_numpy()],
            type=pa.list_(pa.float64()),  # all missing would be Arrow's null type
        )
        lengths = pc.list_value_length(values).fill_null(0).to_numpy().astype(np.int64)
        matrix = np.full((len(values), lengths.max(initial=0)), np.nan)
        flat = pc.list_flatten(values).to_numpy(zero_copy_only=False)
        matrix[np.arange(matrix.shape[1]) < lengths[:, None]] = flat
        return matrix

    authors = inputs["candidate_author_id"]
    authors = np.asarray(
        authors.to_numpy(dtype="float64", na_value=np.nan)
        if isinstance(authors, pd.Series)
        else authors,
        dtype="float64",
    )
    ids = as_matrix(inputs["top_author_ids"])  # ids below 2^53: exact in float64
    match = ids == authors[:, None]
    rows = np.flatnonzero(match.any(axis=1))
    slot = match[rows].argmax(axis=1) if len(rows) else rows  # argmax refuses 0 columns
    out = {}
    for name, source in (
        ("ua_impressions", "top_author_impressions"),
        ("ua_positive_rate", "top_author_positive_rate"),
        ("ua_negative_count", "top_author_negative_count"),
    ):
        values = as_matrix(inputs[source])
        column = np.full(len(authors), np.nan, dtype="float32")
        column[rows] = values[rows, slot]
        out[name] = column
    return pd.DataFrame(out, index=inputs.index) if isinstance(inputs, pd.DataFrame) else out
