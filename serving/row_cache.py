"""The in-process cache of decoded feature rows, looked up a request's batch at a time.

:class:`RowCache` keeps rows in slots of numpy arrays, found through a
:class:`SlotIndex` (a hash table in numpy arrays); :class:`ListValues` holds a
list feature's values for a run of rows. Used by
:class:`serving.features.OnlineFeatureReader` (feature rows) and
:class:`serving.candidates.RedisCandidates` (tweet facts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


class ListValues:
    """The values of one list feature for a run of rows, in the two layouts its readers need.

    ``objects`` holds what ``get_online_features`` returns (a Python list, or
    None when missing), for the response. ``matrix`` holds the same values,
    left-aligned in rows of ``dtype`` (``lengths[i]`` of them, -1 when missing), so
    a batch of rows becomes the on-demand views' input matrix by numpy
    gathers, not a pass over hundreds of Python lists per request.

    Args:
        size: number of rows, all missing at first.
        dtype: of the elements: float32 (``Array(Float32)``) or int64 (``Array(Int64)``).
    """

    def __init__(self, size: int, dtype: type = np.float32) -> None:
        self.objects = np.full(size, None, dtype=object)
        self.lengths = np.full(size, -1, dtype=np.int64)
        # Cells past a row's length are never read: left uninitialised (a
        # cache's pages are touched as its slots fill).
        self.matrix = np.empty((size, 0), dtype=dtype)

    def __len__(self) -> int:
        return len(self.objects)

    @classmethod
    def from_lists(
        cls, lists: Sequence[Sequence[float] | None], dtype: type = np.float32
    ) -> ListValues:
        """Rows from decoded lists (None: missing)."""
        out = cls(len(lists), dtype)
        out.lengths[:] = [-1 if v is None else len(v) for v in lists]
        out.matrix = np.empty((len(lists), out.lengths.max(initial=0)), dtype=dtype)
        for i, v in enumerate(lists):
            if v is not None:
                out.objects[i] = v
                out.matrix[i, : len(v)] = v
        return out

    def take(self, rows: np.ndarray) -> ListValues:
        """The rows ``rows`` (integer indices), as a new run."""
        out = ListValues(0, self.matrix.dtype.type)
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
            wider = np.empty((len(self), width), dtype=self.matrix.dtype)
            wider[:, : self.matrix.shape[1]] = self.matrix
            self.matrix = wider
        self.objects[rows] = values.objects
        self.lengths[rows] = values.lengths
        self.matrix[rows, :width] = values.matrix

    def padded(self) -> np.ndarray:
        """The rows as a float64 (rows, longest) matrix, NaN past each row's length.

        A missing row is all NaN, like an empty one. The on-demand views take
        list features in this form from serving (``feature_repo/on_demand_views.py``).
        """
        lengths = np.maximum(self.lengths, 0)
        width = int(lengths.max(initial=0))
        inside = np.arange(width) < lengths[:, None]
        out = np.full((len(self), width), np.nan)
        out[inside] = self.matrix[:, :width][inside]
        return out


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

    def __init__(self, keys: np.ndarray | None = None, values: np.ndarray | None = None) -> None:
        n = 0 if keys is None else len(keys)
        self._bits = max(10, int(4 * n).bit_length())
        self._keys = np.full(1 << self._bits, self._EMPTY, dtype=np.int64)
        self._values = np.full(1 << self._bits, -1, dtype=np.int64)
        self.used = 0
        """Cells taken (live keys and keys the owner no longer uses)."""
        if keys is not None and values is not None:
            self.put(keys, values)

    def has_room(self, n: int) -> bool:
        """Whether ``n`` more keys keep the table at most half full."""
        return self.used + n <= len(self._keys) // 2

    def _probe(
        self, keys: np.ndarray, settle: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    ) -> None:
        """Walk every key's probe sequence until ``settle`` says it is done.

        ``settle(pending, cells, found)`` gets the keys still probing (indices
        into ``keys``), the cell each is at and the key stored there, and
        returns the mask of those that are done; the others move one cell on.
        """
        cell = ((keys.astype(np.uint64) * self._GOLDEN) >> np.uint64(64 - self._bits)).astype(
            np.int64
        )
        pending = np.arange(len(keys))
        mask = len(self._keys) - 1
        while len(pending):
            at = cell[pending]
            pending = pending[~settle(pending, at, self._keys[at])]
            cell[pending] = (cell[pending] + 1) & mask

    def get(self, keys: np.ndarray) -> np.ndarray:
        """The value of each key (-1 when absent)."""
        out = np.full(len(keys), -1, dtype=np.int64)

        def settle(pending: np.ndarray, at: np.ndarray, found: np.ndarray) -> np.ndarray:
            hit = found == keys[pending]
            out[pending[hit]] = self._values[at[hit]]
            return hit | (found == self._EMPTY)

        self._probe(keys, settle)
        return out

    def put(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Set the values of distinct non-negative keys (see :meth:`has_room` first)."""

        def settle(pending: np.ndarray, at: np.ndarray, found: np.ndarray) -> np.ndarray:
            same = found == keys[pending]
            self._values[at[same]] = values[pending[same]]
            free = np.flatnonzero(found == self._EMPTY)
            # Keys probing the same free cell: one write stays, the others probe on.
            cells, claims = at[free], pending[free]
            self._keys[cells] = keys[claims]
            won = self._keys[cells] == keys[claims]
            self._values[cells[won]] = values[claims[won]]
            self.used += int(np.count_nonzero(won))
            same[free[won]] = True
            return same

        self._probe(keys, settle)


class RowCache:
    """A bounded cache of decoded rows, each valid ``ttl`` seconds, looked up a batch at a time.

    The freshness bound: a value served from the cache is at most ``ttl``
    seconds older than the online store's. Entities the store does not hold
    are cached too (as NaN), except those of pair views (see
    ``serving.features.OnlineFeatureReader._rows``).

    Rows live in slots of a matrix (numeric features) and a :class:`ListValues`
    per list feature; a :class:`SlotIndex` maps an entity's cache key (a
    non-negative int64) to its slot. A batch lookup is numpy passes and
    gathers, not a Python call per row. Slots are reused in insertion order (a
    ring), so when full the oldest entries go first.

    Args:
        ttl: seconds an entry is served (0 disables the cache: every lookup misses).
        max_entries: number of slots (0 disables the cache too).
        width: numeric features per row.
        lists: the element type of each list feature per row (see :class:`ListValues`).
        dtype: of the numeric values (float64 for features).
    """

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        width: int = 1,
        lists: Sequence[type] = (),
        *,
        dtype: type = np.float64,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._index = SlotIndex()
        self._keys = np.full(max_entries, -1, dtype=np.int64)
        self.values = np.empty((max_entries, width), dtype=dtype)  # pages touched as slots fill
        self.lists = [ListValues(max_entries, element) for element in lists]
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
        self._index = SlotIndex()
        self._keys.fill(-1)
        self._expires.fill(-np.inf)
