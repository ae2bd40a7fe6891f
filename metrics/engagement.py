"""Weighted engagement per user: the business metric, computed over the event log.

The metric (DESIGN.md, "The business metric"): count each action, multiply the
counts by the action weights from ``core/actions.yaml``, sum, and divide by
the number of users so that periods and cohorts of different size compare.

:func:`weighted_score` is the one definition of "counts to score"; serving and
training import it too. Everything else here counts events: DuckDB scans the
log (an Arrow table in place, or parquet files directly) in one aggregation
pass to per-user counts, rolls those up per period and cohort, and
:func:`weighted_score` turns the totals into scores. The SQL is standard SQL
over named relations, so the same text runs on Spark SQL or BigQuery when the
log outgrows one machine (docs/metrics.md).
"""

from __future__ import annotations

import glob
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar, cast

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.actions import IMPRESSION, ActionSet, load_actions
from core.errors import UserError
from core.tables import EVENTS, TS, TableError, validate

Denominator: TypeAlias = Literal["active", "exposed"]
"""Who a per-user figure is divided by.

``active``: users with at least one event of any kind (impressions included) in
the period. ``exposed``: users with at least one impression in the period.
"""

Granularity: TypeAlias = Literal["day", "week", "all"]
"""One report row per UTC day, per ISO week (Monday 00:00 UTC), or one for the range."""

EventSource: TypeAlias = pa.Table | str | os.PathLike[str]
"""An events table in memory, or a parquet file, a data folder, or a glob of files."""

CohortAssignment: TypeAlias = pa.Table | Callable[[npt.NDArray[np.int64]], npt.ArrayLike]
"""Who is in which cohort: a table (``user_id`` int64, ``cohort`` string), or a
function from an array of user ids to an array of cohort names (for example
:meth:`metrics.ab.Experiment.assign`)."""

CountT = TypeVar("CountT", float, npt.NDArray[Any])

COHORTS_SCHEMA = pa.schema([("user_id", pa.int64()), ("cohort", pa.string())])

_STEP = {"day": timedelta(days=1), "week": timedelta(weeks=1)}

# Every statement is a plain standard-SQL SELECT over named relations:
# ``events`` (the log), ``periods`` (period_id, period_start, period_end),
# ``period_days`` (day, period_id), ``cohorts`` (user_id, cohort) and
# ``user_action_counts`` (the first query's result, materialised). The same
# text runs on Spark SQL or BigQuery with those relations registered there and
# the session time zone set to UTC (docs/metrics.md).

# The one pass over the raw log: drop retried copies of an event (same
# event_id), keep the periods' range, find each event's period through its
# UTC date (an equi-join on a small table: its cost does not grow with the
# number of periods, unlike a range join), and count per (period, user, action).
# Everything else reads this result, which is several times smaller.
_USER_ACTION_COUNTS_SQL = """
SELECT d.period_id, e.user_id, e.action,
       COUNT(*) AS events,
       SUM(e.dwell_seconds) AS dwell_seconds
FROM (
    SELECT event_id,
           MIN(user_id) AS user_id,
           MIN(action) AS action,
           MIN(dwell_seconds) AS dwell_seconds,
           MIN(timestamp) AS event_time
    FROM events
    WHERE timestamp >= (SELECT MIN(period_start) FROM periods)
      AND timestamp < (SELECT MAX(period_end) FROM periods)
    GROUP BY event_id
) AS e
JOIN period_days AS d ON d.day = CAST(e.event_time AS DATE)
GROUP BY d.period_id, e.user_id, e.action
"""

_ACTIONS_SEEN_SQL = "SELECT DISTINCT action FROM user_action_counts"

_USERS_SEEN_SQL = "SELECT DISTINCT user_id FROM user_action_counts"

# Per (period, cohort, action): events and dwell time.
_ACTION_TOTALS_SQL = """
SELECT u.period_id, c.cohort, u.action,
       CAST(SUM(u.events) AS BIGINT) AS events,
       SUM(u.dwell_seconds) AS dwell_seconds
FROM user_action_counts AS u
LEFT JOIN cohorts AS c ON c.user_id = u.user_id
GROUP BY u.period_id, c.cohort, u.action
"""

