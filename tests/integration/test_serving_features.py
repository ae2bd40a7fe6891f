"""The serving feature reader returns what Feast's get_online_features returns, on both stores."""

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import redis
from feast import FeatureStore
from feast.protos.feast.types.Value_pb2 import Value

from core.feast_layout import decode_values
from core.feast_store import FEATURE_SERVICE, drop_project, entity_rows, open_store
from core.workspace import Workspace
from feedrank.pipeline import publish_features
from serving.features import (
    FeatureDeadlineExceeded,
    FeatureStoreUnavailable,
    OnlineFeatureReader,
)
from serving.row_cache import ListValues, RowCache

pytestmark = pytest.mark.integration
REQUEST_TS = 1_768_000_000


def _entities(ws: Workspace, seed: int, n: int = 120) -> dict[str, np.ndarray]:
    """One user and n candidate tweets (some unknown), like a /rank request."""
    tweets = pq.read_table(ws.world / "tweets.parquet").to_pandas().sample(n, random_state=seed)
    authors = tweets.author_id.to_numpy().copy()
    ids = tweets.tweet_id.to_numpy().copy()
    ids[:3] = 10**9 + np.arange(3)  # unknown tweets: all features missing
    user = int(np.random.default_rng(seed).integers(0, 300))
    return {"user_id": np.full(n, user), "author_id": authors, "tweet_id": ids}


def _assert_same(
    reader: OnlineFeatureReader, store: FeatureStore, e: dict, service: str = FEATURE_SERVICE
) -> None:
    got = reader.read(e, REQUEST_TS)
    rows = entity_rows(store, service, e, REQUEST_TS)
    want = store.get_online_features(
        features=store.get_feature_service(service), entity_rows=rows
    ).to_dict()
    assert list(got) == reader.names
    for name, values in got.items():
        if isinstance(values, list):  # list features (inputs of on-demand views)
            assert values == [None if v is None else list(v) for v in want[name]], name
            continue
        expected = np.array([np.nan if v is None else v for v in want[name]], dtype=float)
        np.testing.assert_array_equal(np.asarray(values), expected, err_msg=name)
    assert np.isnan(got["tweet_topic"][:3]).all()
    assert not np.isnan(got["tweet_topic"][3:]).any()


def test_parity_on_sqlite_cold_and_cached(tiny_workspace: Workspace) -> None:
    store = open_store(tiny_workspace)
    reader = OnlineFeatureReader(store)
    for seed in range(4):
        entities = _entities(tiny_workspace, seed)
        _assert_same(reader, store, entities)  # cold: read from SQLite
        _assert_same(reader, store, entities)  # warm: from the in-process cache


def _probed(
    reader: OnlineFeatureReader, monkeypatch: pytest.MonkeyPatch, method: str = "_read_sqlite"
) -> dict[str, int]:
    """Counts the keys each view asks the store for (the real read still runs)."""
    counts: dict[str, int] = {}
    read = getattr(OnlineFeatureReader, method)

    def counting(self, spec, keys):  # type: ignore[no-untyped-def]
        counts[spec.view.name] = counts.get(spec.view.name, 0) + len(keys)
        return read(self, spec, keys)

    monkeypatch.setattr(OnlineFeatureReader, method, counting)
    return counts


