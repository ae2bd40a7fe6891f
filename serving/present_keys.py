"""The set of pairs a sparse (user, author) feature view holds, to skip probing the rest.

:class:`PresentKeys` is rebuilt in the background from a key source:
:func:`sqlite_entity_keys` (the SQLite online store's table) or
:func:`redis_entity_keys` (a ``SCAN`` of a single Redis server).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable

import numpy as np
import redis

from core.feast_layout import EntityKeys

log = logging.getLogger(__name__)

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
            ``keys.width`` bytes); see :func:`sqlite_entity_keys` and :func:`redis_entity_keys`.
        name: of the view, for the rebuild thread and the log.
        keys: the layout of the view's keys, its two join keys in the view's order
            (as :meth:`serving.features.OnlineFeatureReader._ids` combines them).
        refresh: seconds a built set is used before a rebuild starts.
    """

    def __init__(
        self,
        read_keys: Callable[[], bytes],
        name: str,
        keys: EntityKeys,
        *,
        refresh: float,
    ) -> None:
        self.read_keys, self.name, self.refresh = read_keys, name, refresh
        self.keys = keys
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
        width = self.keys.width
        if len(joined) % width:
            log.warning("present keys of %s: unexpected key length, not used", self.name)
            return None
        rows = np.frombuffer(joined, dtype=np.uint8).reshape(-1, width)
        blocks = []
        for lo in range(0, len(rows), PARSE_BLOCK):
            columns = self.keys.decode(rows[lo : lo + PARSE_BLOCK])
            if columns is None:
                log.warning("present keys of %s: unexpected key layout, not used", self.name)
                return None
            high, low = columns  # join-key order, as in OnlineFeatureReader._ids
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


def redis_entity_keys(client: redis.Redis, layout: EntityKeys, project: bytes) -> bytes:
    """Every entity key of ``layout`` in the project's Redis keys, concatenated.

    One ``SCAN ... MATCH`` walk of the keyspace (205k pair keys of a 255k-key
    database: 255 calls, ~0.25 s, the longest 3 ms).

    Raises:
        redis.RedisError: the scan failed, or matched more than :data:`REDIS_MAX_KEYS`.
    """
    pattern, width = layout.redis_match(project)
    keys: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=REDIS_SCAN_COUNT):
        if len(key) == width:
            keys.append(key[: layout.width])
            if len(keys) > REDIS_MAX_KEYS:
                raise redis.RedisError(f"more than {REDIS_MAX_KEYS} keys match")
    return b"".join(keys)