# Per (period, cohort): users with any event, and users with an impression.
_USER_TOTALS_SQL = """
SELECT pu.period_id, c.cohort,
       COUNT(*) AS active_users,
       CAST(SUM(pu.exposed) AS BIGINT) AS exposed_users
FROM (
    SELECT period_id, user_id,
           MAX(CASE WHEN action = 'impression' THEN 1 ELSE 0 END) AS exposed
    FROM user_action_counts
    GROUP BY period_id, user_id
) AS pu
LEFT JOIN cohorts AS c ON c.user_id = pu.user_id
GROUP BY pu.period_id, c.cohort
"""

# Per (user, action) with the user's cohort: the rows of an A/B comparison.
_PER_USER_SQL = """
SELECT c.cohort, u.user_id, u.action, u.events, u.dwell_seconds
FROM user_action_counts AS u
LEFT JOIN cohorts AS c ON c.user_id = u.user_id
"""


class UnknownActionError(UserError, ValueError):
    """An event or a count names an action that ``actions.yaml`` does not define."""


def weighted_score(counts: Mapping[str, CountT], actions: ActionSet | None = None) -> CountT:
    """Weighted engagement of some action counts: sum of count x weight.

    The one definition of the metric. Counts may be plain numbers (a period's
    totals), arrays (one entry per user, or per candidate tweet when serving
    passes predicted probabilities) or a mix; actions missing from ``counts``
    count as zero, and ``impression`` is accepted with weight 0 because being
    shown a tweet is exposure, not engagement.

    Args:
        counts: action name to its count (or expected count).
        actions: the action weights; default ``core/actions.yaml``.

    Returns:
        The weighted score, a number or an array shaped like the counts.

    Raises:
        UnknownActionError: a key is neither an action nor ``impression``.
    """
    actions = actions if actions is not None else load_actions()
    unknown = sorted(set(counts) - set(actions.names) - {IMPRESSION})
    if unknown:
        raise UnknownActionError(
            f"unknown action(s) {', '.join(map(repr, unknown))}; "
            f"known: {IMPRESSION}, {', '.join(actions.names)}"
        )
    total: Any = 0.0
    for name, weight in zip(actions.names, actions.weights, strict=True):
        if name in counts:
            total = total + weight * counts[name]
    return cast(CountT, total)


@dataclass(frozen=True)
class Period:
    """A half-open time range ``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", as_utc(self.start))
        object.__setattr__(self, "end", as_utc(self.end))
        if self.end <= self.start:
            raise ValueError(f"period end {self.end} is not after its start {self.start}")


def as_utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken to be UTC already.

    The event log is in UTC, so a date typed on the command line without a
    zone means UTC rather than the machine's local time.
    """
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def period_buckets(start: datetime, end: datetime, granularity: Granularity) -> tuple[Period, ...]:
    """Split ``[start, end)`` into report periods.

    Days start at 00:00 UTC and weeks on Monday 00:00 UTC (ISO weeks), so two
    reports over overlapping ranges share their bucket boundaries. The first
    and last buckets are clipped to the range: a report never counts events
    outside what was asked for, and each row states the range it covers.

    Args:
        start: first instant included.
        end: first instant excluded.
        granularity: ``day``, ``week`` or ``all`` (a single period).

    Returns:
        The periods in time order; empty when ``end <= start``.
    """
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        return ()
    if granularity == "all":
        return (Period(start, end),)
    boundary = bucket_start(start, granularity)
    buckets = []
    while boundary < end:
        buckets.append(Period(max(boundary, start), min(boundary + _STEP[granularity], end)))
        boundary += _STEP[granularity]
    return tuple(buckets)


def bucket_start(moment: datetime, granularity: Literal["day", "week"]) -> datetime:
    """The start of the UTC day, or of the ISO week (Monday), that ``moment`` falls in."""
    day = as_utc(moment).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday()) if granularity == "week" else day