def test_the_pair_features_are_one_key_per_request(
    tiny_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ranker_v3 reads the user's top-author list once; ranker_v2 probes a key per pair."""
    store = open_store(tiny_workspace)
    requests = [_entities(tiny_workspace, seed) for seed in range(4)]
    older = OnlineFeatureReader(store, "ranker_v2")
    pair_view = [older.read(entities, REQUEST_TS) for entities in requests]
    current = OnlineFeatureReader(store)
    probed = _probed(current, monkeypatch)
    for entities, pairs in zip(requests, pair_view, strict=True):
        got = current.read(entities, REQUEST_TS)
        # Every pair of the list reads as the pair view; tiny users meet < 32 authors.
        np.testing.assert_array_equal(got["ua_impressions"], pairs["ua_impressions"])
        np.testing.assert_array_equal(got["ua_positive_rate"], pairs["ua_positive_rate"])
        assert np.isfinite(got["ua_impressions"]).sum() > 0
    assert "user_author_affinity" not in probed
    assert probed["user_top_authors"] == 4  # one key per request (four users)
    _assert_same(current, store, requests[0])
    assert probed["author_stats"] > 4 * 20


def _write_pair(store: FeatureStore, entities: dict[str, np.ndarray], row: int) -> None:
    """Write the user-author row of ``entities[row]`` (41 impressions) to the online store."""
    store.write_to_online_store(
        "user_author_affinity",
        pd.DataFrame(
            {
                "user_id": [int(entities["user_id"][row])],
                "author_id": [int(entities["author_id"][row])],
                "ua_impressions": [41],
                "ua_positive_rate": [0.25],
                "ua_negative_count": [0],
                "event_timestamp": [pd.Timestamp(REQUEST_TS, unit="s", tz="UTC")],
            }
        ),
    )


def test_a_pair_written_later_is_read_at_once(tiny_workspace: Workspace, tmp_path: Path) -> None:
    """A pair without a row is not cached (ranker_v2's pair view): its first row is read."""
    root = tmp_path / "ws"
    shutil.copytree(tiny_workspace.root / "feature_repo", root / "feature_repo")
    shutil.copytree(tiny_workspace.data / "feast", root / "data" / "feast")
    ws = Workspace(root)
    store = open_store(ws)
    reader = OnlineFeatureReader(store, "ranker_v2")
    entities = _entities(tiny_workspace, 0)
    before = reader.read(entities, REQUEST_TS)["ua_impressions"]
    new = int(np.flatnonzero(np.isnan(before))[0])  # a pair without a row
    _write_pair(store, entities, new)
    assert reader.read(entities, REQUEST_TS)["ua_impressions"][new] == 41
    _assert_same(reader, store, entities, service="ranker_v2")


def test_the_deadline_stops_store_reads_but_not_cache_hits(tiny_workspace: Workspace) -> None:
    store = open_store(tiny_workspace)
    reader = OnlineFeatureReader(store)
    entities = _entities(tiny_workspace, 2)
    past = time.perf_counter() - 1.0
    with pytest.raises(FeatureDeadlineExceeded):
        reader.read(entities, REQUEST_TS, deadline=past)  # cold: a store read is due
    warm = reader.read(entities, REQUEST_TS)
    cached = reader.read(entities, REQUEST_TS, deadline=past)  # all cached: nothing to wait for
    assert list(cached) == list(warm)
    np.testing.assert_array_equal(cached["tweet_topic"], warm["tweet_topic"])


def test_models_of_the_older_service_read_exactly_its_features(tiny_workspace: Workspace) -> None:
    store = open_store(tiny_workspace)
    reader = OnlineFeatureReader(store, "ranker_v1")
    assert "follow_topic_share" not in reader.names
    assert "user_follow_topics" not in reader.names
    assert set(reader.names) < set(OnlineFeatureReader(store, FEATURE_SERVICE).names)
    _assert_same(reader, store, _entities(tiny_workspace, 1), service="ranker_v1")


def test_ids_that_cannot_be_cache_keys_are_read_without_the_cache(
    tiny_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tiny_workspace)
    reader = OnlineFeatureReader(store)
    big = _entities(tiny_workspace, 5)
    big["user_id"] = np.full(len(big["user_id"]), 2**40)  # no user-author key fits an int64
    _assert_same(reader, store, big)
    # Real users with history, every view forced onto the no-cache path.
    monkeypatch.setattr(OnlineFeatureReader, "_ids", staticmethod(lambda spec, columns: None))
    reader = OnlineFeatureReader(store)
    for seed in range(3):
        _assert_same(reader, store, _entities(tiny_workspace, seed))
    assert all(len(spec.cache) == 0 for spec in reader._views)  # pylint: disable=protected-access


def test_parity_on_redis(
    tiny_workspace: Workspace, feast_project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tiny_workspace, "production", project=feast_project)
    try:
        publish_features(store, tiny_workspace)
        reader = OnlineFeatureReader(store, freshness={"tweet_content": 0})
        for seed in range(3):
            _assert_same(reader, store, _entities(tiny_workspace, seed))
        # An error reply in the middle of the packed HMGETs: a typed error, then
        # the same reader reads again once the key is a hash again.
        entities = _entities(tiny_workspace, 4)
        views = {spec.view.name: spec for spec in reader._views}  # pylint: disable=protected-access
        middle = {"tweet_id": entities["tweet_id"][60:61]}  # of 120 keys in one buffer
        key = reader._keys(views["tweet_content"], middle)[0] + feast_project.encode()  # pylint: disable=protected-access
        client = redis.Redis("127.0.0.1", 6379)
        fresh = OnlineFeatureReader(store)  # nothing cached: every tweet is read
        saved = client.dump(key)
        client.delete(key)
        client.set(key, b"not a hash")
        try:
            with pytest.raises(FeatureStoreUnavailable, match="WRONGTYPE"):
                fresh.read(entities, REQUEST_TS)
        finally:
            client.delete(key)
            client.restore(key, 0, saved)
        _assert_same(fresh, store, entities)
        # ranker_v2: only the pairs the store holds are cached.
        older = OnlineFeatureReader(store, "ranker_v2")
        _assert_same(older, store, entities, service="ranker_v2")
        got = older.read(entities, REQUEST_TS)["ua_impressions"]
        pairs = list(zip(entities["user_id"].tolist(), entities["author_id"].tolist(), strict=True))
        held = {p for p, n in zip(pairs, got, strict=True) if not np.isnan(n)}
        older_views = {spec.view.name: spec for spec in older._views}  # pylint: disable=protected-access
        assert 0 < len(older_views["user_author_affinity"].cache) == len(held) < len(set(pairs))
    finally:
        drop_project(store)


def test_unreachable_store_raises_a_typed_error(tiny_workspace: Workspace, tmp_path) -> None:
    store = open_store(tiny_workspace)
    reader = OnlineFeatureReader(
        store,
        freshness={
            v: 0
            for v in (
                "tweet_content",
                "user_stats",
                "author_stats",
                "user_top_authors",
                "tweet_engagement",
            )
        },
    )
    store.config.online_store.path = str(tmp_path / "missing" / "online.db")
    with pytest.raises(FeatureStoreUnavailable, match="sqlite online store"):
        reader.read(_entities(tiny_workspace, 0), REQUEST_TS)


@pytest.mark.unit
def test_row_cache_expires_and_stays_bounded() -> None:
    cache = RowCache(ttl=10.0, max_entries=8, width=2, lists=[np.float32])
    now = time.monotonic()
    cache.store([7], np.array([[1.0, 2.0]]), [ListValues.from_lists([[0.5]])], now)
    slots, fresh = cache.lookup([7, 8], now + 9.9)
    assert fresh.tolist() == [True, False] and slots[1] == -1
    assert cache.values[slots[0]].tolist() == [1.0, 2.0] and cache.lists[0].objects[slots[0]] == [
        0.5
    ]
    assert cache.lookup([7], now + 10.1)[1].tolist() == [False]  # expired
    for i in range(20):
        cache.store([100 + i], np.array([[float(i), 0.0]]), [ListValues.from_lists([None])], now)
    assert len(cache) == 8  # the ring evicted the oldest
    slots, fresh = cache.lookup([107, 119, 7], now)
    assert fresh.tolist() == [False, True, False]
    assert cache.values[slots[1], 0] == 19.0
    more = list(range(12))  # more than it holds
    cache.store(more, np.zeros((12, 2)), [ListValues.from_lists([None] * 12)], now)
    assert len(cache) == 8 and cache.lookup([11, 3], now)[1].tolist() == [True, False]
    disabled = RowCache(ttl=0, max_entries=8)
    disabled.store([1], np.zeros((1, 1)), [], now)
    assert disabled.lookup([1], now)[1].tolist() == [False]


@pytest.mark.unit
def test_row_cache_answers_as_a_ring_of_its_last_stores() -> None:
    # Random stores (repeats, evictions, index rebuilds) against a model: a key is
    # held while fewer than max_entries rows were stored after its last store.
    rng = np.random.default_rng(5)
    cache = RowCache(ttl=10.0, max_entries=64)
    last: dict[int, tuple[int, float]] = {}  # key -> (position of its last store, value)
    stored = 0
    for step in range(400):
        keys = rng.choice(np.arange(2000) * (2**33 + 7), rng.integers(1, 40), replace=False)
        values = rng.normal(size=(len(keys), 1))
        cache.store(keys, values, [], 0.0)
        for i, (key, value) in enumerate(zip(keys.tolist(), values[:, 0].tolist(), strict=True)):
            last[key] = (stored + i, value)
        stored += len(keys)
        asked = np.array([*last, 2**41 + step])  # and one never stored
        slots, fresh = cache.lookup(asked, 1.0)
        held = [*(stored - last[k][0] <= 64 for k in asked[:-1].tolist()), False]
        assert fresh.tolist() == held
        want = [last[k][1] for k, h in zip(asked[:-1].tolist(), held, strict=False) if h]
        assert cache.values[slots[fresh], 0].tolist() == want
        assert len(cache) == sum(held)
    with pytest.raises(ValueError, match="non-negative"):
        cache.store([-5], np.zeros((1, 1)), [], 0.0)


@pytest.mark.unit
def test_decode_reads_every_value_layout_as_protobuf_does() -> None:
    rng = np.random.default_rng(0)
    protos = [
        *(Value(float_val=float(v)) for v in rng.normal(0, 1e3, 50)),
        *(Value(double_val=float(v)) for v in rng.normal(0, 1e9, 50)),
        *(Value(int64_val=int(v)) for v in rng.integers(-(2**40), 2**40, 50)),
        *(Value(int32_val=int(v)) for v in rng.integers(0, 300, 20)),
        Value(float_val=float("nan")),
        Value(bool_val=True),
        Value(null_val=0),
        Value(),  # unset: b""
    ]
    cells = np.array([p.SerializeToString() for p in protos] + [None] * 20, dtype=object)
    cells = cells[rng.permutation(len(cells))].reshape(-1, 2)

    def expected(raw: bytes | None) -> float:
        if not raw:
            return float("nan")
        proto = Value.FromString(raw)
        kind = proto.WhichOneof("val")
        return float("nan") if kind in (None, "null_val") else float(getattr(proto, kind))

    want = np.array([[expected(v) for v in row] for row in cells])
    np.testing.assert_array_equal(decode_values(cells), want)
    assert decode_values(np.full((3, 2), None, dtype=object)).shape == (3, 2)


@pytest.mark.unit
def test_list_values_keep_lists_and_their_padded_form_aligned() -> None:
    lists = [[0.5, 1.5, 2.5], None, [], [3.0], None, [4.0, 5.0]]
    nan = np.nan

    def padded(values: ListValues) -> list[list[float]]:
        return np.where(np.isnan(values.padded()), -1.0, values.padded()).tolist()

    values = ListValues.from_lists(lists)
    assert values.objects.tolist() == lists
    np.testing.assert_array_equal(
        values.padded(),
        [[0.5, 1.5, 2.5], [nan] * 3, [nan] * 3, [3.0, nan, nan], [nan] * 3, [4.0, 5.0, nan]],
    )
    taken = values.take(np.array([5, 1, 0, 0]))
    assert padded(taken) == [[4.0, 5.0, -1], [-1] * 3, [0.5, 1.5, 2.5], [0.5, 1.5, 2.5]]
    wider = ListValues.from_lists([[1.0, 2.0, 3.0, 4.0, 5.0]])
    values.put(np.array([1]), wider)  # widens the matrix, keeps the other rows
    assert values.objects.tolist() == [lists[0], wider.objects[0], *lists[2:]]
    assert padded(values)[1] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert padded(values)[0] == [0.5, 1.5, 2.5, -1, -1]
    # Only as wide as the longest row it holds, even after a wider row left it.
    assert values.take(np.array([0, 3])).padded().shape == (2, 3)
    assert ListValues(0).padded().shape == (0, 0)
    ids = ListValues.from_lists([[2**40 + 1, 7], None], np.int64)  # beyond float32's integers
    ids.put(np.array([1]), ListValues.from_lists([[1, 2, 3]], np.int64))
    assert ids.take(np.array([0, 1])).matrix.dtype == np.int64
    assert padded(ids) == [[2**40 + 1, 7, -1], [1, 2, 3]]
