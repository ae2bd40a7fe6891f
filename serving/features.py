"""Online features for a feed request, read straight from Feast's online store.

``store.get_online_features(...).to_dict()`` for 500 candidates costs ~250 ms
here: it builds a protobuf per entity, parses a protobuf per value and
assembles Python lists. A feed request is one user, N tweets, their authors
and N user-author pairs, so this reader does per view one round trip (one
``SELECT ... IN`` on SQLite, one pipelined ``HMGET`` batch on Redis), decodes
the value bytes column-wise with numpy, and runs the repo's own on-demand
transformation (the registry's UDF, not a copy). Missing values are NaN.
Decoded rows are kept for a bounded time (:mod:`serving.row_cache`).

The bytes and layouts are Feast's own, as :mod:`core.feast_layout` knows
them (entity keys via Feast's serializer, ``ValueProto`` wire format), so the
result equals ``get_online_features`` value for value:
``tests/integration/test_serving_features.py`` checks it on random rows of
both stores.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import redis
from feast import FeatureStore, FeatureView, OnDemandFeatureView
from feast.infra.online_stores.redis import RedisType
from feast.types import Array, Int64

from core.feast_layout import (
    LIST_TYPES,
    EntityKeys,
    check_feast_layout,
    decode_lists,
    decode_values,
    feast_redis_client,
    redis_address,
    redis_fields,
    redis_keys,
    sqlite_path,
    sqlite_table,
)
from core.feast_store import FEATURE_SERVICE
from serving.row_cache import ListValues, RowCache

DEFAULT_TTL = 5.0
DEFAULT_FRESHNESS: dict[str, float] = {
    # Immutable once written.
    "tweet_content": 3600.0,
    # Daily snapshots: a minute of staleness changes nothing.
    "user_stats": 60.0,
    "author_stats": 60.0,
    "user_author_affinity": 60.0,
    "user_top_authors": 60.0,
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


@dataclass
class _View:
    view: FeatureView
    features: list[str]
    dtypes: dict[str, object]
    join_keys: list[str]
    keys: EntityKeys
    ttl: float
    max_entries: int
    table: str = ""
    redis_fields: list[bytes] = field(default_factory=list)
    column_of: dict[str, int] = field(init=False)
    """A feature's column in the (keys, features) value cells read from the store."""

    numeric: list[str] = field(default_factory=list)
    """Scalar features, decoded to float64."""
    lists: dict[str, type] = field(default_factory=dict)
    """List features (inputs of on-demand views), kept as :class:`ListValues` of this type."""
    cache: RowCache = field(init=False)

    @property
    def pair(self) -> bool:
        """Keyed by two entities (user-author): sparse, most pairs have no row."""
        return len(self.join_keys) == 2

    def __post_init__(self) -> None:
        self.lists = {
            n: np.int64 if self.dtypes[n] == Array(Int64) else np.float32
            for n in self.features
            if self.dtypes[n] in LIST_TYPES
        }
        self.numeric = [n for n in self.features if n not in self.lists]
        self.column_of = {n: i for i, n in enumerate(self.features)}
        self.cache = RowCache(
            self.ttl, self.max_entries, len(self.numeric), list(self.lists.values())
        )


