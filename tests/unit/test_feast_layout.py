"""core.feast_layout writes and reads the bytes Feast's own serializers and writers produce."""

from __future__ import annotations

import math
import struct
from types import SimpleNamespace

import feast
import mmh3
import numpy as np
import pyarrow as pa
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import python_values_to_proto_values
from feast.types import Array, FeastType, Float32, Float64, Int64

from core.feast_layout import (
    EntityKeys,
    FeastLayoutError,
    check_feast_layout,
    decode_lists,
    decode_values,
    encode_values,
    entity_key,
    redis_fields,
    redis_keys,
    redis_timestamp_field,
    sqlite_seconds,
    verify_feast_layout,
)

pytestmark = pytest.mark.unit

EDGE_INTS = [0, 1, -1, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63), 1 << 40]
VALUES: dict[str, tuple[FeastType, list[object]]] = {
    "float32": (Float32, [0.0, -0.0, 0.5, -(2.0**100), 2.0**-149, math.inf, math.nan, None]),
    "float64": (Float64, [0.0, 1e-300, -2.5e300, -math.inf, math.nan, None]),
    "int64": (Int64, [*EDGE_INTS, None]),
    "float32 list": (Array(Float32), [[0.5, -1.0, 2.0**-120], [], None, [math.inf]]),
    "int64 list": (Array(Int64), [EDGE_INTS, [], None, [7]]),
}
ARROW = {
    Float32: pa.float32(),
    Float64: pa.float64(),
    Int64: pa.int64(),
    Array(Float32): pa.list_(pa.float32()),
    Array(Int64): pa.list_(pa.int64()),
}


def _feast_key(names: list[str], values: tuple[int, ...]) -> EntityKey:
    return EntityKey(join_keys=names, entity_values=[Value(int64_val=v) for v in values])


@pytest.mark.parametrize(
    "names", [["tweet_id"], ["user_id", "author_id"], ["author_id", "user_id"]]
)
def test_keys_are_feasts_keys(names: list[str]) -> None:
    rows = [tuple(np.roll(EDGE_INTS, i)[: len(names)].tolist()) for i in range(len(EDGE_INTS))]
    columns = {n: np.array([r[j] for r in rows], dtype=np.int64) for j, n in enumerate(names)}
    layout = EntityKeys.of(names)
    matrix = layout.encode(columns)
    want = [
        serialize_entity_key(_feast_key(names, r), entity_key_serialization_version=3) for r in rows
    ]
    assert [row.tobytes() for row in matrix] == want
    assert [entity_key(names, r) for r in rows] == want
    got = redis_keys((row.tobytes() for row in matrix), "feedrank")
    assert got == [_redis_key("feedrank", _feast_key(names, r)) for r in rows]


@pytest.mark.parametrize("kind", list(VALUES))
def test_values_are_what_materialize_writes_and_decode_back(kind: str) -> None:
    dtype, values = VALUES[kind]
    ours = encode_values(pa.chunked_array([pa.array(values, ARROW[dtype])]), dtype)
    protos = python_values_to_proto_values(values, dtype.to_value_type())
    assert ours == [p.SerializeToString() for p in protos]
    assert [Value.FromString(b) for b in ours] == protos  # ParseFromString gives Feast's proto
    if dtype in (Array(Float32), Array(Int64)):
        assert decode_lists(ours) == values
        assert decode_lists([None]) == [None]
        return
    got = decode_values(np.asarray(ours, dtype=object)).tolist()
    expected = [
        math.nan if v is None else float(np.float32(v) if dtype == Float32 else v) for v in values
    ]
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a == b or (math.isnan(a) and math.isnan(b)), (a, b)


def test_encode_refuses_types_without_a_fast_path() -> None:
    with pytest.raises(TypeError, match="no fast encoding"):
        encode_values(pa.array(["a"]), feast.types.String)


def test_redis_fields_are_murmur3_of_view_and_feature() -> None:
    config = SimpleNamespace(registry=SimpleNamespace(enable_online_feature_view_versioning=False))
    view = SimpleNamespace(name="user_stats")
    want = struct.pack("<I", mmh3.hash("user_stats:user_impressions_7d", signed=False))
    assert redis_fields(config, view, ["user_impressions_7d"]) == [want]  # type: ignore[arg-type]
    assert redis_timestamp_field(config, view) == "_ts:user_stats"  # type: ignore[arg-type]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_sqlite_seconds_in_any_unit(unit: str) -> None:
    stamps = pa.array([0, 1_768_000_000, -1], pa.timestamp("s", tz="UTC")).cast(
        pa.timestamp(unit, tz="UTC")
    )
    assert sqlite_seconds(stamps).tolist() == [0, 1_768_000_000, -1]


def test_the_installed_feast_writes_our_layout() -> None:
    verify_feast_layout(feast.__version__, 3)
    config = SimpleNamespace(entity_key_serialization_version=3)
    check_feast_layout(config)  # type: ignore[arg-type]


def test_another_feast_version_or_key_version_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FeastLayoutError, match=r"Feast 0\.67\.0 is installed.*0\.66\.x"):
        verify_feast_layout("0.67.0", 3)
    with pytest.raises(FeastLayoutError, match="entity_key_serialization_version 2"):
        verify_feast_layout(feast.__version__, 2)
    monkeypatch.setattr(feast, "__version__", "1.0.0")
    with pytest.raises(FeastLayoutError, match=r"Feast 1\.0\.0 is installed"):
        check_feast_layout(SimpleNamespace(entity_key_serialization_version=3))  # type: ignore[arg-type]


def test_a_change_in_feasts_redis_writer_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    # Feast hashing its fields another way (a format change no real Feast gives on demand).
    monkeypatch.setattr(
        "feast.infra.online_stores.redis._mmh3", lambda key: mmh3.hash_bytes(key)[:4]
    )
    with pytest.raises(FeastLayoutError, match="changed the Redis layout"):
        verify_feast_layout(feast.__version__, 3)


def test_a_change_in_feasts_key_serializer_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    def big_endian(key: EntityKey, entity_key_serialization_version: int = 3) -> bytes:
        raw = serialize_entity_key(key, entity_key_serialization_version)
        return raw[::-1]

    monkeypatch.setattr("feast.infra.online_stores.sqlite.serialize_entity_key", big_endian)
    with pytest.raises(FeastLayoutError, match="changed the SQLite layout"):
        verify_feast_layout(feast.__version__, 3)
    monkeypatch.setattr("core.feast_layout.serialize_entity_key", lambda key, **_: b"\x00" * 40)
    with pytest.raises(FeastLayoutError, match="not 8 plain bytes"):
        EntityKeys.of(["user_id"])
