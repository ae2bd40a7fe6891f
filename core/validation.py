"""Data validation with pandera: feature tables and the training set, before anything reads them.

pandera (a DataFrame-schema library: typed columns, null rules and checks,
all failures collected at once) rather than more hand-written checks: the
schemas below say, per column, its type, whether it may be null (NaN counts
as null) and its range; per table, that it is not empty, that no daily
snapshot is missing and that its newest row is fresh. A violation raises
:class:`ValidationError` naming the file, the column and the rule, and the
stage that asked writes nothing.

Where it runs: ``feedrank features build`` validates every table before
writing any, ``feedrank features validate`` (a step of its own in train.yml)
and ``feedrank dataset build`` validate the tables on disk, and training
validates the training set before the first epoch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.actions import ActionSet, load_actions
from core.tables import FEATURE_TABLES, TableError

US_PER_DAY = 86_400_000_000
FRESH_DAYS = 1
"""A table's newest row may be at most this many days older than the world's last event."""
MAX_NULL_SHARE = 0.6
"""Share of training rows a joined feature may miss (a pair never seen before, a new user)."""


class ValidationError(TableError):
    """A table breaks a rule of its schema; the message names the file, column and rule."""


def _id() -> pa.Column:
    return pa.Column("int64", pa.Check.ge(0), nullable=False)


def _time() -> pa.Column:
    return pa.Column("datetime64[us, UTC]", nullable=False)


def _count() -> pa.Column:
    return pa.Column("int64", pa.Check.ge(0), nullable=False)


def _rate(high: float = 1.0) -> pa.Column:
    """A smoothed rate: in [0, 1], or [0, ``high``] for actions per impression."""
    return pa.Column("float32", pa.Check.in_range(0.0, high), nullable=False)


def _values() -> pa.Column:
    """A list of non-negative, finite values (topic rates and mixes), none missing."""
    return pa.Column(
        object,
        pa.Check(
            lambda s: s.map(lambda v: v is not None and bool(np.all(np.isfinite(v) & (v >= 0)))),
            name="values_finite_and_non_negative",
        ),
        nullable=False,
    )


def _list_of(rule: str, ok: Callable[[np.ndarray], np.ndarray]) -> pa.Column:
    """A list per row (empty allowed, not missing) whose every element passes ``ok``."""
    return pa.Column(
        object,
        pa.Check(
            lambda s: s.map(lambda v: v is not None and bool(np.all(ok(np.asarray(v))))),
            name=rule,
        ),
        nullable=False,
    )


def _same_lengths(*columns: str) -> pa.Check:
    """A table rule: the list columns of a row have one length."""

    def check(df: pd.DataFrame) -> pd.Series:
        lengths = [df[c].map(lambda v: -1 if v is None else len(v)) for c in columns]
        return pd.concat([lengths[0] == other for other in lengths[1:]], axis=1).all(axis=1)

    return pa.Check(check, name=f"same_length({', '.join(columns)})")


def feature_table_columns(actions: ActionSet | None = None) -> dict[str, dict[str, pa.Column]]:
    """Every feature table's columns and their rules (the action rates from actions.yaml)."""
    actions = actions or load_actions()
    names = actions.names
    per_impression = float(len(actions.positive))  # ua_positive_rate: positive actions each
    return {
        "user_stats": {
            "user_id": _id(),
            "event_timestamp": _time(),
            "user_impressions_7d": _count(),
            **{f"user_{a}_rate_7d": _rate() for a in names},
            "user_mean_dwell_7d": pa.Column("float32", pa.Check.ge(0.0), nullable=False),
            "user_impressions_all": _count(),
            **{f"user_{a}_rate_all": _rate() for a in names},
            "user_topic_rates": _values(),
            "user_follow_topics": _values(),
        },
        "author_stats": {
            "author_id": _id(),
            "event_timestamp": _time(),
            "author_followers": _count(),
            "author_tweets_7d": _count(),
            "author_impressions_7d": _count(),
            **{f"author_{a}_rate_7d": _rate() for a in names},
            "author_impressions_all": _count(),
            **{f"author_{a}_rate_all": _rate() for a in names},
            "author_topic_mix": _values(),
        },
        "tweet_content": {
            "tweet_id": _id(),
            "event_timestamp": _time(),
            "tweet_topic": _count(),
            "tweet_media_type": _count(),
            "tweet_length": pa.Column("int64", pa.Check.in_range(1, 10_000), nullable=False),
            "tweet_created_s": _count(),
        },
        "tweet_engagement": {
            "tweet_id": _id(),
            "event_timestamp": _time(),
            "tweet_impressions": _count(),
            **{f"tweet_{a}_count": _count() for a in names},
        },
        "user_author_affinity": {
            "user_id": _id(),
            "author_id": _id(),
            "event_timestamp": _time(),
            "ua_impressions": _count(),
            "ua_positive_rate": _rate(per_impression),
            "ua_negative_count": _count(),
        },
        "user_top_authors": {
            "user_id": _id(),
            "event_timestamp": _time(),
            "top_author_ids": _list_of("ids_non_negative", lambda v: v >= 0),
            "top_author_impressions": _list_of("counts_non_negative", lambda v: v >= 0),
            "top_author_positive_rate": _list_of(
                f"rates_in_0_{per_impression:g}", lambda v: (v >= 0) & (v <= per_impression)
            ),
            "top_author_negative_count": _list_of("counts_non_negative", lambda v: v >= 0),
        },
    }


