"""The feature tables' value rules where a rate is not a probability."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
import pytest

from core.actions import load_actions
from core.validation import feature_table_columns, rate_ranges

pytestmark = pytest.mark.unit


def test_ua_positive_rate_counts_positive_actions_per_impression() -> None:
    """A liked and long-dwelled tweet counts 2: up to one per positive action, not 1."""
    most = float(len(load_actions().positive))
    column = feature_table_columns()["user_author_affinity"]["ua_positive_rate"]
    schema = pa.DataFrameSchema({"ua_positive_rate": column})
    schema.validate(
        pd.DataFrame({"ua_positive_rate": pd.Series([0.0, 1.5, most], dtype="float32")})
    )
    with pytest.raises(pa.errors.SchemaError, match="in_range"):
        schema.validate(
            pd.DataFrame({"ua_positive_rate": pd.Series([most + 0.5], dtype="float32")})
        )
    assert rate_ranges()["ua_positive_rate"] == (0.0, most)
    assert rate_ranges()["user_like_rate_7d"] == (0.0, 1.0)
