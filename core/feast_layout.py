"""Feast 0.66's online store as this project writes and reads it: where it is, what the bytes are.

Feast writes and reads its online store one protobuf at a time, too slowly
for the fill and for ``/rank``. The fast writer (:mod:`features.online`) and
reader (:mod:`serving.features`) build and parse the very same bytes
column-wise with numpy instead, and this module is the one place that knows
those bytes:

- entity keys: Feast's serialization (version 3) of int64 join keys, built
  from one key Feast serializes with sentinel values (:class:`EntityKeys`);
- feature values: ``ValueProto`` wire bytes of the types the repo uses
  (:func:`encode_values`, :func:`decode_values`, :func:`decode_lists`);
- Redis: one hash per entity key and project, a field per feature (the
  murmur3 hash of ``view:feature``) and a ``_ts:view`` timestamp field;
- SQLite: one table per view, a row per (entity key, feature), the event
  time as integer Unix seconds;
- where the store is (the SQLite file, Feast's Redis client and address).

What is Feast's is taken from Feast (its key serializer, field hash, table
naming, connection parsing), private helpers included, and only here. A
Feast upgrade that changed the format would otherwise break the writer and
the reader silently: :func:`check_feast_layout` (run once per process when
either is set up) writes sample rows with Feast's own Redis and SQLite
writers and fails loudly on any byte that differs from ours.
"""

from __future__ import annotations

import functools
import math
import sqlite3
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import feast
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, compute_table_id, compute_versioned_name
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import FloatList, Int64List, Value
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.type_map import python_values_to_proto_values
from feast.types import Array, FeastType, Float32, Float64, Int64
from google.protobuf.timestamp_pb2 import Timestamp

TESTED_FEAST = "0.66."
"""The Feast releases whose layout this module was checked against (a version prefix)."""
KEY_SERIALIZATION_VERSION = 3
"""The ``entity_key_serialization_version`` of both profiles' feature_store.yaml."""
FLOAT_TAG = 0x35
"""``float_val``: field 6, wire type 5; 4 little-endian bytes follow."""
DOUBLE_TAG = 0x29
"""``double_val``: field 5, wire type 1; 8 little-endian bytes follow."""

_SENTINEL = 0x0102030405060708


class FeastLayoutError(RuntimeError):
    """The installed Feast stores its online data differently from what this module writes."""


def entity_key(join_keys: Sequence[str], values: Sequence[int]) -> bytes:
    """Feast's serialized entity key of int64 join-key values (by Feast's serializer, slowly)."""
    return serialize_entity_key(
        EntityKey(
            join_keys=list(join_keys), entity_values=[Value(int64_val=int(v)) for v in values]
        ),
        entity_key_serialization_version=KEY_SERIALIZATION_VERSION,
    )


@dataclass(frozen=True)
class EntityKeys:
    """The serialized keys of one set of int64 join keys, built and parsed as byte matrices.

    Feast sorts the join keys by name and writes each value as 8 little-endian
    bytes after its type and length; every other byte depends on the names
    only. So one key serialized by Feast, with a distinct sentinel per join
    key, is a template: a key is the template with the values patched in, and
    a batch of keys is one numpy matrix.

    Attributes:
        join_keys: the names, in the caller's order (that of ``offsets``).
        template: Feast's key of the sentinel values.
        offsets: where each join key's 8 bytes sit in the key.
    """

    join_keys: tuple[str, ...]
    template: bytes
    offsets: tuple[int, ...]

    @classmethod
    def of(cls, join_keys: Sequence[str]) -> EntityKeys:
        """The layout of ``join_keys``, learnt from Feast's serializer."""
        sentinels = [_SENTINEL + i for i in range(len(join_keys))]
        template = entity_key(join_keys, sentinels)
        markers = [struct.pack("<q", s) for s in sentinels]
        if not all(template.count(m) == 1 for m in markers):
            raise FeastLayoutError(
                f"Feast {feast.__version__}: an int64 join key is not 8 plain bytes of the key"
            )
        return cls(tuple(join_keys), template, tuple(template.index(m) for m in markers))

    @property
    def width(self) -> int:
        """Bytes of every key of this layout."""
        return len(self.template)

    def encode(self, columns: Mapping[str, npt.ArrayLike]) -> np.ndarray:
        """The keys of rows of join-key columns: a (rows, :attr:`width`) uint8 matrix."""
        n = len(np.asarray(columns[self.join_keys[0]]))
        buf = np.tile(np.frombuffer(self.template, dtype=np.uint8), (n, 1))
        for name, off in zip(self.join_keys, self.offsets, strict=True):
            values = np.ascontiguousarray(columns[name], dtype="<i8")
            buf[:, off : off + 8] = values.view(np.uint8).reshape(-1, 8)
        return buf