DAILY_SNAPSHOTS = frozenset(
    {"user_stats", "author_stats", "user_author_affinity", "user_top_authors"}
)
"""Tables written once per day boundary: every day between the first and last has rows."""


@dataclass(frozen=True)
class TableSummary:
    """What a feature table's own rules read: its rows, newest time and days with rows.

    ``a + b`` summarises both parts together, so a table written part by part
    is checked as a whole (:func:`check_table_rules`) without being held whole.
    """

    rows: int = 0
    newest_us: int | None = None
    days: frozenset[int] = frozenset()

    @classmethod
    def of(cls, table: pd.DataFrame | pa_arrow.Table) -> TableSummary:
        """The summary of one table (or part)."""
        if isinstance(table, pd.DataFrame):
            table = pa_arrow.Table.from_pandas(table[["event_timestamp"]], preserve_index=False)
        if table.num_rows == 0:
            return cls()
        times = table["event_timestamp"].cast(pa_arrow.int64()).to_numpy()
        return cls(table.num_rows, int(times.max()), frozenset(np.unique(times // US_PER_DAY)))

    def __add__(self, other: TableSummary) -> TableSummary:
        newest = [t for t in (self.newest_us, other.newest_us) if t is not None]
        return TableSummary(
            self.rows + other.rows, max(newest, default=None), self.days | other.days
        )


def _table_rules(name: str, last_event_us: int) -> dict[str, Callable[[TableSummary], bool]]:
    """Feature table ``name``'s rules of the whole table, by name."""
    fresh_from = last_event_us - FRESH_DAYS * US_PER_DAY
    stamp = pd.Timestamp(fresh_from, unit="us", tz="UTC")
    rules: dict[str, Callable[[TableSummary], bool]] = {
        "not_empty": lambda t: t.rows > 0,
        f"fresh (newest row on or after {stamp:%Y-%m-%d %H:%M})": lambda t: (
            t.newest_us is None or t.newest_us >= fresh_from
        ),
    }
    if name in DAILY_SNAPSHOTS:
        rules["no_missing_daily_snapshot"] = lambda t: (
            not t.days or len(t.days) == max(t.days) - min(t.days) + 1
        )
    return rules


def check_table_rules(
    summary: TableSummary, name: str, path: Path | str, last_event_us: int
) -> None:
    """Raise :class:`ValidationError` if feature table ``name`` (as ``summary``) breaks a
    rule of the whole table: not empty, fresh, no missing daily snapshot."""
    failed = [
        rule for rule, holds in _table_rules(name, last_event_us).items() if not holds(summary)
    ]
    if failed:
        more = f"; {len(failed) - 1} other failure(s)" if len(failed) > 1 else ""
        raise ValidationError(f"{path}: table rule {failed[0]} failed{more}")


def feature_schema(name: str, actions: ActionSet | None = None) -> pa.DataFrameSchema:
    """The row rules of feature table ``name``: its columns, types, nulls and ranges, which
    hold part by part (the table's own rules: :func:`check_table_rules`)."""
    checks = []
    if name == "user_top_authors":
        checks.append(
            _same_lengths(
                "top_author_ids",
                "top_author_impressions",
                "top_author_positive_rate",
                "top_author_negative_count",
            )
        )
    return pa.DataFrameSchema(
        feature_table_columns(actions)[name], checks=checks, strict=True, name=name
    )


_COLUMN_SET_RULES = {
    "column_in_dataframe": "missing from the file",
    "column_in_schema": "not in the schema",
}
"""Pandera's table rules about which columns there are, and what each failure means."""


def _raise(path: Path | str, errors: pa.errors.SchemaErrors) -> None:
    """One line: the first failing column (or table rule), how often, an example value."""
    cases = errors.failure_cases
    first = cases.iloc[0]
    more = ""
    if first["schema_context"] == "DataFrameSchema":  # a rule of the whole table
        others = len(cases) - 1
        more = f"; {others} other failure(s)" if others else ""
        if first["check"] in _COLUMN_SET_RULES:  # the failure case is the column's name
            raise ValidationError(
                f"{path}: column '{first['failure_case']}': rule {first['check']} failed "
                f"({_COLUMN_SET_RULES[first['check']]}){more}"
            ) from None
        raise ValidationError(f"{path}: table rule {first['check']} failed{more}") from None
    same = cases[(cases["column"] == first["column"]) & (cases["check"] == first["check"])]
    if len(cases) > len(same):
        more = f"; {len(cases) - len(same)} other failure(s)"
    raise ValidationError(
        f"{path}: column '{first['column']}': rule {first['check']} failed in {len(same)} row(s)"
        f" (e.g. {str(first['failure_case'])[:60]}){more}"
    ) from None


def validate_feature_part(
    frame: pd.DataFrame | pa_arrow.Table,
    name: str,
    path: Path | str,
    actions: ActionSet | None = None,
) -> None:
    """Raise :class:`ValidationError` unless every row of ``frame``, a part of feature table
    ``name``, meets the table's row rules (:func:`feature_schema`)."""
    if isinstance(frame, pa_arrow.Table):
        frame = frame.to_pandas()
    try:
        feature_schema(name, actions).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        _raise(path, errors)


def validate_feature_table(
    frame: pd.DataFrame | pa_arrow.Table,
    name: str,
    path: Path | str,
    last_event_us: int,
    actions: ActionSet | None = None,
) -> None:
    """Raise :class:`ValidationError` unless ``frame`` meets feature table ``name``'s schema:
    its row rules, then the rules of the whole table."""
    validate_feature_part(frame, name, path, actions)
    check_table_rules(TableSummary.of(frame), name, path, last_event_us)


def world_last_event_us(world: Path) -> int:
    """The world's last impression time (freshness is measured from it)."""
    path = world / "impressions.parquet"
    try:
        times = pq.read_table(path, columns=["impression_time"])["impression_time"]
    except (FileNotFoundError, pa_arrow.ArrowException, OSError) as exc:
        raise TableError(f"{path}: cannot read impression_time: {exc}") from None
    latest = pc.max(times.cast(pa_arrow.int64())).as_py()
    if latest is None:
        raise TableError(f"{path}: no impressions")
    return int(latest)


ROW_COUNTS_FILE = "_rows.json"
"""Written by ``features build`` beside the tables: their rows, and the world they came from."""
MAX_ROW_DROP = 0.5
"""A table may hold at most this share fewer rows than the last build on the same world."""


def world_key(world: Path) -> str:
    """Which world the tables come from: the digest of its ``world.json`` (its config)."""
    path = world / "world.json"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise TableError(f"{path}: cannot read the world's config: {exc}") from None


def check_row_counts(folder: Path, key: str, rows: Mapping[str, int]) -> None:
    """Raise :class:`ValidationError` if a table lost more than MAX_ROW_DROP of the rows the
    last build on the same world wrote (a dropped partition, a truncated file)."""
    path = folder / ROW_COUNTS_FILE
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # a first build, or a workspace from before row counts were kept
    if previous.get("world") != key:
        return  # another world: its sizes say nothing about this one
    for name, count in rows.items():
        before = int(previous.get("rows", {}).get(name, 0))
        if count < before * (1 - MAX_ROW_DROP):
            raise ValidationError(
                f"{folder / f'{name}.parquet'}: table rule row_count failed: {count:,} rows, "
                f"{before:,} in the last build on this world (more than "
                f"{MAX_ROW_DROP:.0%} fewer)"
            )


def record_row_counts(folder: Path, key: str, rows: Mapping[str, int]) -> None:
    """Keep what this build wrote, for :func:`check_row_counts` next time."""
    (folder / ROW_COUNTS_FILE).write_text(json.dumps({"world": key, "rows": dict(rows)}))


def validate_feature_files(
    folder: Path, last_event_us: int, actions: ActionSet | None = None, key: str | None = None
) -> dict[str, int]:
    """Validate every feature table in ``folder``; returns the rows of each.

    With ``key`` (:func:`world_key`), the row counts are also checked against
    what the last build on that world wrote.
    """
    rows = {}
    for name in FEATURE_TABLES:
        path = folder / f"{name}.parquet"
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            raise TableError(f"{path}: no such file (run `feedrank features build`)") from None
        except (pa_arrow.ArrowException, OSError) as exc:
            raise TableError(f"{path}: not a readable parquet file: {exc}") from exc
        validate_feature_table(table, name, path, last_event_us, actions)
        rows[name] = table.num_rows
    if key is not None:
        check_row_counts(folder, key, rows)
    return rows


def validate_training_set(
    frame: pd.DataFrame,
    path: Path | str,
    features: Sequence[str],
    labels: Sequence[str],
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> None:
    """Labels present and boolean, features numeric and not missing too often, rates in range."""
    null_share = pa.Check(
        lambda s: s.isna().mean() <= MAX_NULL_SHARE, name=f"null_share<={MAX_NULL_SHARE}"
    )
    columns: dict[str, pa.Column] = {label: pa.Column(bool, nullable=False) for label in labels}
    for name in features:
        checks = [null_share, pa.Check(pd.api.types.is_numeric_dtype, name="numeric")]
        if ranges and name in ranges:
            low, high = ranges[name]
            checks.append(pa.Check.in_range(low, high, ignore_na=True))
        columns[name] = pa.Column(checks=checks, nullable=True)
    schema = pa.DataFrameSchema(
        columns, checks=[pa.Check(lambda df: len(df) > 0, name="not_empty")], name="training_set"
    )
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        _raise(path, errors)


def rate_ranges(actions: ActionSet | None = None) -> dict[str, tuple[float, float]]:
    """The rate columns of the feature tables and their ranges (kept in the training set):
    [0, 1], and [0, the number of positive actions] for ``ua_positive_rate``."""
    actions = actions or load_actions()
    ranges = {
        column: (0.0, 1.0)
        for table in feature_table_columns(actions).values()
        for column in table
        if column.endswith(("_rate_7d", "_rate_all"))
    }
    return ranges | {"ua_positive_rate": (0.0, float(len(actions.positive)))}
