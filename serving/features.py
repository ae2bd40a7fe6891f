"""Online features for a feed request, read straight from Feast's online store.

``store.get_online_features(...).to_dict()`` for 500 candidates costs ~250 ms
here: it builds a protobuf per entity, parses a protobuf per value and
assembles Python lists. A feed request is one user, N tweets, their authors
and N user-author pairs, so this reader does per view one round trip (one
``SELECT ... IN`` on SQLite, one pipelined ``HMGET`` batch on Redis), decodes
the value bytes column-wise with numpy, and runs the repo's own on-demand
transformation (the registry's UDF, not a copy). Missing values are NaN.

The bytes and layouts are Feast's own (entity keys via Feast's serializer,
``ValueProto`` wire format), so the result equals ``get_online_features``
value for value: ``tests/integration/test_serving_features.py`` checks it on
random rows of both stores.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import redis
from feast import FeatureStore, FeatureView, OnDemandFeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStore, RedisType
from feast.infra.online_stores.sqlite import SqliteOnlineStore, _table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Array, Float32

from features.store import FEATURE_SERVICE

_FLOAT_TAG = 0x35  # field 6 (float_val), wire type 5: 4 little-endian bytes follow
_DOUBLE_TAG = 0x29  # field 5 (double_val), wire type 1: 8 little-endian bytes follow

DEFAULT_TTL = 5.0
DEFAULT_FRESHNESS: dict[str, float] = {
    # Immutable once written.
    "tweet_content": 3600.0,
    # Daily snapshots: a minute of staleness changes nothing.
    "user_stats": 60.0,
    "author_stats": 60.0,
    "user_author_affinity": 60.0,
    # Pushed live from /events: the freshness bound of engagement counters.
    "tweet_engagement": DEFAULT_TTL,
}
"""Seconds a decoded row may be served from the in-process cache, per feature view."""

log = logging.getLogger(__name__)


class FeatureStoreUnavailable(RuntimeError):
    """The online store could not be read (down, slow, or not set up)."""


class OnDemandFeaturesFailed(RuntimeError):
    """An on-demand view's transformation raised."""


class FeatureDeadlineExceeded(RuntimeError):
    """The read passed its deadline; the views not read yet were not asked for."""


def _entity_key(names: Sequence[str], values: Sequence[int]) -> bytes:
    ordered = sorted(zip(names, values, strict=True))
    return serialize_entity_key(
        EntityKey(
            join_keys=[n for n, _ in ordered],
            entity_values=[Value(int64_val=int(v)) for _, v in ordered],
        ),
        entity_key_serialization_version=3,
    )


def _int_key_template(names: Sequence[str]) -> tuple[bytes, list[int]]:
    """Feast's key for sentinel values and where each int64 sits, in ``names`` order."""
    sentinels = [0x0102030405060708 + i for i in range(len(names))]
    template = _entity_key(names, sentinels)
    offsets = [template.index(struct.pack("<q", s)) for s in sentinels]
    return template, offsets


def decode(cells: np.ndarray) -> np.ndarray:
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
    for width, tag, fmt in ((5, _FLOAT_TAG, "<f4"), (9, _DOUBLE_TAG, "<f8")):
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


def decode_lists(values: Sequence[bytes | None]) -> list[list[float] | None]:
    """``float_list_val`` bytes to Python lists (None when missing)."""
    out: list[list[float] | None] = []
    for v in values:
        if not v:
            out.append(None)
            continue
        proto = Value.FromString(v)
        out.append(list(proto.float_list_val.val) if proto.HasField("float_list_val") else None)
    return out