def encode_values(column: pa.ChunkedArray | pa.Array, dtype: FeastType) -> list[bytes]:
    """``ValueProto`` wire bytes of each value of a column, as Feast's ``materialize`` writes them.

    Floats are a tag and their bytes, built column-wise; ints repeat a lot, so
    each distinct value is serialized once. A null (or a NaN float) is an
    empty ``Value``: ``b""``.
    """
    if dtype in (Float32, Float64):
        fmt, tag = ("<f4", FLOAT_TAG) if dtype == Float32 else ("<f8", DOUBLE_TAG)
        body = column.to_numpy(zero_copy_only=False).astype(fmt)  # nulls: NaN
        buf = np.empty((len(body), body.itemsize + 1), dtype=np.uint8)
        buf[:, 0] = tag
        buf[:, 1:] = body.view(np.uint8).reshape(-1, body.itemsize)
        out = [row.tobytes() for row in buf]
        for i in np.flatnonzero(np.isnan(body)).tolist():
            out[i] = b""
        return out
    if dtype == Int64:
        values = (column.fill_null(0) if column.null_count else column).to_numpy(
            zero_copy_only=False
        )
        uniques, inverse = np.unique(values, return_inverse=True)
        encoded = [Value(int64_val=int(v)).SerializeToString() for v in uniques]
        out = [encoded[i] for i in inverse.reshape(-1)]
        if column.null_count:
            for i in np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)).tolist():
                out[i] = b""
        return out
    if dtype == Array(Float32):
        return [
            b"" if v is None else Value(float_list_val=FloatList(val=v)).SerializeToString()
            for v in column.to_pylist()
        ]
    if dtype == Array(Int64):
        return [
            b"" if v is None else Value(int64_list_val=Int64List(val=v)).SerializeToString()
            for v in column.to_pylist()
        ]
    raise TypeError(f"no fast encoding for {dtype}")


