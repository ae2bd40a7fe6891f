"""The training set: point-in-time features from Feast, labels joined by impression.

The impressions are the entity dataframe: each row asks Feast for the
features as they were at the impression's time (``event_timestamp``), through
the same FeatureService that serving reads. Labels come from the impressions
table, joined by ``impression_id``. The oracle's true probabilities are not
joined: they stay in ``truth/`` for evaluation only.

:func:`load_splits` reads it back split by day, never at random across time:
the last ``test_days`` are the test set, the ``val_days`` before them the
validation set, everything earlier trains. A random split would leak
tomorrow's engagement counters into yesterday's rows and overstate every
metric.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore
from pyarrow import feather

from core import tables
from core.actions import ActionSet, load_actions
from core.errors import InputError
from core.feast_store import FEATURE_SERVICE, training_set_path
from core.validation import (
    rate_ranges,
    validate_feature_files,
    validate_training_set,
    world_key,
    world_last_event_us,
)
from core.workspace import Workspace
from training.feature_join import join_ranges

KEY_COLUMNS = ("impression_id", "visit_id", "user_id", "author_id", "tweet_id", "position")
"""Columns carried next to the features: ids for joins, the slot for position-aware evaluation."""
DAY_US = 86_400 * 10**6
"""Microseconds in a day: the splits are whole UTC days of ``event_timestamp``."""


class SplitDays(Protocol):
    """How many of the last days to hold out (``training.train.TrainConfig`` has both)."""

    @property
    def val_days(self) -> int:
        """Days before the test days used for validation."""

    @property
    def test_days(self) -> int:
        """Last days held out for testing."""


@dataclass(frozen=True)
class Shard:
    """One process's share of a training set read by a distributed run.

    Of the training rows, numbered in file order, rank ``r`` of ``world`` reads
    rows ``r``, ``r + world``, ``r + 2 world``, ..., and the same of the
    validation rows: every shard spans every day, and the shards of a split
    differ in size by one row at most. Rank 0, which alone evaluates, also reads
    the whole test split; the other ranks read none of it.
    """

    rank: int = 0
    world: int = 1


@dataclass(frozen=True)
class Split:
    """One time split: named feature columns, labels (n, heads) and the row keys."""

    columns: dict[str, np.ndarray]
    labels: np.ndarray
    keys: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        """What the model reads: the features and the row's ids (hashed id embeddings)."""
        return {**self.keys, **self.columns}


@dataclass(frozen=True)
class Splits:
    """Train, validation and test splits of one training set."""

    train: Split
    val: Split
    test: Split
    features: tuple[str, ...]
    days: dict[str, list[str]]
    rows: dict[str, int]
    """Rows of each split in the whole file (a shard's splits hold fewer)."""


@dataclass(frozen=True)
class TrainingSet:
    """Where the training set was written and its size."""

    path: Path
    rows: int
    features: tuple[str, ...]


def feature_names(store: FeatureStore, service: str = FEATURE_SERVICE) -> list[str]:
    """The service's features in its own order, as ``view__feature`` -> ``feature`` names."""
    fs = store.get_feature_service(service)
    return [f.name for projection in fs.feature_view_projections for f in projection.features]