class ListValues:
    """The values of one list feature for a run of rows, in the two layouts its readers need.

    ``objects`` holds what ``get_online_features`` returns (a Python list, or
    None when missing), for the response. ``matrix`` holds the same floats,
    left-aligned in float32 rows (``lengths[i]`` of them, -1 when missing), so
    a batch of rows becomes the on-demand views' Arrow list column by numpy
    gathers, not a pass over hundreds of Python lists per request.

    Args:
        size: number of rows, all missing at first.
    """

    def __init__(self, size: int) -> None:
        self.objects = np.full(size, None, dtype=object)
        self.lengths = np.full(size, -1, dtype=np.int64)
        # Cells past a row's length are never read: left uninitialised (a
        # cache's pages are touched as its slots fill).
        self.matrix = np.empty((size, 0), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.objects)

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[float] | None]) -> ListValues:
        """Rows from decoded lists (None: missing)."""
        out = cls(len(lists))
        out.lengths[:] = [-1 if v is None else len(v) for v in lists]
        out.matrix = np.empty((len(lists), out.lengths.max(initial=0)), dtype=np.float32)
        for i, v in enumerate(lists):
            if v is not None:
                out.objects[i] = v
                out.matrix[i, : len(v)] = v
        return out

    def take(self, rows: np.ndarray) -> ListValues:
        """The rows ``rows`` (integer indices), as a new run."""
        out = ListValues(0)
        out.objects, out.lengths, out.matrix = (
            self.objects[rows],
            self.lengths[rows],
            self.matrix[rows],
        )
        return out

    def put(self, rows: np.ndarray, values: ListValues) -> None:
        """Overwrite the rows ``rows`` with ``values`` (widening the matrix if they are longer)."""
        width = values.matrix.shape[1]
        if width > self.matrix.shape[1]:
            wider = np.empty((len(self), width), dtype=np.float32)
            wider[:, : self.matrix.shape[1]] = self.matrix
            self.matrix = wider
        self.objects[rows] = values.objects
        self.lengths[rows] = values.lengths
        self.matrix[rows, :width] = values.matrix

    def to_arrow(self) -> pa.ListArray:
        """The rows as an Arrow ``list<float>`` array (null where missing)."""
        lengths = np.maximum(self.lengths, 0)
        offsets = np.zeros(len(self) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = self.matrix[np.arange(self.matrix.shape[1]) < lengths[:, None]]
        missing = self.lengths < 0
        return pa.ListArray.from_arrays(
            offsets, flat, mask=pa.array(missing) if missing.any() else None
        )


@dataclass
class _View:
    view: FeatureView
    features: list[str]
    dtypes: dict[str, object]
    join_keys: list[str]
    template: bytes
    offsets: list[int]
    ttl: float
    max_entries: int
    table: str = ""
    redis_fields: list[bytes] = field(default_factory=list)
    column_of: dict[str, int] = field(init=False)
    """A feature's column in the (keys, features) value cells read from the store."""

    numeric: list[str] = field(default_factory=list)
    """Scalar features, decoded to float64."""
    lists: list[str] = field(default_factory=list)
    """List features (inputs of on-demand views), kept as :class:`ListValues`."""
    cache: RowCache = field(init=False)
    present: PresentKeys | None = None
    """The pairs the store holds (pair views without a push source), to skip the rest."""

    @property
    def pair(self) -> bool:
        """Keyed by two entities (user-author): sparse, most pairs have no row."""
        return len(self.join_keys) == 2

    def __post_init__(self) -> None:
        list_type = Array(Float32)
        self.lists = [n for n in self.features if self.dtypes[n] == list_type]
        self.numeric = [n for n in self.features if n not in self.lists]
        self.column_of = {n: i for i, n in enumerate(self.features)}
        self.cache = RowCache(self.ttl, self.max_entries, len(self.numeric), len(self.lists))


class SlotIndex:
    """Non-negative int64 keys to int64 values, looked up a batch at a time in numpy.

    An open-addressing hash table (Fibonacci hashing, linear probing) in two
    arrays, at most a quarter full after a build and never more than half. A
    batch lookup is one numpy pass per probe step (about 1.3 steps a key). A
    dict answered the same with one C call per key, each touching three
    scattered objects (entry, key, value): for 500 keys of 200k, ~390 us with
    the caches cold, against ~115 us here (scratch check, 2026-12-02).

    Nothing is ever deleted: :meth:`put` overwrites the value of a key it
    holds, and the owner checks what a value points to (:class:`RowCache`
    compares the slot's key). When a put would pass half the table,
    :meth:`has_room` says no, and the owner builds a new index of its live keys.

    Args:
        keys: distinct non-negative keys to start with.
        values: their values.
    """

    _EMPTY = -1
    _GOLDEN = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        self._bits = max(10, int(4 * len(keys)).bit_length())
        self._keys = np.full(1 << self._bits, self._EMPTY, dtype=np.int64)
        self._values = np.full(1 << self._bits, -1, dtype=np.int64)
        self.used = 0
        """Cells taken (live keys and keys the owner no longer uses)."""
        self.put(keys, values)

    def has_room(self, n: int) -> bool:
        """Whether ``n`` more keys keep the table at most half full."""
        return self.used + n <= len(self._keys) // 2

    def _home(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.astype(np.uint64) * self._GOLDEN) >> np.uint64(64 - self._bits)).astype(
            np.int64
        )

    def get(self, keys: np.ndarray) -> np.ndarray:
        """The value of each key (-1 when absent)."""
        out = np.full(len(keys), -1, dtype=np.int64)
        cell = self._home(keys)
        pending = np.arange(len(keys))
        mask = len(self._keys) - 1
        while len(pending):
            at = cell[pending]
            found = self._keys[at]
            hit = found == keys[pending]
            out[pending[hit]] = self._values[at[hit]]
            pending = pending[~hit & (found != self._EMPTY)]
            cell[pending] = (cell[pending] + 1) & mask
        return out

    def put(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Set the values of distinct non-negative keys (see :meth:`has_room` first)."""
        cell = self._home(keys)
        pending = np.arange(len(keys))
        mask = len(self._keys) - 1
        while len(pending):
            at = cell[pending]
            found = self._keys[at]
            same = found == keys[pending]
            self._values[at[same]] = values[pending[same]]
            free = np.flatnonzero(found == self._EMPTY)
            # Keys probing the same free cell: one write stays, the others probe on.
            cells, claims = at[free], pending[free]
            self._keys[cells] = keys[claims]
            won = self._keys[cells] == keys[claims]
            self._values[cells[won]] = values[claims[won]]
            self.used += int(np.count_nonzero(won))
            settled = same
            settled[free[won]] = True
            pending = pending[~settled]
            cell[pending] = (cell[pending] + 1) & mask


class RowCache:
    """A bounded cache of decoded rows, each valid ``ttl`` seconds, looked up a batch at a time.

    The freshness bound: a value served from the cache is at most ``ttl``
    seconds older than the online store's. Entities the store does not hold
    are cached too (as NaN), except those of pair views (see ``OnlineFeatureReader._rows``).

    Rows live in slots of a matrix (numeric features) and a :class:`ListValues`
    per list feature; a :class:`SlotIndex` maps an entity's cache key (a
    non-negative int64) to its slot. A batch lookup is numpy passes and
    gathers, not a Python call per row. Slots are reused in insertion order (a
    ring), so when full the oldest entries go first.

    Args:
        ttl: seconds an entry is served (0 disables the cache: every lookup misses).
        max_entries: number of slots (0 disables the cache too).
        width: numeric features per row.
        lists: number of list features per row.
        dtype: of the numeric values (float64 for features).
    """

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        width: int = 1,
        lists: int = 0,
        *,
        dtype: type = np.float64,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._index = SlotIndex(np.zeros(0, np.int64), np.zeros(0, np.int64))
        self._keys = np.full(max_entries, -1, dtype=np.int64)
        self.values = np.empty((max_entries, width), dtype=dtype)  # pages touched as slots fill
        self.lists = [ListValues(max_entries) for _ in range(lists)]
        self._expires = np.full(max_entries, -np.inf)
        self._next = 0

    def __len__(self) -> int:
        return int(np.count_nonzero(self._keys >= 0))

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        """The slot holding each key (-1 when none does)."""
        slots = self._index.get(keys)
        held = np.flatnonzero(slots >= 0)
        slots[held[self._keys[slots[held]] != keys[held]]] = -1  # reused since for another key
        return slots

    def lookup(self, keys: Sequence[int] | np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(slot per key, -1 when absent; mask of keys with a fresh entry)."""
        slots = self._slots(np.asarray(keys, dtype=np.int64))
        fresh = slots >= 0
        fresh[fresh] = self._expires[slots[fresh]] > now
        return slots, fresh

    def store(
        self,
        keys: Sequence[int] | np.ndarray,
        values: np.ndarray,
        lists: Sequence[ListValues],
        now: float,
    ) -> None:
        """Put rows of distinct keys in the next slots of the ring (evicting what was there).

        Raises:
            ValueError: a key is negative.
        """
        keys = np.asarray(keys, dtype=np.int64)
        n = len(keys)
        if self.ttl <= 0 or n == 0 or self.max_entries < 1:
            return
        if keys.min() < 0:
            raise ValueError("cache keys must be non-negative")
        if n > self.max_entries:
            keys, values = keys[-self.max_entries :], values[-self.max_entries :]
            lists = [column.take(np.arange(n - self.max_entries, n)) for column in lists]
            n = self.max_entries
        again = self._slots(keys)  # a key stored again leaves its old slot empty
        self._keys[again[again >= 0]] = -1
        slots = (self._next + np.arange(n)) % self.max_entries
        self._next = int((self._next + n) % self.max_entries)
        self._keys[slots] = keys
        self.values[slots] = values
        for column, new in zip(self.lists, lists, strict=True):
            column.put(slots, new)
        self._expires[slots] = now + self.ttl
        if self._index.has_room(n):
            self._index.put(keys, slots)
        else:  # rebuilt from the live slots (evicted keys' cells are dropped)
            live = np.flatnonzero(self._keys >= 0)
            self._index = SlotIndex(self._keys[live], live)

    def clear(self) -> None:
        """Forget everything (e.g. after the store was refilled)."""
        self._index = SlotIndex(np.zeros(0, np.int64), np.zeros(0, np.int64))
        self._keys.fill(-1)
        self._expires.fill(-np.inf)