def decode_values(cells: np.ndarray) -> np.ndarray:
    """``ValueProto`` bytes (an object array of any shape) to float64 (None or unset: NaN).

    The plain float (5 bytes: tag, value) and double (9 bytes) layouts, which
    nearly all values have, are recognised from the bytes and decoded together
    with numpy; anything else (ints, say) goes through protobuf.
    """
    out = np.full(cells.shape, np.nan)
    flat_out = out.reshape(-1)
    flat = cells.reshape(-1)
    present = np.flatnonzero(flat.astype(bool))
    if present.size == 0:
        return out
    values = flat[present]
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    joined = np.frombuffer(b"".join(values), dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    tags = joined[starts]
    plain = np.zeros(len(values), dtype=bool)
    for width, tag, fmt in ((5, FLOAT_TAG, "<f4"), (9, DOUBLE_TAG, "<f8")):
        layout = (lengths == width) & (tags == tag)
        rows = np.flatnonzero(layout)
        if len(rows):
            raw = joined[starts[rows, None] + np.arange(1, width)]
            flat_out[present[rows]] = raw.view(fmt).ravel()
            plain |= layout
    other = np.flatnonzero(~plain)
    if len(other):
        flat_out[present[other]] = [_scalar(v) for v in values[other]]
    return out


@functools.lru_cache(maxsize=1 << 16)
def _scalar(raw: bytes) -> float:
    """One scalar ``ValueProto`` as a float; memoised, since counts repeat a lot."""
    proto = Value.FromString(raw)
    kind = proto.WhichOneof("val")
    if kind is None or kind == "null_val":
        return float("nan")
    return float(getattr(proto, kind))


LIST_TYPES = (Array(Float32), Array(Int64))
"""The list types the fast writer encodes and :func:`decode_lists` reads."""


def decode_lists(values: Iterable[bytes | None]) -> list[list[float] | list[int] | None]:
    """``float_list_val`` or ``int64_list_val`` bytes to Python lists (None when missing)."""
    out: list[list[float] | list[int] | None] = []
    for v in values:
        if not v:
            out.append(None)
            continue
        proto = Value.FromString(v)
        kind = proto.WhichOneof("val")
        out.append(list(getattr(proto, kind).val) if kind in _LIST_KINDS else None)
    return out


_LIST_KINDS = frozenset({"float_list_val", "int64_list_val"})


def stored_view_name(config: RepoConfig, view: FeatureView) -> str:
    """The view's name in the online store (with a version suffix if Feast versions views)."""
    return compute_versioned_name(view, config.registry.enable_online_feature_view_versioning)


def redis_keys(keys: Iterable[bytes], project: str | bytes) -> list[bytes]:
    """Feast's Redis hash keys: the serialized entity key followed by the project name."""
    suffix = project.encode("utf-8") if isinstance(project, str) else project
    return [key + suffix for key in keys]


def redis_fields(config: RepoConfig, view: FeatureView, features: Sequence[str]) -> list[bytes]:
    """The hash fields of a view's features: murmur3 of ``view:feature``, as Feast hashes them."""
    name = stored_view_name(config, view)
    return [_mmh3(f"{name}:{feature}") for feature in features]


def redis_timestamp_field(config: RepoConfig, view: FeatureView) -> str:
    """The hash field holding the view's event time of the entity."""
    return f"_ts:{stored_view_name(config, view)}"


def redis_timestamp(stamp: datetime) -> bytes:
    """The event time as the timestamp field stores it: a ``Timestamp`` proto."""
    proto = Timestamp()
    proto.FromDatetime(stamp)  # a naive time is taken as UTC, as Feast takes it
    return proto.SerializeToString()


def sqlite_path(config: RepoConfig) -> str:
    """The SQLite online store's file, resolved as Feast resolves it."""
    return SqliteOnlineStore._get_db_path(config)  # pylint: disable=protected-access


def sqlite_table(config: RepoConfig, view: FeatureView) -> str:
    """The view's table in the SQLite online store."""
    return compute_table_id(
        config.project, view, config.registry.enable_online_feature_view_versioning
    )


def sqlite_seconds(stamps: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Event times as the SQLite store's ``event_ts`` holds them: integer Unix seconds."""
    per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[stamps.type.unit]
    return stamps.cast(pa.int64()).to_numpy() // per_second


def feast_redis_client(store: FeatureStore) -> Any:
    """Feast's own Redis client of the store (a server, cluster or sentinel master)."""
    # pylint: disable-next=protected-access
    return store._get_provider().online_store._get_client(store.config.online_store)


def redis_address(config: RedisOnlineStoreConfig) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The nodes (host, port) and client options of Feast's Redis connection string."""
    # pylint: disable-next=protected-access
    return RedisOnlineStore._parse_connection_string(config.connection_string)


def check_feast_layout(config: RepoConfig) -> None:
    """Fail loudly unless the installed Feast stores the layout this module writes and reads.

    Called where the writer and the reader are set up; :func:`verify_feast_layout`
    runs once per process and configured version, so a reader built per test or
    per worker costs nothing more.

    Raises:
        FeastLayoutError: naming the Feast version, or the mismatched layout.
    """
    _verified(feast.__version__, config.entity_key_serialization_version)


def verify_feast_layout(version: str, key_version: int) -> None:
    """Check a Feast version and key serialization against this module, every time it is called.

    Sample rows with a feature of each type and edge values (negative and
    extreme int64, NaN, nulls, empty lists) are written by Feast's own Redis
    writer (into a recorder) and SQLite writer (into memory), then compared
    byte for byte with what this module builds; Feast-encoded values are
    decoded by this module's decoders.

    Raises:
        FeastLayoutError: naming the Feast version, or the mismatched layout.
    """
    if not version.startswith(TESTED_FEAST):
        raise FeastLayoutError(
            f"Feast {version} is installed; core/feast_layout.py is tested on "
            f"{TESTED_FEAST}x: run tests/unit/test_feast_layout.py against it, then update "
            "TESTED_FEAST"
        )
    if key_version != KEY_SERIALIZATION_VERSION:
        raise FeastLayoutError(
            f"entity_key_serialization_version {key_version} is configured; "
            f"the fast writer and reader know version {KEY_SERIALIZATION_VERSION} only"
        )
    view, table = _sample()
    _compare("the Redis layout", _feast_redis_rows(view, table), _our_redis_rows(view, table))
    _compare("the SQLite layout", _feast_sqlite_rows(view, table), _our_sqlite_rows(view, table))
    _compare_decoded(view, table)


_verified = functools.cache(verify_feast_layout)

_CHECK_PROJECT = "layout_check"


def _sample() -> tuple[FeatureView, pa.Table]:
    """A two-key view with a feature of each type, and rows of edge values."""
    view = FeatureView(
        name="layout_check",
        entities=[
            Entity(name=k, join_keys=[k], value_type=ValueType.INT64)
            for k in ("user_id", "author_id")  # not in Feast's sorted order
        ],
        schema=[
            Field(name="user_id", dtype=Int64),
            Field(name="author_id", dtype=Int64),
            Field(name="f32", dtype=Float32),
            Field(name="f64", dtype=Float64),
            Field(name="i64", dtype=Int64),
            Field(name="f32_list", dtype=Array(Float32)),
            Field(name="i64_list", dtype=Array(Int64)),
        ],
        source=FileSource(path="layout_check.parquet", timestamp_field="event_timestamp"),
    )
    table = pa.table(
        {
            "user_id": pa.array([0, -1, 2**63 - 1, 12], pa.int64()),
            "author_id": pa.array([7, -(2**63), 1 << 40, 12], pa.int64()),
            # Floats exact in float32, so that decoding gives the input back.
            "f32": pa.array([0.5, -(2.0**100), None, math.nan], pa.float32()),
            "f64": pa.array([1e-300, None, -2.5, math.inf], pa.float64()),
            "i64": pa.array([0, -(2**63), 2**63 - 1, None], pa.int64()),
            "f32_list": pa.array([[0.5, -1.0], [], None, [2.0**-120]], pa.list_(pa.float32())),
            "i64_list": pa.array([[2**63 - 1, -1], None, [], [0]], pa.list_(pa.int64())),
            "event_timestamp": pa.array(
                [datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)] * 2
                + [datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)] * 2,
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    return view, table


def _repo_config(online_store: Any) -> RepoConfig:
    return RepoConfig(
        project=_CHECK_PROJECT,
        provider="local",
        registry="layout_check.db",  # never opened
        online_store=online_store,
        # Unused by the online writers; a dict here would import Feast's
        # default offline store (Dask) for 1.5 s.
        offline_store=FeastConfigBaseModel(),
        entity_key_serialization_version=KEY_SERIALIZATION_VERSION,
    )


def _feast_batch(view: FeatureView, table: pa.Table) -> list[tuple[Any, ...]]:
    """The rows as Feast's ``materialize`` hands them to an online store."""
    keys = [
        EntityKey(join_keys=list(view.join_keys), entity_values=[Value(int64_val=v) for v in ids])
        for ids in zip(*(table[k].to_pylist() for k in view.join_keys), strict=True)
    ]
    values = {
        f.name: python_values_to_proto_values(table[f.name].to_pylist(), f.dtype.to_value_type())
        for f in view.features
    }
    stamps = table["event_timestamp"].to_pylist()
    return [
        (key, {name: column[i] for name, column in values.items()}, stamps[i], None)
        for i, key in enumerate(keys)
    ]


class _Recorder:
    """A Redis client (and its pipeline) that records ``HSET`` calls instead of sending them."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, dict[Any, bytes]]] = []

    def pipeline(self, **_options: object) -> _Recorder:
        """This recorder: Feast's writer pipelines its HSETs."""
        return self

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def hset(self, name: bytes, mapping: dict[Any, bytes]) -> None:
        """Record one hash."""
        self.written.append((name, dict(mapping)))

    def execute(self) -> list[Any]:
        """Nothing was sent."""
        return []


class _RecordingRedisStore(RedisOnlineStore):
    """Feast's Redis online store writing into a :class:`_Recorder`."""

    def __init__(self) -> None:
        super().__init__()
        self.recorder = _Recorder()

    def _get_client(self, online_store_config: RedisOnlineStoreConfig) -> Any:
        return self.recorder


class _MemorySqliteStore(SqliteOnlineStore):  # pylint: disable=abstract-method  # as Feast's
    """Feast's SQLite online store on an in-memory database."""

    def __init__(self) -> None:
        super().__init__()
        self.memory = sqlite3.connect(":memory:")
        self._conn = self.memory

    def rows(self, table: str) -> set[tuple[Any, ...]]:
        """The (entity_key, feature_name, value, type of event_ts) rows of one table.

        Feast's SQLite adapter turns the naive UTC time it is given into
        seconds as if it were local time, so its ``event_ts`` is the Unix time
        on a UTC host only; the fill writes the Unix time on any host (nothing
        reads it back but Feast's own reader). Only its type is compared.
        """
        query = f'SELECT entity_key, feature_name, value, event_ts FROM "{table}"'  # nosec B608
        return {(*row[:3], type(row[3])) for row in self.memory.execute(query)}


def _feast_redis_rows(view: FeatureView, table: pa.Table) -> list[tuple[bytes, dict[Any, bytes]]]:
    store = _RecordingRedisStore()
    store.online_write_batch(
        _repo_config(RedisOnlineStoreConfig(skip_dedup=True)),
        view,
        _feast_batch(view, table),
        None,
    )
    return store.recorder.written


def _our_redis_rows(view: FeatureView, table: pa.Table) -> list[tuple[bytes, dict[Any, bytes]]]:
    config = _repo_config(RedisOnlineStoreConfig())
    keys = EntityKeys.of(list(view.join_keys)).encode(
        {k: table[k].to_numpy() for k in view.join_keys}
    )
    names = [f.name for f in view.features]
    columns = [encode_values(table[f.name], f.dtype) for f in view.features]
    stamps = table["event_timestamp"].to_pylist()
    fields = redis_fields(config, view, names)
    return [
        (
            key,
            {
                redis_timestamp_field(config, view): redis_timestamp(stamps[i]),
                **{field: column[i] for field, column in zip(fields, columns, strict=True)},
            },
        )
        for i, key in enumerate(redis_keys((row.tobytes() for row in keys), _CHECK_PROJECT))
    ]


def _feast_sqlite_rows(view: FeatureView, table: pa.Table) -> set[tuple[Any, ...]]:
    config = _repo_config(SqliteOnlineStoreConfig(path="layout_check.db"))
    store = _MemorySqliteStore()
    store.update(config, [], [view], [], [], partial=False)
    store.online_write_batch(config, view, _feast_batch(view, table), None)
    return store.rows(sqlite_table(config, view))


def _our_sqlite_rows(view: FeatureView, table: pa.Table) -> set[tuple[Any, ...]]:
    keys = EntityKeys.of(list(view.join_keys)).encode(
        {k: table[k].to_numpy() for k in view.join_keys}
    )
    seconds = sqlite_seconds(table["event_timestamp"]).tolist()
    return {
        (keys[i].tobytes(), f.name, value, type(seconds[i]))
        for f in view.features
        for i, value in enumerate(encode_values(table[f.name], f.dtype))
    }


def _compare(what: str, feast_rows: Any, ours: Any) -> None:
    if feast_rows != ours:
        raise FeastLayoutError(
            f"Feast {feast.__version__} changed {what}: Feast wrote {feast_rows!r}, "
            f"the fast writer and reader expect {ours!r}"
        )


def _compare_decoded(view: FeatureView, table: pa.Table) -> None:
    """Our decoders read back what Feast's serializer encodes (nulls and NaN: missing)."""
    for f in view.features:
        cells = [v.SerializeToString() for v in _column_protos(table, f)]
        want = table[f.name].to_pylist()
        if f.dtype in LIST_TYPES:
            _compare(f"{f.dtype} values", decode_lists(cells), want)
            continue
        got = decode_values(np.asarray(cells, dtype=object)).tolist()
        expected = [math.nan if v is None else float(v) for v in want]
        if not all(_same_float(a, b) for a, b in zip(got, expected, strict=True)):
            _compare(f"{f.dtype} values", got, expected)


def _column_protos(table: pa.Table, field: Field) -> list[Value]:
    return python_values_to_proto_values(table[field.name].to_pylist(), field.dtype.to_value_type())


def _same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))
