"""Preprocessing: log + standardise + clamp, missing indicators, categories, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.preprocessing import Preprocessor

pytestmark = pytest.mark.unit


@pytest.fixture(name="columns")
def fixture_columns() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    counts = rng.poisson(20.0, 1000).astype(np.float64)
    counts[::10] = np.nan
    return {
        "count": counts,
        "signed": rng.normal(0.0, 3.0, 1000),
        "topic": rng.integers(0, 5, 1000).astype(np.float64),
    }


def test_fit_standardises_log_counts_and_flags_missing(columns: dict[str, np.ndarray]) -> None:
    pre = Preprocessor.fit(columns, ["count", "signed"], ["topic"])
    batch = pre.transform(columns)
    count, signed = pre.numeric
    assert count.log and not signed.log
    assert count.has_missing and not signed.has_missing
    assert pre.numeric_width == 3
    numeric = batch.numeric.numpy()
    present = ~np.isnan(columns["count"])
    assert numeric[present, 0].mean() == pytest.approx(0.0, abs=1e-5)
    assert numeric[present, 0].std() == pytest.approx(1.0, abs=1e-3)
    assert np.all(numeric[~present, 0] == 0.0)
    np.testing.assert_array_equal(numeric[:, 2], ~present)
    assert batch.categorical.shape == (1000, 1)
    assert pre.cardinalities == (6,)


def test_clamps_outliers_and_maps_unknown_categories(columns: dict[str, np.ndarray]) -> None:
    pre = Preprocessor.fit(columns, ["count", "signed"], ["topic"], clamp=3.0)
    batch = pre.transform(
        {
            "count": np.array([1e12, -5.0]),
            "signed": np.array([1e6, -1e6]),
            "topic": np.array([99.0, np.nan]),
        }
    )
    np.testing.assert_allclose(batch.numeric[:, 1].numpy(), [3.0, -3.0])
    assert batch.numeric[0, 0] == 3.0
    assert batch.categorical[:, 0].tolist() == [5, 5]


def test_features_are_read_by_name_not_position(columns: dict[str, np.ndarray]) -> None:
    pre = Preprocessor.fit(columns, ["count", "signed"], ["topic"])
    reordered = {"topic": columns["topic"], "extra": columns["signed"] * 0, **columns}
    reordered = dict(reversed(list(reordered.items())))
    a, b = pre.transform(columns), pre.transform(reordered)
    assert np.array_equal(a.numeric.numpy(), b.numeric.numpy())
    assert np.array_equal(a.categorical.numpy(), b.categorical.numpy())


def test_json_round_trip_gives_identical_tensors(columns: dict[str, np.ndarray]) -> None:
    pre = Preprocessor.fit(columns, ["count", "signed"], ["topic"])
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again.feature_names == pre.feature_names
    assert np.array_equal(
        pre.transform(columns).numeric.numpy(), again.transform(columns).numeric.numpy()
    )


def test_object_columns_with_none_are_missing(columns: dict[str, np.ndarray]) -> None:
    pre = Preprocessor.fit(columns, ["count", "signed"], ["topic"])
    batch = pre.transform(
        {"count": np.array([None, 3], dtype=object), "signed": [0.0, 0.0], "topic": [1, 2]}
    )
    assert batch.numeric[0, 0] == 0.0 and batch.numeric[0, 2] == 1.0
    assert batch.numeric[1, 2] == 0.0


def test_missing_feature_is_named(columns: dict[str, np.ndarray]) -> None:
    pre = Preprocessor.fit(columns, ["count", "signed"], ["topic"])
    with pytest.raises(KeyError, match="signed"):
        pre.transform({"count": columns["count"], "topic": columns["topic"]})