PARSE_BLOCK = 16_384
"""Keys a present-key rebuild parses between offers of the GIL (~1 ms of numpy)."""
REDIS_SCAN_COUNT = 1000
"""Keys Redis visits per SCAN call: ~1 ms of its time, so reads wait at most that long."""
REDIS_MAX_KEYS = 5_000_000
"""Past this many matching keys the scan gives up (the set would cost ~40 MB a worker)."""


class PresentKeys:
    """The cache keys of every pair a two-key batch view holds in the online store.

    Most user-author pairs of a request have no row: the user never saw the
    author (455 of the 500 candidates' pairs in ``benchmarks/serve_latency.py``
    hit nothing; probing SQLite for them cost ~2.2 ms a request, Redis ~1.6 ms).
    A key outside this set is answered "missing" without a probe; a key inside
    is read from the store as before.

    The set is rebuilt in a thread of its own (with its own connection) once it
    is older than ``refresh`` seconds; reads go on with the previous set
    meanwhile, and probe every key until the first one is built. Freshness
    bound: an entity written to the store is seen at most ``refresh`` seconds
    plus one rebuild after the write (205k pairs: ~0.15 s on SQLite, ~0.25 s on
    Redis), so this is for views without a push source only (they change at
    materialization). A key source that fails or returns keys of another
    layout leaves the set unbuilt, and every key is probed.

    Args:
        read_keys: returns every entity key of the view, concatenated (each
            ``len(template)`` bytes); see :func:`sqlite_entity_keys` and :func:`redis_entity_keys`.
        name: of the view, for the rebuild thread and the log.
        template: Feast's serialized key of sentinel values (see :func:`_int_key_template`).
        offsets: where each of the two join keys' int64 sits in the key, in the
            view's join-key order (as :meth:`OnlineFeatureReader._ids` combines them).
        refresh: seconds a built set is used before a rebuild starts.
    """

    def __init__(
        self,
        read_keys: Callable[[], bytes],
        name: str,
        template: bytes,
        offsets: Sequence[int],
        *,
        refresh: float,
    ) -> None:
        self.read_keys, self.name, self.refresh = read_keys, name, refresh
        self.template, self.offsets = template, list(offsets)
        self._built: tuple[np.ndarray, float] | None = None  # (sorted keys, when), swapped whole
        self._building = threading.Lock()

    def contains(self, ids: np.ndarray, now: float) -> np.ndarray | None:
        """Mask of ``ids`` the store holds; None when no set is built yet (probe all).

        Starts a rebuild in the background when the set is missing or stale.
        """
        built = self._built
        if (built is None or now - built[1] > self.refresh) and not self._building.locked():
            threading.Thread(
                target=self.rebuild, name=f"present-keys-{self.name}", daemon=True
            ).start()
        if built is None:
            return None
        keys = built[0]
        at = np.searchsorted(keys, ids)
        return keys[np.minimum(at, len(keys) - 1)] == ids if len(keys) else np.zeros(len(ids), bool)

    def rebuild(self) -> None:
        """Read every entity key of the view and swap the new set in (no-op while one runs)."""
        if not self._building.acquire(blocking=False):  # pylint: disable=consider-using-with
            return
        try:
            started = time.monotonic()
            keys = self._parse(self.read_keys())
            if keys is not None:
                self._built = (keys, started)
        except (sqlite3.Error, redis.RedisError) as exc:  # down or not filled: probe until back
            log.warning("present keys of %s not rebuilt: %s", self.name, exc)
        finally:
            self._building.release()

    def _parse(self, joined: bytes) -> np.ndarray | None:
        """Sorted cache keys of concatenated entity keys; None if one has another layout.

        Runs in the rebuild thread, in blocks of :data:`PARSE_BLOCK` keys with
        the GIL offered to /rank between them. In one go, the layout check and
        ``np.unique`` held it for 20-34 ms (205k keys), a stall of the request
        in flight on that worker once a refresh period.
        """
        width = len(self.template)
        if len(joined) % width:
            log.warning("present keys of %s: unexpected key length, not used", self.name)
            return None
        rows = np.frombuffer(joined, dtype=np.uint8).reshape(-1, width)
        template = np.frombuffer(self.template, dtype=np.uint8)
        starts = [0] + [off + 8 for off in sorted(self.offsets)]
        ends = [*sorted(self.offsets), width]
        fixed = [(a, b) for a, b in zip(starts, ends, strict=True) if b > a]  # shared bytes
        blocks = []
        for lo in range(0, len(rows), PARSE_BLOCK):
            block = rows[lo : lo + PARSE_BLOCK]
            if not all((block[:, a:b] == template[a:b]).all() for a, b in fixed):
                log.warning("present keys of %s: unexpected key layout, not used", self.name)
                return None
            high, low = (
                block[:, off : off + 8].copy().view("<i8").ravel() for off in self.offsets
            )  # join-key order, as in OnlineFeatureReader._ids
            fits = (high >= 0) & (high < 1 << 31) & (low >= 0) & (low < 1 << 32)
            # Keys that cannot be cache keys are never looked up here (see _ids).
            blocks.append((high[fits] << 32) | low[fits])
            time.sleep(0)  # let the worker's request thread take the GIL
        keys = np.sort(np.concatenate(blocks)) if blocks else np.zeros(0, dtype=np.int64)
        return keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys


def sqlite_entity_keys(path: str, table: str) -> bytes:
    """Every distinct entity key of a SQLite online-store table, concatenated.

    One value, so one ``sqlite3_step``: the GIL is released for the whole scan
    (``fetchall`` re-took it for each of 200k rows, and slowed /rank meanwhile).
    SQLite caps a value at 1 GB (~15M pairs of 68-byte keys); a larger table
    fails here, and every key is probed.
    """
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        con.text_factory = bytes  # group_concat returns the blobs' bytes as they are
        distinct = f'SELECT DISTINCT entity_key FROM "{table}"'  # nosec B608
        concat = f"SELECT group_concat(entity_key, '') FROM ({distinct})"  # nosec B608
        (joined,) = con.execute(concat).fetchone()
    return joined or b""


def redis_entity_keys(
    client: redis.Redis, template: bytes, offsets: Sequence[int], project: bytes
) -> bytes:
    """Every Redis key of the project with the template's layout, without the project suffix.

    Feast's Redis key is the serialized entity key followed by the project
    name; all keys of one entity type share the bytes before the first id.
    One ``SCAN ... MATCH`` walk of the keyspace (205k pair keys of a 255k-key
    database: 255 calls, ~0.25 s, the longest 3 ms).

    Raises:
        redis.RedisError: the scan failed, or matched more than :data:`REDIS_MAX_KEYS`.
    """
    pattern = _glob_escape(template[: min(offsets)]) + b"*" + _glob_escape(project)
    width = len(template) + len(project)
    keys: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=REDIS_SCAN_COUNT):
        if len(key) == width:
            keys.append(key[: len(template)])
            if len(keys) > REDIS_MAX_KEYS:
                raise redis.RedisError(f"more than {REDIS_MAX_KEYS} keys match")
    return b"".join(keys)