def build_training_set(
    store: FeatureStore,
    workspace: Workspace,
    actions: ActionSet | None = None,
    max_rows: int | None = None,
    chunk_rows: int = 250_000,
    progress: Callable[[int, int], None] | None = None,
) -> TrainingSet:
    """Join point-in-time features to every impression and write the training set.

    Args:
        store: the Feast store (its registry must hold ``FEATURE_SERVICE``).
        workspace: where the world is read and the dataset written.
        actions: label columns (default: core/actions.yaml).
        max_rows: keep only the last ``max_rows`` impressions of the world file (None: all).
        chunk_rows: entity rows per ``get_historical_features`` call (bounds memory), or
            about per Ray task on the cluster profile.
        progress: called with (rows done, rows total).
    """
    actions = actions or load_actions()
    # The feature tables meet their schemas before Feast joins them (nothing written otherwise).
    validate_feature_files(
        workspace.features,
        world_last_event_us(workspace.world),
        actions,
        key=world_key(workspace.world),
    )
    total = tables.row_count(tables.IMPRESSIONS, workspace.world)
    start = max(total - max_rows, 0) if max_rows is not None else 0
    names = feature_names(store)
    columns = (*KEY_COLUMNS, "event_timestamp", *names, *actions.names)
    path = training_set_path(workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    if total <= start:
        raise InputError(f"{workspace.world / tables.IMPRESSIONS.file_name}: no impressions")
    # Ray tasks may still write when one fails: their leftovers must not hide its error.
    with tempfile.TemporaryDirectory(
        prefix=".parts-", dir=path.parent, ignore_cleanup_errors=True
    ) as staging:
        parts = join_ranges(
            store,
            workspace,
            (start, total),
            chunk_rows,
            columns,
            actions.names,
            Path(staging),
            progress,
        )
        with tables.replaced_atomically(path) as tmp:
            rows = tables.write_parts(in_impression_order(parts), tmp, tables.parts_schema(parts))
    return TrainingSet(path=path, rows=rows, features=tuple(names))


def in_impression_order(parts: list[Path]) -> Iterator[pa.Table]:
    """The staged parts, checked to follow each other in ``impression_id`` order (the
    world's file order, which the join relies on instead of sorting across parts)."""
    last = -1
    for part in parts:
        table = feather.read_table(part, memory_map=True)
        ids = table["impression_id"].to_numpy()
        if len(ids) and ids[0] <= last:
            raise tables.TableError(
                "impressions are not in impression_id order in the world file "
                f"(id {ids[0]} after {last})"
            )
        last = int(ids[-1]) if len(ids) else last
        yield table


def feature_columns(schema: pa.Schema, actions: ActionSet) -> tuple[str, ...]:
    """Model-readable feature columns of a training set, in the service's order.

    Keys, the timestamp, labels and list-typed columns are left out.
    """
    skip = {*KEY_COLUMNS, "event_timestamp", *actions.names}
    return tuple(f.name for f in schema if f.name not in skip and not pa.types.is_list(f.type))


def file_sha256(path: Path) -> str:
    """Fingerprint of the training data, logged with the run."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_splits(
    path: Path,
    config: SplitDays,
    actions: ActionSet | None = None,
    shard: Shard | None = None,
) -> Splits:
    """Read the training set and split it by UTC day.

    With ``shard`` (a process of a distributed run), the file is streamed and
    only this process's rows are kept: its share of the training and validation
    days (see :class:`Shard`), and on rank 0 the whole test split. The days and
    :attr:`Splits.rows` are the whole file's on every process.

    Raises:
        ValueError: fewer days than ``val_days + test_days + 1``.
    """
    actions = actions or load_actions()
    shard = shard or Shard()
    schema = pq.read_schema(path)
    features = feature_columns(schema, actions)
    day_rows = _rows_per_day(path)
    days = np.array(sorted(day_rows), dtype=np.int64)
    if len(days) < config.val_days + config.test_days + 1:
        raise InputError(
            f"{path}: {len(days)} day(s) of data; need more than "
            f"{config.val_days} validation + {config.test_days} test day(s)"
        )
    test_from = days[-config.test_days]
    val_from = days[-config.test_days - config.val_days]
    table = _read_rows(
        path,
        [*KEY_COLUMNS, "event_timestamp", *features, *actions.names],
        shard,
        val_from,
        test_from,
    )
    # Types, label nulls, missing shares and rate ranges, before any epoch (core/validation.py).
    frame = table.select([*features, *actions.names]).to_pandas()
    validate_training_set(frame, path, features, actions.names, rate_ranges(actions))
    del frame

    def split_masks(day: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "train": day < val_from,
            "val": (day >= val_from) & (day < test_from),
            "test": day >= test_from,
        }

    columns = {
        name: table[name].to_numpy(zero_copy_only=False).astype(np.float64) for name in features
    }
    labels = np.column_stack(
        [table[a].to_numpy(zero_copy_only=False) for a in actions.names]
    ).astype(np.float32)
    keys = {name: table[name].to_numpy() for name in KEY_COLUMNS}

    def take(mask: np.ndarray) -> Split:
        return Split(
            {n: c[mask] for n, c in columns.items()},
            labels[mask],
            {n: k[mask] for n, k in keys.items()},
        )

    row_masks, day_masks = split_masks(_days(table["event_timestamp"])), split_masks(days)
    return Splits(
        train=take(row_masks["train"]),
        val=take(row_masks["val"]),
        test=take(row_masks["test"]),
        features=features,
        days={
            name: [str(np.datetime64(int(d) * DAY_US, "us").astype("M8[D]")) for d in days[mask]]
            for name, mask in day_masks.items()
        },
        rows={name: sum(day_rows[int(d)] for d in days[mask]) for name, mask in day_masks.items()},
    )


def _days(timestamps: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The UTC day number of each ``event_timestamp``."""
    return pc.divide(timestamps.cast(pa.int64()), DAY_US).to_numpy()


def _rows_per_day(path: Path) -> dict[int, int]:
    """Rows of each UTC day, from the ``event_timestamp`` column streamed batch by batch."""
    counts: Counter[int] = Counter()
    for batch in pq.ParquetFile(path).iter_batches(columns=["event_timestamp"]):
        values, rows = np.unique(_days(batch.column(0)), return_counts=True)
        counts.update(dict(zip(values.tolist(), rows.tolist(), strict=True)))
    return dict(counts)


def _read_rows(
    path: Path, columns: list[str], shard: Shard, val_from: int, test_from: int
) -> pa.Table:
    """The columns of ``shard``'s rows: the whole file for one process, else streamed.

    The training and validation rows are each numbered in file order, and
    row ``i`` of a split goes to rank ``i % world``.
    """
    if shard.world == 1:
        return pq.read_table(path, columns=columns)
    reader = pq.ParquetFile(path)
    parts, seen = [], np.zeros(2, dtype=np.int64)  # training and validation rows so far
    for batch in reader.iter_batches(columns=columns):
        split = np.searchsorted([val_from, test_from], _days(batch["event_timestamp"]), "right")
        keep = split == 2 if shard.rank == 0 else np.zeros(batch.num_rows, dtype=bool)
        for index in (0, 1):
            mine = split == index
            number = seen[index] + np.cumsum(mine) - 1
            keep[mine] = number[mine] % shard.world == shard.rank
            seen[index] += mine.sum()
        parts.append(batch.filter(pa.array(keep)))
    return pa.Table.from_batches(parts, pa.schema([reader.schema_arrow.field(c) for c in columns]))
