"""Preprocessing: log + standardise + clamp, missing indicators, categories, JSON round trip."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from core.preprocessing import Gather, Moments, Preprocessor

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


def _per_column_reference(pre: Preprocessor, columns: dict[str, np.ndarray]) -> np.ndarray:
    """The transform written one feature at a time (how it was before it became whole-matrix)."""
    n = len(next(iter(columns.values())))
    out = np.zeros((n, pre.numeric_width), dtype=np.float32)
    extra = len(pre.numeric)
    for j, spec in enumerate(pre.numeric):
        values = np.asarray(columns[spec.name], dtype=np.float64)
        absent = np.isnan(values)
        if spec.log:
            values = np.log1p(np.maximum(values, 0.0))
        out[:, j] = np.where(absent, 0.0, np.clip((values - spec.mean) / spec.std, -5.0, 5.0))
        if spec.has_missing:
            out[:, extra] = absent
            extra += 1
    return out


def test_whole_matrix_transform_is_bit_identical_to_per_column() -> None:
    rng = np.random.default_rng(7)
    for n in (1, 31, 500, 4099):
        columns = {
            "gamma": rng.gamma(0.5, 10.0, n),
            "normal": rng.normal(0.0, 5.0, n),
            "lognormal": rng.lognormal(0.0, 3.0, n) * 1e6,
            "counts": rng.poisson(3.0, n).astype(np.float64),
            "topic": rng.integers(-1, 8, n).astype(np.float64),
        }
        for values in columns.values():
            values[rng.random(n) < 0.3] = np.nan
        names = ["gamma", "normal", "lognormal", "counts"]
        pre = Preprocessor.fit(columns, names, ["topic"])
        shifted = {k: v * 3.0 - 1.0 for k, v in columns.items()}  # outside the fitted range
        got = pre.transform(shifted)
        want = _per_column_reference(pre, shifted)
        assert np.array_equal(got.numeric.numpy().view(np.uint32), want.view(np.uint32)), n
        topic = shifted["topic"]
        known = ~np.isnan(topic) & (topic >= 0) & (topic < pre.categorical[0].cardinality)
        expected_ids = np.where(known, np.nan_to_num(topic), pre.categorical[0].oov)
        assert got.categorical[:, 0].tolist() == expected_ids.astype(np.int64).tolist()


def test_hashed_ids_fold_any_id_into_buckets_and_round_trip() -> None:
    """Any non-negative id gets a bucket (unseen ones too); missing and negative ids the OOV row."""
    train_ids = np.arange(1000, dtype=np.float64)
    pre = Preprocessor.fit({"user_id": train_ids}, [], [], hashed={"user_id": 64})
    assert pre.hashed == (True,) and pre.cardinalities == (65,)
    asked = np.array([3.0, 10.0**12, np.nan, -1.0, 3.0])
    got = pre.transform({"user_id": asked}).categorical[:, 0].numpy()
    assert 0 <= got[0] < 64 and 0 <= got[1] < 64
    assert got[0] == got[4]  # the same id, the same row
    assert list(got[2:4]) == [64, 64]
    spread = pre.transform({"user_id": train_ids}).categorical[:, 0].numpy()
    assert len(np.unique(spread)) == 64  # consecutive ids reach every bucket
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert np.array_equal(again.transform({"user_id": asked}).categorical.numpy(), got[:, None])


def test_moments_of_shards_add_up_to_the_whole_samples() -> None:
    rng = np.random.default_rng(3)
    values = rng.lognormal(2.0, 1.5, 10_001)
    whole = Moments.of(values)
    assert whole.mean == float(values.mean()) and whole.std == float(values.std())  # to the bit
    parts = sum((Moments.of(part) for part in np.array_split(values, [3, 3, 4000])), Moments())
    assert parts.count == whole.count
    assert parts.mean == pytest.approx(whole.mean, rel=1e-13)
    assert parts.std == pytest.approx(whole.std, rel=1e-12)


class ThreadGather:  # pylint: disable=too-few-public-methods  # a test double of all_gather_object
    """``world`` threads exchanging objects in rank order, as ``all_gather_object`` does."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world)
        self.slots: list[object] = [None] * world

    def of(self, rank: int) -> Gather:
        def gather(value: object) -> list[object]:
            self.slots[rank] = value
            self.barrier.wait()
            values = list(self.slots)
            self.barrier.wait()
            return values

        return gather


def test_a_fit_over_shards_is_the_whole_splits_fit(columns: dict[str, np.ndarray]) -> None:
    row = np.arange(1000.0)
    # Present on shard 0 alone: shards 1 and 2 see only missing values.
    columns = {**columns, "late": np.where((row >= 900) & (row % 3 == 0), row, np.nan)}
    columns["signed"][-1] = -1.0  # one shard's only negative: none of the shards may log it
    whole = Preprocessor.fit(columns, ["count", "signed", "late"], ["topic"])
    world = 3
    shards = [{name: v[rank::world] for name, v in columns.items()} for rank in range(world)]
    exchange = ThreadGather(world)
    with ThreadPoolExecutor(world) as pool:
        fitted = list(
            pool.map(
                lambda rank: Preprocessor.fit(
                    shards[rank], ["count", "signed", "late"], ["topic"], gather=exchange.of(rank)
                ),
                range(world),
            )
        )
    assert all(pre.to_dict() == fitted[0].to_dict() for pre in fitted)  # every rank the same
    assert fitted[0].categorical == whole.categorical
    for sharded, spec in zip(fitted[0].numeric, whole.numeric, strict=True):
        assert (sharded.name, sharded.log, sharded.has_missing) == (
            spec.name,
            spec.log,
            spec.has_missing,
        )
        assert sharded.mean == pytest.approx(spec.mean, rel=1e-12)
        assert sharded.std == pytest.approx(spec.std, rel=1e-12)
    assert [s.log for s in whole.numeric] == [True, False, True]