class OnlineFeatureReader:
    """Reads a FeatureService's features of one user and N candidate tweets.

    Args:
        store: the Feast store (embedded SQLite or production Redis profile).
        service: the FeatureService name recorded with the model.
        freshness: seconds a decoded row may be served from memory, per view
            (default :data:`DEFAULT_FRESHNESS`; 0 disables the cache for a view).
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
        check_feast_layout(store.config)
        freshness_bounds = {**DEFAULT_FRESHNESS, **(freshness or {})}
        fs = store.get_feature_service(service)
        self._views: list[_View] = []
        self._odfvs: list[tuple[OnDemandFeatureView, list[str], list[str]]] = []
        """(view, its features in the service, its input names), in service order."""
        self.names: list[str] = []
        self._project = store.config.project.encode("utf-8")
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
            spec = _View(
                view=view,
                features=names,
                dtypes={f.name: f.dtype for f in view.features},
                join_keys=join_keys,
                keys=EntityKeys.of(join_keys),
                ttl=freshness_bounds.get(view.name, DEFAULT_TTL),
                max_entries=max_entries,
            )
            if self.online_type == "sqlite":
                spec.table = sqlite_table(store.config, view)
            else:
                spec.redis_fields = redis_fields(store.config, view, names)
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

    def _keys(self, spec: _View, columns: Mapping[str, np.ndarray]) -> list[bytes]:
        """Feast's serialized entity keys for rows of join-key columns."""
        return [row.tobytes() for row in spec.keys.encode(columns)]

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
            self._sqlite = sqlite3.connect(sqlite_path(self.store.config), check_same_thread=False)
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
        stored = redis_keys(keys, self._project)
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
        lists_out = {name: ListValues(n, dtype) for name, dtype in spec.lists.items()}
        if ids is None:
            slots, fresh = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool)
        else:
            slots, fresh = spec.cache.lookup(ids, now)
        hit = np.flatnonzero(fresh)
        matrix[hit] = spec.cache.values[slots[fresh]]
        for name, column in zip(spec.lists, spec.cache.lists, strict=True):
            lists_out[name].put(hit, column.take(slots[fresh]))
        missing = np.flatnonzero(~fresh)
        if len(missing):
            if deadline is not None and time.perf_counter() > deadline:
                raise FeatureDeadlineExceeded(f"deadline passed before reading {spec.view.name}")
            keys = self._keys(spec, {k: v[missing] for k, v in columns.items()})
            reader = self._read_sqlite if self.online_type == "sqlite" else self._read_redis
            cells = reader(spec, keys)
            matrix[missing] = decode_values(cells[:, [spec.column_of[n] for n in spec.numeric]])
            fetched = [
                ListValues.from_lists(decode_lists(cells[:, spec.column_of[name]]), dtype)
                for name, dtype in spec.lists.items()
            ]
            for name, values in zip(spec.lists, fetched, strict=True):
                lists_out[name].put(missing, values)
            if ids is not None:
                kept = np.arange(len(missing))
                if spec.pair:
                    # A pair view's rows absent from the store (the user never met the
                    # author: ~455 of 500) are not cached. A hit needs the same user
                    # again before ~440 requests' worth of them evict it, and storing
                    # and looking them up cost ~0.8 ms a request (py-spy, Redis profile).
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
            return feast_redis_client(self.store)
        nodes, kwargs = redis_address(config)
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
            inputs = self._odfv_inputs(entities, out, list_columns, request_ts)
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
        entities: Mapping[str, np.ndarray],
        out: Mapping[str, np.ndarray | list],
        lists: Mapping[str, ListValues],
        request_ts: int,
    ) -> dict[str, np.ndarray]:
        """The on-demand views' inputs as a dict of whole columns.

        A list feature is a float64 (rows, longest) matrix, NaN past each row's
        length (:meth:`ListValues.padded`): the form the views compute on. Until
        2026-12-06 they got Arrow list arrays and made that matrix themselves,
        which cost ~1 ms of a 5 ms read with ranker_v3's seven list columns.

        The request fields are the request time and each row's author as the
        candidate's (``candidate_request``, read by ``top_author_affinity``).
        The views take a dict as well as a DataFrame (see ``feature_repo/on_demand_views.py``).
        The frame this replaced, with the lists in pandas' Arrow list type, cost
        0.57 ms of a 3.9 ms read (500 rows, in process), and the views 1.04 ms on it.
        """
        columns: dict[str, np.ndarray] = {k: out[k] for k in self._odfv_numeric}
        authors = np.asarray(entities["author_id"], dtype=np.int64)
        columns["request_ts"] = np.full(len(authors), request_ts, dtype=np.int64)
        columns["candidate_author_id"] = authors
        for k in self._odfv_lists:
            columns[k] = lists[k].padded()
        return columns

    def clear_cache(self) -> None:
        """Forget cached rows (after a refill, say)."""
        for spec in self._views:
            spec.cache.clear()

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