def _glob_escape(raw: bytes) -> bytes:
    """``raw`` as a literal in a Redis glob pattern."""
    return b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in raw)


class OnlineFeatureReader:
    """Reads a FeatureService's features of one user and N candidate tweets.

    Args:
        store: the Feast store (embedded SQLite or production Redis profile).
        service: the FeatureService name recorded with the model.
        freshness: seconds a decoded row may be served from memory, per view
            (default :data:`DEFAULT_FRESHNESS`; 0 disables the cache for a view).
            It is also how often a pair view's :class:`PresentKeys` is rebuilt.
        max_entries: bound on cached rows per view.
        redis_timeout: seconds a Redis connect or read may take before the read fails.
    """

    def __init__(
        self,
        store: FeatureStore,
        service: str = FEATURE_SERVICE,
        freshness: Mapping[str, float] | None = None,
        max_entries: int = 200_000,
        redis_timeout: float = 0.05,
    ) -> None:
        self.store = store
        self.redis_timeout = redis_timeout
        self.online_type = store.config.online_store.type
        if self.online_type not in ("sqlite", "redis"):
            raise ValueError(f"no fast reader for online store {self.online_type!r}")
        freshness_bounds = {**DEFAULT_FRESHNESS, **(freshness or {})}
        fs = store.get_feature_service(service)
        self._views: list[_View] = []
        self._odfvs: list[tuple[OnDemandFeatureView, list[str], list[str]]] = []
        """(view, its features in the service, its input names), in service order."""
        self.names: list[str] = []
        project = store.config.project
        self._project = project.encode("utf-8")
        versioning = store.config.registry.enable_online_feature_view_versioning
        for projection in fs.feature_view_projections:
            names = [f.name for f in projection.features]
            self.names.extend(names)
            if not _is_batch(store, projection.name):
                odfv = store.get_on_demand_feature_view(projection.name)
                sources = odfv.source_feature_view_projections.values()
                inputs = [f.name for p in sources for f in p.features]
                self._odfvs.append((odfv, names, inputs))
                continue
            view = store.get_feature_view(projection.name)
            join_keys = list(view.join_keys)
            template, offsets = _int_key_template(join_keys)
            spec = _View(
                view=view,
                features=names,
                dtypes={f.name: f.dtype for f in view.features},
                join_keys=join_keys,
                template=template,
                offsets=offsets,
                ttl=freshness_bounds.get(view.name, DEFAULT_TTL),
                max_entries=max_entries,
            )
            if self.online_type == "sqlite":
                spec.table = _table_id(project, view, versioning)
            else:
                spec.redis_fields = [_mmh3(f"{view.name}:{n}") for n in names]
            # Pair views are sparse (most user-author pairs never met), and
            # without a push source they change only at materialization.
            if spec.pair and view.stream_source is None and spec.ttl > 0:
                spec.present = self._present_keys(spec)
            self._views.append(spec)
        self._sqlite: sqlite3.Connection | None = None
        self._redis = None
        # The on-demand views' inputs among what is read: numeric ones go into one
        # float block, list ones become object columns (fixed by the service).
        read = {n for spec in self._views for n in spec.numeric}
        listed = {n for spec in self._views for n in spec.lists}
        inputs = dict.fromkeys(n for _, _, names in self._odfvs for n in names)
        self._odfv_numeric = [n for n in inputs if n in read]
        self._odfv_lists = [n for n in inputs if n in listed]

    def _present_keys(self, spec: _View) -> PresentKeys | None:
        """The set of held keys of a pair view; None on a Redis cluster or sentinel (no SCAN)."""
        if self.online_type == "sqlite":
            path = SqliteOnlineStore._get_db_path(self.store.config)  # pylint: disable=protected-access
            read_keys = functools.partial(sqlite_entity_keys, path, spec.table)
        elif self.store.config.online_store.redis_type == RedisType.redis:
            # Its own client, with room for a SCAN call on a busy server.
            read_keys = functools.partial(
                redis_entity_keys,
                self._redis_client(timeout=1.0),
                spec.template,
                spec.offsets,
                self._project,
            )
        else:
            return None
        return PresentKeys(read_keys, spec.view.name, spec.template, spec.offsets, refresh=spec.ttl)

    def _keys(self, spec: _View, columns: Mapping[str, np.ndarray]) -> list[bytes]:
        """Feast's serialized entity keys for rows of join-key columns (template patching)."""
        n = len(next(iter(columns.values())))
        buf = np.tile(np.frombuffer(spec.template, dtype=np.uint8), (n, 1))
        for name, off in zip(spec.join_keys, spec.offsets, strict=True):
            values = np.asarray(columns[name], dtype="<i8")
            buf[:, off : off + 8] = values.view(np.uint8).reshape(-1, 8)
        return [row.tobytes() for row in buf]

    @staticmethod
    def _ids(spec: _View, columns: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """One int64 per row identifying the entity: the cache key (no bytes needed).

        None when the ids cannot be keys: negative ids (-1 marks an empty cache
        slot) or two join keys that do not fit one int64 (ids of 2^31 and more).
        Then the whole view is read from the store for this request.
        """
        if any(columns[k].min(initial=0) < 0 for k in spec.join_keys):
            return None
        if len(spec.join_keys) == 1:
            return columns[spec.join_keys[0]]
        high, low = (columns[k] for k in spec.join_keys)
        if (
            len(spec.join_keys) > 2
            or high.max(initial=0) >= 1 << 31
            or low.max(initial=0) >= 1 << 32
        ):
            return None
        return (high << 32) | low

    def _read_sqlite(self, spec: _View, keys: list[bytes]) -> np.ndarray:
        """The stored value bytes, (keys, features) objects (None where absent)."""
        if self._sqlite is None:
            path = SqliteOnlineStore._get_db_path(self.store.config)  # pylint: disable=protected-access
            self._sqlite = sqlite3.connect(path, check_same_thread=False)
            # Reads only: map the file and keep hot pages in memory.
            self._sqlite.execute("PRAGMA mmap_size = 1073741824")
            self._sqlite.execute("PRAGMA cache_size = -131072")
        rows = self._sqlite.execute(
            # Table name from the registry; keys are bound parameters, sorted:
            # SQLite probes the index in key order (500 keys: 0.6 vs 1.1 ms).
            f'SELECT entity_key, feature_name, value FROM "{spec.table}" '  # nosec B608
            f"WHERE entity_key IN ({','.join('?' * len(keys))})",
            sorted(keys),
        ).fetchall()
        cells = np.full((len(keys), len(spec.features)), None, dtype=object)
        if rows:
            found, names, values = zip(*rows, strict=True)
            row_of = dict(zip(keys, range(len(keys)), strict=True))
            row = np.fromiter(map(row_of.__getitem__, found), dtype=np.int64, count=len(rows))
            column = np.fromiter(
                map(spec.column_of.get, names, itertools.repeat(-1)),
                dtype=np.int64,
                count=len(rows),
            )
            wanted = column >= 0  # the table holds the view's features the service leaves out too
            cells[row[wanted], column[wanted]] = np.fromiter(values, dtype=object, count=len(rows))[
                wanted
            ]
        return cells

    def _read_redis(self, spec: _View, keys: list[bytes]) -> np.ndarray:
        """The stored value bytes, (keys, features) objects (None where absent)."""
        if self._redis is None:
            self._redis = self._redis_client()
        stored = [key + self._project for key in keys]
        if isinstance(self._redis, redis.Redis):  # a single server (not a cluster)
            replies = _hmget_packed(self._redis, stored, spec.redis_fields)
        else:
            with self._redis.pipeline(transaction=False) as pipe:
                for key in stored:
                    pipe.hmget(key, spec.redis_fields)
                replies = pipe.execute()
        cells = np.full((len(keys), len(spec.features)), None, dtype=object)
        cells[:] = replies
        return cells

    def _rows(
        self,
        spec: _View,
        ids: np.ndarray | None,
        columns: Mapping[str, np.ndarray],
        deadline: float | None = None,
    ) -> tuple[np.ndarray, dict[str, ListValues]]:
        """Decoded rows of distinct entities: cached ones from memory, the rest from the store.

        Args:
            spec: the feature view.
            ids: distinct cache keys (see :meth:`_ids`); None: no cache for these rows.
            columns: the join-key values of those entities, aligned with ``ids``.
            deadline: see :meth:`read`; checked only when the store must be read.
        """
        now = time.monotonic()
        n = len(next(iter(columns.values())))
        matrix = np.empty((n, len(spec.numeric)))
        lists_out = {name: ListValues(n) for name in spec.lists}
        asked = np.arange(n)  # the rows neither known absent nor cached
        if ids is not None and spec.present is not None:
            held = spec.present.contains(ids, now)
            if held is not None:  # the others have no row in the store: missing, not probed
                matrix[~held] = np.nan
                asked = np.flatnonzero(held)
        if ids is None:
            slots, fresh = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool)
        else:
            slots, fresh = spec.cache.lookup(ids[asked], now)
        hit = asked[fresh]
        matrix[hit] = spec.cache.values[slots[fresh]]
        for name, column in zip(spec.lists, spec.cache.lists, strict=True):
            lists_out[name].put(hit, column.take(slots[fresh]))
        missing = asked[~fresh]
        if len(missing):
            if deadline is not None and time.perf_counter() > deadline:
                raise FeatureDeadlineExceeded(f"deadline passed before reading {spec.view.name}")
            keys = self._keys(spec, {k: v[missing] for k, v in columns.items()})
            reader = self._read_sqlite if self.online_type == "sqlite" else self._read_redis
            cells = reader(spec, keys)
            matrix[missing] = decode(cells[:, [spec.column_of[n] for n in spec.numeric]])
            fetched = [
                ListValues.from_lists(decode_lists(cells[:, spec.column_of[name]]))
                for name in spec.lists
            ]
            for name, values in zip(spec.lists, fetched, strict=True):
                lists_out[name].put(missing, values)
            if ids is not None:
                kept = np.arange(len(missing))
                if spec.pair:
                    # A pair view's rows absent from the store (the user never met the
                    # author: ~455 of 500 before the present keys are built, or on a Redis
                    # cluster) are not cached. A hit needs the same user again before ~440
                    # requests' worth of them evict it, and storing and looking them up
                    # cost ~0.8 ms a request (py-spy, Redis profile).
                    kept = np.flatnonzero(~np.equal(cells, None).all(axis=1))
                spec.cache.store(
                    ids[missing[kept]],
                    matrix[missing[kept]],
                    [values.take(kept) for values in fetched],
                    now,
                )
        return matrix, lists_out

    def _redis_client(self, timeout: float | None = None) -> redis.Redis:
        """A client that gives up fast: a dead Redis must become a fallback, not a hang.

        Feast's own client (no socket timeouts, retries) is kept for clusters
        and sentinels, whose clients this reader does not rebuild.

        Args:
            timeout: seconds for a connect or a reply (default ``redis_timeout``).
        """
        config = self.store.config.online_store
        if config.redis_type != RedisType.redis:
            # pylint: disable-next=protected-access
            return self.store._get_provider().online_store._get_client(config)
        # pylint: disable-next=protected-access
        nodes, kwargs = RedisOnlineStore._parse_connection_string(config.connection_string)
        timeout = self.redis_timeout if timeout is None else timeout
        kwargs.setdefault("socket_timeout", timeout)
        kwargs.setdefault("socket_connect_timeout", timeout)
        return redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), retry=None, **kwargs)

    def read(
        self,
        entities: Mapping[str, np.ndarray],
        request_ts: int,
        deadline: float | None = None,
    ) -> dict[str, np.ndarray | list]:
        """Features for N rows of entities (``user_id``, ``author_id``, ``tweet_id`` arrays).

        Args:
            entities: the join keys, one array each.
            request_ts: the request time (Unix seconds), input of the on-demand view.
            deadline: a ``time.perf_counter()`` value. Checked before each read
                from the store (views served from the cache need none), so a slow
                store costs at most the deadline plus one
                read, and a read is bounded by the client's timeouts.

        Returns:
            Feature name to an array of N values (NaN when missing), in the
            service's order; array-typed features (inputs of on-demand views)
            as lists.

        Raises:
            FeatureStoreUnavailable: the online store could not be read.
            FeatureDeadlineExceeded: the deadline passed before all views were read.
            OnDemandFeaturesFailed: an on-demand view's transformation raised.
        """
        n = len(entities["tweet_id"])
        out: dict[str, np.ndarray | list] = {}
        list_columns: dict[str, ListValues] = {}
        try:
            for spec in self._views:
                columns = {k: np.asarray(entities[k], dtype=np.int64) for k in spec.join_keys}
                # Each distinct entity once (the user's row repeats N times).
                cache_keys = self._ids(spec, columns)
                if cache_keys is None:
                    pairs = np.stack([columns[k] for k in spec.join_keys], axis=1)
                    _, first, inverse = np.unique(
                        pairs, axis=0, return_index=True, return_inverse=True
                    )
                    ids = None
                else:
                    ids, first, inverse = np.unique(
                        cache_keys, return_index=True, return_inverse=True
                    )
                inverse = inverse.reshape(-1)
                unique = {k: v[first] for k, v in columns.items()}
                matrix, lists = self._rows(spec, ids, unique, deadline)
                for j, name in enumerate(spec.numeric):
                    out[name] = matrix[inverse, j]
                for name, values in lists.items():
                    list_columns[name] = values.take(inverse)
                    out[name] = list_columns[name].objects.tolist()
        except FeatureDeadlineExceeded:
            raise
        except Exception as exc:  # any driver error means "store unavailable" to the caller
            self.close()
            raise FeatureStoreUnavailable(f"{self.online_type} online store: {exc}") from exc
        if self._odfvs:
            inputs = self._odfv_inputs(out, list_columns, n, request_ts)
            for odfv, features, _ in self._odfvs:
                try:
                    derived = odfv.feature_transformation.udf(inputs)
                    for name in features:
                        out[name] = np.asarray(derived[name], dtype=np.float64)
                except Exception as exc:
                    raise OnDemandFeaturesFailed(f"{odfv.name}: {exc!r}") from exc
        return {name: out[name] for name in self.names}

    def _odfv_inputs(
        self,
        out: Mapping[str, np.ndarray | list],
        lists: Mapping[str, ListValues],
        n: int,
        request_ts: int,
    ) -> dict[str, np.ndarray | pa.ListArray]:
        """The on-demand views' inputs as a dict of whole columns, list features as Arrow lists.

        The views take a dict as well as a DataFrame (see ``feature_repo/on_demand_views.py``).
        The frame this replaced, with the lists in pandas' Arrow list type, cost
        0.57 ms of a 3.9 ms read (500 rows, in process), and the views 1.04 ms on it.
        """
        columns: dict[str, np.ndarray | pa.ListArray] = {k: out[k] for k in self._odfv_numeric}
        columns["request_ts"] = np.full(n, request_ts, dtype=np.int64)
        for k in self._odfv_lists:
            columns[k] = lists[k].to_arrow()
        return columns

    def warm(self) -> None:
        """Build the sets of present keys now, so that the first requests need not wait for them.

        A store that cannot be read leaves them unbuilt (reads probe every key),
        and the first read reports the store as unavailable.
        """
        for spec in self._views:
            if spec.present is not None:
                spec.present.rebuild()

    def clear_cache(self) -> None:
        """Forget cached rows and rebuild the sets of present keys (after a refill, say)."""
        for spec in self._views:
            spec.cache.clear()
        self.warm()

    def close(self) -> None:
        """Drop connections; the next read reconnects."""
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        self._redis = None


def _hmget_packed(
    client: redis.Redis, keys: list[bytes], fields: list[bytes]
) -> list[list[bytes | None]]:
    """HMGET of the same fields on every key: one buffer of plain HMGETs on one connection.

    redis-py packs a pipeline command by command (~5 us a key here), and a Lua
    script looping over HMGET cost Redis itself ~4.5 us a key against ~1 us for
    a plain HMGET; this buffer is a template repeated with the keys in it.
    449 user-author keys: 1.18 ms, against 1.81 ms for the Lua script it replaced.
    """
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
    tail = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)
    payload = b"".join(b"%s$%d\r\n%s\r\n%s" % (head, len(key), key, tail) for key in keys)
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command([payload])
        return [connection.read_response() for _ in keys]
    except BaseException:
        connection.disconnect()  # replies may be left unread: never reuse this connection
        raise
    finally:
        pool.release(connection)


def _is_batch(store: FeatureStore, name: str) -> bool:
    return name in {v.name for v in store.list_feature_views()}