@dataclass(frozen=True)
class CohortEngagement:  # pylint: disable=too-many-instance-attributes  # one report row
    """Weighted engagement of one cohort in one period: one report row.

    Per-user and per-impression figures are ``None`` when their denominator
    is zero, and ``note`` says why, so that an empty period reads as "no
    users" instead of a misleading 0.
    """

    period: Period
    cohort: str | None
    """The cohort; ``None`` for all users when the report has no cohorts, or
    for users the cohort assignment does not cover."""
    denominator: Denominator
    users: int
    """The denominator's user count (``active_users`` or ``exposed_users``)."""
    active_users: int
    exposed_users: int
    impressions: int
    dwell_seconds: float
    counts: Mapping[str, int]
    """Events per action, in ``actions.yaml`` order (impressions excluded)."""
    impacts: Mapping[str, float]
    """Weighted impact per action: count x weight."""
    score: float
    """Sum of the weighted impacts."""
    score_per_user: float | None
    score_per_1000_impressions: float | None
    negative_actions_per_user: float | None
    """Events of negative-weight actions (hide, report) per user."""
    dwell_seconds_per_user: float | None
    note: str = ""

    @classmethod
    def from_totals(
        cls,
        period: Period,
        cohort: str | None,
        totals: _Totals,
        denominator: Denominator,
        actions: ActionSet,
    ) -> CohortEngagement:
        """Derive the scores and the per-user figures from raw totals."""
        counts = {name: totals.events.get(name, 0) for name in actions.names}
        users = totals.active_users if denominator == "active" else totals.exposed_users
        impressions = totals.events.get(IMPRESSION, 0)
        impacts = {name: float(weighted_score({name: counts[name]}, actions)) for name in counts}
        score = float(weighted_score(counts, actions))
        negative = sum(counts[name] for name in actions.negative)
        notes = []
        if users == 0:
            notes.append(f"no {denominator} users: per-user figures undefined")
        if impressions == 0:
            notes.append("no impressions: score per 1000 impressions undefined")
        return cls(
            period=period,
            cohort=cohort,
            denominator=denominator,
            users=users,
            active_users=totals.active_users,
            exposed_users=totals.exposed_users,
            impressions=impressions,
            dwell_seconds=totals.dwell_seconds,
            counts=counts,
            impacts=impacts,
            score=score,
            score_per_user=_ratio(score, users),
            score_per_1000_impressions=_ratio(1000.0 * score, impressions),
            negative_actions_per_user=_ratio(negative, users),
            dwell_seconds_per_user=_ratio(totals.dwell_seconds, users),
            note="; ".join(notes),
        )


@dataclass
class _Totals:
    """Raw sums for one (period, cohort), as the SQL returns them."""

    events: dict[str, int] = field(default_factory=dict)
    dwell_seconds: float = 0.0
    active_users: int = 0
    exposed_users: int = 0


