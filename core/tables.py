"""Documented schemas of the parquet tables the stages hand each other.

Every table is validated when written and when read: a missing or mistyped
column raises :class:`TableError` naming the file and the column. Writes are
atomic (a temporary file in the same folder, then a rename), so an interrupted
stage never leaves half a parquet file for the next stage to read.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import feather

from core.errors import UserError

TS = pa.timestamp("us", tz="UTC")


class TableError(UserError, ValueError):
    """A table file is missing, unreadable, or does not match its schema."""


FEATURE_TABLES = (
    "user_stats",
    "author_stats",
    "tweet_content",
    "tweet_engagement",
    "user_author_affinity",
    "user_top_authors",
)
"""The feature tables (Feast's offline store), one parquet file each."""


@dataclass(frozen=True)
class TableSpec:
    """A named table: its file name and its columns, each with a description."""

    name: str
    columns: tuple[tuple[str, pa.DataType, str], ...]
    nullable: frozenset[str] = frozenset()
    """Columns that may hold nulls; every other column must not."""
    ranges: tuple[tuple[str, float | None, float | None], ...] = ()
    """(column, min, max) bounds, inclusive; None leaves a side open."""
    ordered: tuple[tuple[str, str], ...] = ()
    """(earlier, later) column pairs: earlier < later on every row."""

    @property
    def file_name(self) -> str:
        """File name inside a data folder."""
        return f"{self.name}.parquet"

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema, with each column's description as field metadata."""
        return pa.schema([pa.field(n, t, metadata={"description": d}) for n, t, d in self.columns])


USERS = TableSpec(
    "users",
    (
        ("user_id", pa.int64(), "User id, 0..n_users-1."),
        ("created_at", TS, "When the account was created."),
    ),
)
FOLLOWS = TableSpec(
    "follows",
    (
        ("user_id", pa.int64(), "The follower."),
        ("author_id", pa.int64(), "The followee (a user id)."),
    ),
)
TWEETS = TableSpec(
    "tweets",
    (
        ("tweet_id", pa.int64(), "Tweet id, in order of creation."),
        ("author_id", pa.int64(), "The user who posted it."),
        ("topic", pa.int32(), "Topic id, 0..n_topics-1."),
        ("media_type", pa.int32(), "0 text, 1 image, 2 video, 3 link."),
        ("length", pa.int32(), "Text length in characters."),
        ("created_at", TS, "When it was posted."),
    ),
    ranges=(
        ("tweet_id", 0, None),
        ("author_id", 0, None),
        ("topic", 0, None),
        ("media_type", 0, 3),
        ("length", 0, 280),
    ),
)
VISITS = TableSpec(
    "visits",
    (
        ("visit_id", pa.int64(), "Visit id, in order of (user, time)."),
        ("user_id", pa.int64(), "The visiting user."),
        ("visit_time", TS, "When the user opened the feed."),
        ("prev_visit_time", TS, "The user's previous visit (or the world's start)."),
    ),
    ranges=(("visit_id", 0, None), ("user_id", 0, None)),
    ordered=(("prev_visit_time", "visit_time"),),
)
IMPRESSIONS = TableSpec(
    "impressions",
    (
        ("impression_id", pa.int64(), "Impression id."),
        ("visit_id", pa.int64(), "The visit that showed it."),
        ("user_id", pa.int64(), "Who saw it."),
        ("tweet_id", pa.int64(), "What was shown."),
        ("author_id", pa.int64(), "The tweet's author."),
        ("position", pa.int32(), "0-based slot in the feed of that visit."),
        ("impression_time", TS, "When it was shown (the visit's time)."),
        ("like", pa.bool_(), "Label: liked."),
        ("reply", pa.bool_(), "Label: replied."),
        ("retweet", pa.bool_(), "Label: retweeted."),
        ("long_dwell", pa.bool_(), "Label: dwell_seconds >= the long-dwell threshold."),
        ("hide", pa.bool_(), "Label: hidden."),
        ("report", pa.bool_(), "Label: reported."),
        ("dwell_seconds", pa.float32(), "Seconds spent viewing."),
    ),
    ranges=(
        ("impression_id", 0, None),
        ("user_id", 0, None),
        ("tweet_id", 0, None),
        ("position", 0, None),
        ("dwell_seconds", 0, None),
    ),
)
ORACLE = TableSpec(
    "oracle",
    (
        ("impression_id", pa.int64(), "The impression these true probabilities belong to."),
        ("p_like", pa.float32(), "True P(like) at position 0 (no position bias)."),
        ("p_reply", pa.float32(), "True P(reply) at position 0."),
        ("p_retweet", pa.float32(), "True P(retweet) at position 0."),
        ("p_long_dwell", pa.float32(), "True P(long dwell) at position 0."),
        ("p_hide", pa.float32(), "True P(hide) at position 0."),
        ("p_report", pa.float32(), "True P(report) at position 0."),
    ),
    ranges=tuple(
        (f"p_{a}", 0, 1) for a in ("like", "reply", "retweet", "long_dwell", "hide", "report")
    ),
)
EVENTS = TableSpec(
    "events",
    (
        ("event_id", pa.string(), "Unique event id: a retried event keeps its id."),
        ("user_id", pa.int64(), "Who acted."),
        ("tweet_id", pa.int64(), "On which tweet."),
        ("action", pa.string(), "'impression' or one of the actions in core/actions.yaml."),
        ("dwell_seconds", pa.float32(), "Viewing time for impressions; null otherwise."),
        ("timestamp", TS, "When it happened."),
    ),
    nullable=frozenset({"dwell_seconds"}),
    ranges=(("user_id", 0, None), ("tweet_id", 0, None), ("dwell_seconds", 0, None)),
)
SERVED_EVENTS = TableSpec(
    "served_events",
    (
        *EVENTS.columns,
        ("request_id", pa.string(), "The /rank answer that showed the tweet; null if not sent."),
        (
            "propensity",
            pa.float64(),
            "Probability that the serving policy put the tweet in its slot (from /rank); "
            "null if not sent.",
        ),
    ),
    nullable=frozenset({"dwell_seconds", "request_id", "propensity"}),
    ranges=(*EVENTS.ranges, ("propensity", 0, 1)),
)
"""Events as /events logs them: the EVENTS columns plus what ties an impression to its feed."""


def validate(table: pa.Table, spec: TableSpec, path: Path | str) -> pa.Table:
    """Check that ``table`` has every column of ``spec`` with its type.

    Extra columns are dropped, columns are put in the spec's order.

    Raises:
        TableError: naming ``path`` and the first missing or mistyped column.
    """
    for name, dtype, _ in spec.columns:
        if name not in table.column_names:
            raise TableError(f"{path}: missing column '{name}' ({dtype}) of table '{spec.name}'")
        actual = table.schema.field(name).type
        if actual != dtype:
            raise TableError(
                f"{path}: column '{name}' of table '{spec.name}' "
                f"has type {actual}, expected {dtype}"
            )
    table = table.select([n for n, _, _ in spec.columns]).cast(spec.schema)
    _check_values(table, spec, path)
    return table


def _check_values(table: pa.Table, spec: TableSpec, path: Path | str) -> None:
    """Nulls, ranges and time order, each a one-line error naming the column."""
    for name, dtype, _ in spec.columns:
        nulls = table[name].null_count
        if pa.types.is_floating(dtype):  # NaN is a missing value too, not a number to bound
            nulls += pc.sum(pc.is_nan(table[name])).as_py() or 0
        if nulls and name not in spec.nullable:
            raise TableError(f"{path}: column '{name}' has {nulls:,} null or NaN values")
    for name, low, high in spec.ranges:
        if table[name].null_count == table.num_rows:  # empty, or nothing to bound
            continue
        bounds = pc.min_max(table[name])
        if low is not None and bounds["min"].as_py() < low:
            raise TableError(f"{path}: column '{name}' has {bounds['min']} < {low}")
        if high is not None and bounds["max"].as_py() > high:
            raise TableError(f"{path}: column '{name}' has {bounds['max']} > {high}")
    for earlier, later in spec.ordered:
        bad = pc.sum(pc.greater_equal(table[earlier], table[later])).as_py() or 0
        if bad:
            raise TableError(f"{path}: column '{earlier}' is not before '{later}' in {bad:,} rows")


def write_table(table: pa.Table, spec: TableSpec, folder: Path) -> Path:
    """Validate ``table`` and write it atomically to ``folder/<spec>.parquet``."""
    path = folder / spec.file_name
    table = validate(table, spec, path)
    write_parquet_atomic(table, path)
    return path


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; renamed onto ``path`` if the block ends
    normally, removed otherwise (several nest in a ``contextlib.ExitStack``: all or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; data files are shared readable
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write a parquet file through a temporary file and a rename."""
    with replaced_atomically(path) as tmp:
        pq.write_table(table, tmp)


def write_parts(parts: Iterable[pa.Table], path: Path, schema: pa.Schema | None = None) -> int:
    """Stream the tables ``parts``, in order, into the parquet file ``path``; its rows.

    One part is in memory at a time when ``parts`` yields them lazily. The
    file's schema is ``schema``, else the first part's; every part is cast to
    it. ``path`` is written in place: give it :func:`replaced_atomically`'s file.
    """
    parts = iter(parts)
    first = next(parts, None)
    schema = schema if schema is not None else first.schema if first is not None else None
    if schema is None:
        raise ValueError(f"{path}: no parts and no schema to write")
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for table in itertools.chain([] if first is None else [first], parts):
            writer.write_table(table.cast(schema))
            rows += table.num_rows
    return rows


def parts_schema(parts: list[Path]) -> pa.Schema:
    """One schema for the Arrow IPC files ``parts``: theirs, unified with numeric
    promotion (a part whose integer column had a missing value holds it as float64,
    as one concatenation of every part would)."""
    schemas = []
    for part in parts:
        with pa.memory_map(str(part)) as source:
            schemas.append(pa.ipc.open_file(source).schema)
    return pa.unify_schemas(schemas, promote_options="permissive")


def concat_parts(parts: list[Path], spec: TableSpec, folder: Path) -> int:
    """Stream the Arrow IPC files ``parts``, in order, into ``folder/<spec>.parquet``; its rows.

    One part is in memory at a time. Each is validated; the file appears
    (atomically, by rename) only when every part is in.
    """
    path = folder / spec.file_name
    tables = (validate(feather.read_table(part, memory_map=True), spec, path) for part in parts)
    with replaced_atomically(path) as tmp:
        return write_parts(tables, tmp, spec.schema)


def _existing(spec: TableSpec, folder: Path) -> Path:
    path = folder / spec.file_name
    if not path.exists():
        raise TableError(f"{path}: no such file (run the stage that writes '{spec.name}' first)")
    return path


def row_count(spec: TableSpec, folder: Path) -> int:
    """Rows of ``folder/<spec>.parquet``, from its footer (no rows read)."""
    path = _existing(spec, folder)
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"{path}: not a readable parquet file: {exc}") from exc


def read_table(spec: TableSpec, folder: Path) -> pa.Table:
    """Read and validate ``folder/<spec>.parquet``.

    Raises:
        TableError: the file is missing, not parquet, or off-schema.
    """
    path = _existing(spec, folder)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"{path}: not a readable parquet file: {exc}") from exc
    return validate(table, spec, path)


def read_key_range(spec: TableSpec, folder: Path, key: str, lo: int, hi: int) -> pa.Table:
    """The rows of ``folder/<spec>.parquet`` with ``lo <= key < hi``, validated.

    Streams the file batch by batch, so a shard's reader holds about its own
    rows, not the file, and skips the row groups whose ``key`` statistics
    (min, max) lie outside the range: the world writes its impressions by
    blocks of users, so a range of users reads about its share of the file.

    Raises:
        TableError: the file is missing, not parquet, or off-schema (the column
            checks before any row is read; the value checks on the range's rows).
    """
    path = _existing(spec, folder)
    try:
        reader = pq.ParquetFile(path)
        validate(reader.schema_arrow.empty_table(), spec, path)
        names = _names(spec)
        column = reader.metadata.schema.names.index(key)
        groups = [
            group
            for group in range(reader.num_row_groups)
            if _may_hold(reader.metadata.row_group(group).column(column).statistics, lo, hi)
        ]
        batches = []
        for batch in reader.iter_batches(columns=names, row_groups=groups):
            # A null key goes to the range from 0, where the null check then names it.
            keys = pc.fill_null(batch[key], 0).to_numpy()
            batches.append(batch.filter((keys >= lo) & (keys < hi)))
        schema = pa.schema([reader.schema_arrow.field(name) for name in names])
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"{path}: not a readable parquet file: {exc}") from exc
    return validate(pa.Table.from_batches(batches, schema), spec, path)


def _may_hold(stats: pq.Statistics | None, lo: int, hi: int) -> bool:
    """Can a row group with these key statistics hold a key in ``lo..hi-1`` (or a null key,
    which belongs to the range from 0)?"""
    if stats is None or not stats.has_min_max:
        return True
    return (lo == 0 and stats.null_count != 0) or (stats.max >= lo and stats.min < hi)


def read_rows(spec: TableSpec, folder: Path, start: int, stop: int) -> pa.Table:
    """Rows ``start`` to ``stop - 1`` of ``folder/<spec>.parquet``, validated.

    Reads only the row groups that hold them, so a shard's reader holds about
    its own rows, not the file.

    Raises:
        TableError: the file is missing, not parquet, or off-schema (the column
            checks before any row is read; the value checks on these rows).
    """
    path = _existing(spec, folder)
    try:
        reader = pq.ParquetFile(path)
        validate(reader.schema_arrow.empty_table(), spec, path)
        sizes = [reader.metadata.row_group(i).num_rows for i in range(reader.num_row_groups)]
        ends = np.cumsum(sizes)
        stop = min(stop, int(ends[-1]) if sizes else 0)
        if stop <= start:
            return validate(reader.schema_arrow.empty_table().select(_names(spec)), spec, path)
        first = int(np.searchsorted(ends, start, side="right"))
        last = int(np.searchsorted(ends, stop - 1, side="right"))
        table = reader.read_row_groups(range(first, last + 1), columns=_names(spec))
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"{path}: not a readable parquet file: {exc}") from exc
    offset = int(ends[first]) - sizes[first]
    return validate(table.slice(start - offset, stop - start), spec, path)


def _names(spec: TableSpec) -> list[str]:
    return [name for name, _, _ in spec.columns]


def tweet_created(world: Path, tweet_ids: np.ndarray) -> np.ndarray:
    """Creation time (Unix microseconds) of each tweet, for the chronological baseline."""
    tweets = read_table(TWEETS, world)
    created = pd.Series(
        tweets["created_at"].cast("int64").to_numpy(), index=tweets["tweet_id"].to_numpy()
    )
    return created.reindex(tweet_ids).to_numpy()