def _ratio(numerator: float, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


_PER_USER_COLUMNS = [
    "score_per_user",
    "score_per_1000_impressions",
    "negative_actions_per_user",
    "dwell_seconds_per_user",
]


@dataclass(frozen=True)
class EngagementReport:
    """Weighted engagement per period (and cohort): :func:`engagement_report`'s result."""

    denominator: Denominator
    actions: tuple[str, ...]
    rows: tuple[CohortEngagement, ...]
    """In period order, then cohort order (``None`` last)."""

    def to_frame(self) -> pd.DataFrame:
        """One row per (period, cohort), with flat columns for a table, CSV or JSON.

        Columns: ``period_start``, ``period_end``, ``cohort``, ``denominator``,
        ``users``, ``active_users``, ``exposed_users``, ``impressions``,
        ``dwell_seconds``, ``score``, ``score_per_user``, ``score_per_1000_impressions``,
        ``negative_actions_per_user``, ``dwell_seconds_per_user``, then
        ``count_<action>`` and ``impact_<action>`` for each action, and ``note``.
        Undefined figures are NaN.
        """
        records = [
            {
                "period_start": row.period.start,
                "period_end": row.period.end,
                "cohort": row.cohort,
                "denominator": row.denominator,
                "users": row.users,
                "active_users": row.active_users,
                "exposed_users": row.exposed_users,
                "impressions": row.impressions,
                "dwell_seconds": row.dwell_seconds,
                "score": row.score,
                "score_per_user": row.score_per_user,
                "score_per_1000_impressions": row.score_per_1000_impressions,
                "negative_actions_per_user": row.negative_actions_per_user,
                "dwell_seconds_per_user": row.dwell_seconds_per_user,
                **{f"count_{name}": row.counts[name] for name in self.actions},
                **{f"impact_{name}": row.impacts[name] for name in self.actions},
                "note": row.note,
            }
            for row in self.rows
        ]
        columns = [
            "period_start",
            "period_end",
            "cohort",
            "denominator",
            "users",
            "active_users",
            "exposed_users",
            "impressions",
            "dwell_seconds",
            "score",
            *_PER_USER_COLUMNS,
            *(f"count_{name}" for name in self.actions),
            *(f"impact_{name}" for name in self.actions),
            "note",
        ]
        frame = pd.DataFrame.from_records(records, columns=columns)
        frame[_PER_USER_COLUMNS] = frame[_PER_USER_COLUMNS].astype("float64")
        return frame


def engagement_report(
    events: EventSource,
    *,
    granularity: Granularity = "all",
    start: datetime | None = None,
    end: datetime | None = None,
    cohorts: CohortAssignment | None = None,
    denominator: Denominator = "active",
    actions: ActionSet | None = None,
) -> EngagementReport:
    """Weighted engagement per period, and per cohort when ``cohorts`` is given.

    Every period gets a row for each cohort seen in the range (or one row for
    all users), with zeros when it had no events, so a quiet day shows up as
    a quiet day instead of a gap. Retried events (same ``event_id``) count once.

    Args:
        events: the event log (``core.tables.EVENTS`` schema).
        granularity: one row per ``day``, ``week``, or ``all`` of the range.
        start: first instant included; default the first event's time.
        end: first instant excluded; default just after the last event.
        cohorts: who is in which cohort; ``None`` reports all users together.
        denominator: divide per-user figures by ``active`` or ``exposed`` users.
        actions: the action weights; default ``core/actions.yaml``.

    Returns:
        The report; it has no rows only when the range is empty.

    Raises:
        TableError: the log is missing, unreadable or off-schema (names the file).
        UnknownActionError: events in the range name undefined actions.
    """
    actions = actions if actions is not None else load_actions()
    with _event_log(events) as (con, label):
        periods = period_buckets(*_resolve_range(con, label, start, end, granularity), granularity)
        cohort_names = _count_per_user(con, label, periods, cohorts, actions)
        with _reading(label):
            action_totals = con.sql(_ACTION_TOTALS_SQL).to_arrow_table().to_pylist()
            user_totals = con.sql(_USER_TOTALS_SQL).to_arrow_table().to_pylist()

    totals: defaultdict[tuple[int, str | None], _Totals] = defaultdict(_Totals)
    for row in action_totals:
        entry = totals[row["period_id"], row["cohort"]]
        entry.events[row["action"]] = row["events"]
        entry.dwell_seconds += row["dwell_seconds"] or 0.0
    for row in user_totals:
        entry = totals[row["period_id"], row["cohort"]]
        entry.active_users = row["active_users"]
        entry.exposed_users = row["exposed_users"]

    ordered: list[str | None] = list(cohort_names)
    if not ordered or any(cohort is None for _, cohort in totals):
        ordered.append(None)
    rows = tuple(
        CohortEngagement.from_totals(
            period, cohort, totals.get((period_id, cohort), _Totals()), denominator, actions
        )
        for period_id, period in enumerate(periods)
        for cohort in ordered
    )
    return EngagementReport(denominator=denominator, actions=actions.names, rows=rows)


@dataclass(frozen=True)
class UserActions:
    """Per-user event counts over a range: the unit of an A/B comparison.

    One entry per user with at least one event in the range, in ``user_id``
    order. Users who were shown tweets but did nothing are here with zero
    action counts: they belong in the denominator of a per-user mean.
    """

    user_id: npt.NDArray[np.int64]
    cohort: npt.NDArray[np.object_]
    """Each user's cohort name, or ``None`` when the assignment does not cover them."""
    counts: Mapping[str, npt.NDArray[np.int64]]
    """Per action, and for ``impression``: events per user."""
    dwell_seconds: npt.NDArray[np.float64]
    period: Period | None
    """The range counted; ``None`` when it was empty."""

    def scores(self, actions: ActionSet | None = None) -> npt.NDArray[np.float64]:
        """Weighted engagement of each user: :func:`weighted_score` on the per-user counts."""
        return np.asarray(weighted_score(dict(self.counts), actions), dtype=np.float64)


def user_actions(
    events: EventSource,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    cohorts: CohortAssignment | None = None,
    actions: ActionSet | None = None,
) -> UserActions:
    """Count every user's events per action over ``[start, end)``.

    Args:
        events: the event log (``core.tables.EVENTS`` schema).
        start: first instant included; default the first event's time.
        end: first instant excluded; default just after the last event.
        cohorts: who is in which cohort; ``None`` leaves every cohort ``None``.
        actions: the action definitions; default ``core/actions.yaml``.

    Raises:
        TableError: the log is missing, unreadable or off-schema (names the file).
        UnknownActionError: events in the range name undefined actions.
    """
    actions = actions if actions is not None else load_actions()
    with _event_log(events) as (con, label):
        periods = period_buckets(*_resolve_range(con, label, start, end, "all"), "all")
        _count_per_user(con, label, periods, cohorts, actions)
        with _reading(label):
            result = con.sql(_PER_USER_SQL).to_arrow_table()

    kinds = (IMPRESSION, *actions.names)
    user_ids, user_index = np.unique(
        result.column("user_id").to_numpy(zero_copy_only=False), return_inverse=True
    )
    encoded = result.column("action").combine_chunks().dictionary_encode()
    kind_of_code = np.array([kinds.index(a) for a in encoded.dictionary.to_pylist()], np.int64)
    kind_index = kind_of_code[encoded.indices.to_numpy(zero_copy_only=False)]
    cells = np.bincount(
        user_index * len(kinds) + kind_index,
        weights=result.column("events").to_numpy(zero_copy_only=False),
        minlength=len(user_ids) * len(kinds),
    ).reshape(len(user_ids), len(kinds))
    dwell = np.bincount(
        user_index,
        weights=result.column("dwell_seconds").fill_null(0.0).to_numpy(zero_copy_only=False),
        minlength=len(user_ids),
    ).astype(np.float64)
    cohort = np.empty(len(user_ids), dtype=object)
    cohort[user_index] = result.column("cohort").to_numpy(zero_copy_only=False)
    return UserActions(
        user_id=user_ids.astype(np.int64),
        cohort=cohort,
        counts={kind: cells[:, j].astype(np.int64) for j, kind in enumerate(kinds)},
        dwell_seconds=dwell,
        period=periods[0] if periods else None,
    )


def validate_cohorts(table: pa.Table) -> pa.Table:
    """Check a cohort table (``user_id`` int64, ``cohort`` string) with one row per user.

    Raises:
        ValueError: naming the missing or mistyped column, or a repeated user.
    """
    for name in COHORTS_SCHEMA.names:
        if name not in table.column_names:
            raise ValueError(f"cohort table: missing column '{name}'")
    try:
        table = table.select(COHORTS_SCHEMA.names).cast(COHORTS_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"cohort table: columns must be {COHORTS_SCHEMA}: {exc}") from exc
    if len(table.column("user_id").unique()) != table.num_rows:
        raise ValueError("cohort table: a user_id appears more than once")
    return table


@contextmanager
def _event_log(events: EventSource) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
    """A DuckDB connection with the validated log as relation ``events``, and its label.

    An Arrow table is scanned in place (zero copy); parquet files are read by
    DuckDB directly, only the columns the SQL needs, without a Python copy.
    """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        if isinstance(events, pa.Table):
            label = "events table"
            con.register("events", validate(events, EVENTS, label))
        else:
            label = str(events)
            files = _parquet_files(events)
            with _reading(label):
                con.read_parquet(files).create_view("events")
        yield con, label
    finally:
        con.close()


@contextmanager
def _reading(label: str) -> Iterator[None]:
    """Turn a DuckDB failure (a corrupt page, a bad file) into a TableError naming the log."""
    try:
        yield
    except duckdb.Error as exc:
        raise TableError(f"{label}: cannot read events: {exc}") from exc


def _parquet_files(source: str | os.PathLike[str]) -> list[str]:
    """The parquet files behind a path, folder or glob, each checked against EVENTS.

    Reading the footers first means a missing or mistyped column is reported
    with the file's name before any data is scanned.
    """
    path = Path(source)
    if path.is_dir():
        path = path / EVENTS.file_name
    if glob.has_magic(str(path)):
        files = sorted(glob.glob(str(path)))
        if not files:
            raise TableError(f"{path}: no files match")
    elif path.is_file():
        files = [str(path)]
    else:
        raise TableError(f"{path}: no such file")
    for file in files:
        try:
            schema = pq.read_schema(file)
        except (pa.ArrowException, OSError) as exc:
            raise TableError(f"{file}: not a readable parquet file: {exc}") from exc
        validate(schema.empty_table(), EVENTS, file)
    return files


def _resolve_range(
    con: duckdb.DuckDBPyConnection,
    label: str,
    start: datetime | None,
    end: datetime | None,
    granularity: Granularity,
) -> tuple[datetime, datetime]:
    """Fill a missing bound from the log.

    A missing start is the first event (rounded down to its day or week), a
    missing end just after the last event (rounded up), so a daily report of
    a whole log has whole days. An empty log with a missing bound gives an
    empty range, a report with no rows: there is no period to speak of.
    """
    if start is not None and end is not None:
        return start, end
    with _reading(label):
        first, last = con.execute("SELECT MIN(timestamp), MAX(timestamp) FROM events").fetchall()[0]
    if first is None:
        anchor = start or end or datetime.fromtimestamp(0, UTC)
        return anchor, anchor
    if granularity == "all":
        return start or first, end or last + timedelta(microseconds=1)
    return (
        start or bucket_start(first, granularity),
        end or bucket_start(last, granularity) + _STEP[granularity],
    )


def _count_per_user(
    con: duckdb.DuckDBPyConnection,
    label: str,
    periods: tuple[Period, ...],
    cohorts: CohortAssignment | None,
    actions: ActionSet,
) -> tuple[str, ...]:
    """Build ``user_action_counts``, check its actions, and register ``cohorts``.

    Returns:
        The cohort names, sorted.

    Raises:
        UnknownActionError: an event in the periods names an undefined action.
    """
    con.register(
        "periods",
        pa.table(
            {
                "period_id": pa.array(range(len(periods)), pa.int32()),
                "period_start": pa.array([p.start for p in periods], TS),
                "period_end": pa.array([p.end for p in periods], TS),
            }
        ),
    )
    con.register("period_days", _period_days(periods))
    with _reading(label):
        con.sql(_USER_ACTION_COUNTS_SQL).create("user_action_counts")
        _check_actions(con.sql(_ACTIONS_SEEN_SQL).to_arrow_table().column("action"), actions, label)
        if cohorts is None:
            table = COHORTS_SCHEMA.empty_table()
        elif isinstance(cohorts, pa.Table):
            table = validate_cohorts(cohorts)
        else:
            users = con.sql(_USERS_SEEN_SQL).to_arrow_table().column("user_id")
            user_ids = users.to_numpy(zero_copy_only=False).astype(np.int64)
            names = pa.array(np.asarray(cohorts(user_ids)).astype(str), pa.string())
            table = pa.table({"user_id": user_ids, "cohort": names}, schema=COHORTS_SCHEMA)
    con.register("cohorts", table)
    return tuple(sorted(table.column("cohort").drop_null().unique().to_pylist()))


def _period_days(periods: tuple[Period, ...]) -> pa.Table:
    """Each UTC date the periods cover, with the period it belongs to.

    Periods from :func:`period_buckets` only change at midnight UTC (or at the
    range's own start and end, which the range filter enforces), so a date
    belongs to exactly one period.
    """
    day_period: dict[date, int] = {}
    for period_id, period in enumerate(periods):
        day = period.start.date()
        while day <= (period.end - timedelta(microseconds=1)).date():
            if day_period.setdefault(day, period_id) != period_id:
                raise ValueError(f"{day} falls in more than one period: periods must split at 0:00")
            day += timedelta(days=1)
    return pa.table(
        {
            "day": pa.array(list(day_period), pa.date32()),
            "period_id": pa.array(list(day_period.values()), pa.int32()),
        }
    )


def _check_actions(found: pa.ChunkedArray, actions: ActionSet, label: str) -> None:
    """Raise when an event names an action that ``actions.yaml`` does not define."""
    unknown = sorted(map(repr, set(found.unique().to_pylist()) - {IMPRESSION, *actions.names}))
    if unknown:
        raise UnknownActionError(
            f"{label}: events with unknown action(s) {', '.join(unknown)}; "
            f"known: {IMPRESSION}, {', '.join(actions.names)} (core/actions.yaml)"
        )
