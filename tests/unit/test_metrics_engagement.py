"""Weighted engagement per user: the brief's worked example, normalisation, periods, errors, CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from core.actions import load_actions
from core.tables import EVENTS, TS, TableError
from feedrank.commands.metrics import metrics
from metrics.engagement import (
    Period,
    UnknownActionError,
    engagement_report,
    period_buckets,
    user_actions,
    weighted_score,
)

pytestmark = pytest.mark.unit

DAY1 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
DAY2 = DAY1 + timedelta(days=1)

# The brief: "in a day 2000 tweets were viewed; 70 likes, 80 comments,
# 20 retweets and 5 reports".
WORKED_EXAMPLE = {"like": 70, "reply": 80, "retweet": 20, "report": 5}


def make_events(
    user_ids: Sequence[int] | np.ndarray,
    actions: Sequence[str],
    at: datetime | Sequence[datetime],
    first_id: int = 0,
) -> pa.Table:
    """An EVENTS table: impressions get 2 s of dwell, actions none."""
    n = len(actions)
    times = [at] * n if isinstance(at, datetime) else list(at)
    is_impression = np.asarray(actions) == "impression"
    return pa.table(
        {
            "event_id": [f"e{first_id + i}" for i in range(n)],
            "user_id": pa.array(np.asarray(user_ids, dtype=np.int64)),
            "tweet_id": pa.array(np.arange(n, dtype=np.int64)),
            "action": pa.array(list(actions), pa.string()),
            "dwell_seconds": pa.array(
                np.where(is_impression, 2.0, np.nan), pa.float32(), from_pandas=True
            ),
            "timestamp": pa.array(times, TS),
        },
        schema=EVENTS.schema,
    )


def day_of_behaviour(
    n_users: int, impressions: int, actions: dict[str, int], day: datetime, first_id: int = 0
) -> pa.Table:
    """``impressions`` and the ``actions`` counts spread round-robin over ``n_users`` users."""
    names = ["impression"] * impressions + [a for a, n in actions.items() for _ in range(n)]
    users = np.arange(len(names)) % n_users
    times = [day + timedelta(seconds=i) for i in range(len(names))]
    return make_events(users, names, times, first_id)


def test_worked_example_by_hand_matches_the_configured_weights() -> None:
    weights = {"like": 0.5, "reply": 13.5, "retweet": 1.0, "report": -369.0}
    actions = load_actions()
    assert {name: actions.weight(name) for name in weights} == weights

    by_hand = 70 * 0.5 + 80 * 13.5 + 20 * 1.0 + 5 * -369.0
    assert by_hand == -710.0
    assert weighted_score(WORKED_EXAMPLE) == pytest.approx(-710.0)


def test_worked_example_from_an_event_log() -> None:
    events = day_of_behaviour(100, 2000, WORKED_EXAMPLE, DAY1)

    (row,) = engagement_report(events, start=DAY1, end=DAY2).rows

    assert row.users == 100
    assert row.impressions == 2000
    assert row.counts == {
        "like": 70,
        "reply": 80,
        "retweet": 20,
        "long_dwell": 0,
        "hide": 0,
        "report": 5,
    }
    assert row.impacts["reply"] == pytest.approx(1080.0)
    assert row.impacts["report"] == pytest.approx(-1845.0)
    assert row.score == pytest.approx(-710.0)
    assert row.score_per_user == pytest.approx(-710.0 / 100)
    assert row.score_per_1000_impressions == pytest.approx(-710.0 / 2)
    assert row.negative_actions_per_user == pytest.approx(5 / 100)
    assert row.dwell_seconds_per_user == pytest.approx(2000 * 2.0 / 100)
    assert row.note == ""


def test_weighted_score_is_the_same_for_numbers_and_per_user_arrays() -> None:
    per_user = {name: np.array([count, 0.0, 2 * count]) for name, count in WORKED_EXAMPLE.items()}

    scores = weighted_score(per_user)

    np.testing.assert_allclose(scores, [-710.0, 0.0, -1420.0])


def test_periods_of_different_size_with_the_same_behaviour_score_the_same_per_user() -> None:
    per_user = {"like": 3, "reply": 1, "hide": 1}
    small = day_of_behaviour(100, 2000, {a: n * 100 for a, n in per_user.items()}, DAY1)
    large = day_of_behaviour(
        300, 6000, {a: n * 300 for a, n in per_user.items()}, DAY2, first_id=10_000
    )

    rows = engagement_report(pa.concat_tables([small, large]), granularity="day").rows

    assert [row.users for row in rows] == [100, 300]
    assert rows[1].score == pytest.approx(3 * rows[0].score)
    assert rows[0].score_per_user == pytest.approx(rows[1].score_per_user)
    assert rows[0].score_per_user == pytest.approx(weighted_score(per_user))


def test_events_outside_the_period_are_excluded() -> None:
    inside = day_of_behaviour(10, 100, {"like": 10}, DAY1)
    before = make_events([1], ["report"], DAY1 - timedelta(microseconds=1), first_id=1000)
    at_end = make_events([1], ["report"], DAY2, first_id=1001)

    (row,) = engagement_report(
        pa.concat_tables([inside, before, at_end]), start=DAY1, end=DAY2
    ).rows

    assert row.counts["report"] == 0
    assert row.score == pytest.approx(10 * 0.5)


def test_daily_buckets_split_at_midnight_utc() -> None:
    last_moment = DAY2 - timedelta(microseconds=1)
    events = make_events([1, 2, 3], ["like", "reply", "reply"], [DAY1, last_moment, DAY2])

    rows = engagement_report(events, granularity="day").rows

    assert [(row.period.start, row.counts["like"], row.counts["reply"]) for row in rows] == [
        (DAY1, 1, 1),
        (DAY2, 0, 1),
    ]


def test_an_empty_period_reports_no_users_instead_of_dividing_by_zero() -> None:
    events = day_of_behaviour(10, 100, {"like": 10}, DAY1)

    (row,) = engagement_report(events, start=DAY2, end=DAY2 + timedelta(days=1)).rows

    assert (row.users, row.impressions, row.score) == (0, 0, 0.0)
    assert row.score_per_user is None
    assert row.score_per_1000_impressions is None
    assert "no active users" in row.note
    assert np.isnan(
        engagement_report(events, start=DAY2, end=DAY2 + timedelta(days=1))
        .to_frame()["score_per_user"]
        .iloc[0]
    )


def test_an_empty_day_inside_a_daily_report_still_gets_a_row() -> None:
    events = pa.concat_tables(
        [
            day_of_behaviour(5, 10, {"like": 1}, DAY1),
            day_of_behaviour(5, 10, {"like": 1}, DAY1 + timedelta(days=2), first_id=100),
        ]
    )

    rows = engagement_report(events, granularity="day").rows

    assert [row.users for row in rows] == [5, 0, 5]
    assert rows[1].period == Period(DAY2, DAY2 + timedelta(days=1))


def test_unknown_actions_raise_an_error_naming_them() -> None:
    events = pa.concat_tables(
        [day_of_behaviour(3, 3, {}, DAY1), make_events([1], ["superlike"], DAY1, first_id=99)]
    )

    with pytest.raises(UnknownActionError, match="'superlike'"):
        engagement_report(events)
    with pytest.raises(UnknownActionError, match="'superlike'"):
        weighted_score({"superlike": 1.0})


def test_exposed_denominator_leaves_out_users_without_impressions() -> None:
    events = pa.concat_tables(
        [
            day_of_behaviour(4, 8, {"reply": 4}, DAY1),
            make_events([99], ["reply"], DAY1, first_id=500),
        ]
    )

    (active,) = engagement_report(events).rows
    (exposed,) = engagement_report(events, denominator="exposed").rows

    assert (active.users, exposed.users) == (5, 4)
    assert active.score == exposed.score == pytest.approx(5 * 13.5)
    assert exposed.score_per_user == pytest.approx(5 * 13.5 / 4)
    assert exposed.denominator == "exposed"


def test_a_retried_event_counts_once() -> None:
    events = day_of_behaviour(2, 4, {"like": 1}, DAY1)
    retried = events.filter(pa.array([name == "like" for name in events["action"].to_pylist()]))

    (row,) = engagement_report(pa.concat_tables([events, retried])).rows

    assert row.counts["like"] == 1


def test_parquet_file_folder_and_glob_give_the_same_report(tmp_path: Path) -> None:
    events = day_of_behaviour(20, 200, WORKED_EXAMPLE, DAY1)
    pq.write_table(events.slice(0, 150), tmp_path / "part-0.parquet")
    pq.write_table(events.slice(150), tmp_path / "part-1.parquet")
    pq.write_table(events, tmp_path / "events.parquet")

    expected = engagement_report(events).rows
    assert engagement_report(str(tmp_path / "part-*.parquet")).rows == expected
    assert engagement_report(tmp_path).rows == expected
    assert engagement_report(tmp_path / "events.parquet").rows == expected


def test_off_schema_parquet_names_the_file_and_the_column(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(day_of_behaviour(2, 2, {}, DAY1).drop_columns(["action"]), path)

    with pytest.raises(TableError, match=r"events\.parquet.*'action'"):
        engagement_report(path)


def test_cohorts_split_the_rows_and_users_outside_them_are_kept_apart() -> None:
    events = day_of_behaviour(4, 8, {"like": 4}, DAY1)
    cohorts = pa.table({"user_id": pa.array([0, 1, 2], pa.int64()), "cohort": ["a", "a", "b"]})

    rows = engagement_report(events, cohorts=cohorts).rows

    assert [(row.cohort, row.users, row.counts["like"]) for row in rows] == [
        ("a", 2, 2),
        ("b", 1, 1),
        (None, 1, 1),
    ]


def test_weeks_start_on_monday_and_are_clipped_to_the_range() -> None:
    wednesday = DAY1 + timedelta(days=2)

    weeks = period_buckets(wednesday, wednesday + timedelta(days=10), "week")

    assert [(p.start.day, p.end.day) for p in weeks] == [(3, 8), (8, 13)]
    assert weeks[1].start.weekday() == 0


def test_user_actions_include_exposed_users_who_did_nothing() -> None:
    events = pa.concat_tables(
        [
            make_events([1, 2, 3], ["impression"] * 3, DAY1),
            make_events([1], ["report"], DAY1, first_id=10),
        ]
    )

    users = user_actions(events)

    assert users.user_id.tolist() == [1, 2, 3]
    assert users.scores().tolist() == [-369.0, 0.0, 0.0]


# The command line, through the click group (the top-level CLI wires it in).


def write_log(folder: Path, table: pa.Table) -> Path:
    path = folder / "events.parquet"
    pq.write_table(table, path)
    return path


def test_report_command_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    path = write_log(tmp_path, day_of_behaviour(100, 2000, WORKED_EXAMPLE, DAY1))
    output = tmp_path / "report.json"

    result = CliRunner().invoke(
        metrics, ["report", "--events", str(path), "--period", "day", "--output", str(output)]
    )

    assert result.exit_code == 0, result.output
    assert "-7.1" in result.output
    assert "active users" in result.output
    (row,) = json.loads(output.read_text())["rows"]
    assert row["score_per_1000_impressions"] == pytest.approx(-355.0)
    assert row["period_start"].startswith("2024-01-01T00:00:00")


def test_report_command_compares_variants_and_writes_csv(tmp_path: Path) -> None:
    path = write_log(tmp_path, day_of_behaviour(200, 2000, WORKED_EXAMPLE, DAY1))
    output = tmp_path / "report.csv"

    result = CliRunner().invoke(
        metrics,
        [
            "report",
            "--events",
            str(path),
            "--by",
            "variant",
            "--experiment",
            "ranker-v2",
            "--output",
            str(output),
        ],
    )

    assert result.exit_code == 0, result.output
    assert "Sample ratio" in result.output
    assert "treatment" in result.output
    assert output.read_text().count("\n") == 3  # header + control + treatment


def missing_file(folder: Path) -> Path:
    return folder / "missing.parquet"


def not_parquet(folder: Path) -> Path:
    path = folder / "bad.parquet"
    path.write_bytes(b"not parquet")
    return path


def without_user_id(folder: Path) -> Path:
    return write_log(folder, day_of_behaviour(2, 2, {}, DAY1).drop_columns(["user_id"]))


@pytest.mark.parametrize(
    ("make_file", "message"),
    [
        (missing_file, "missing.parquet: no such file"),
        (not_parquet, "bad.parquet: not a readable parquet file"),
        (without_user_id, "events.parquet: missing column 'user_id'"),
    ],
)
def test_report_command_fails_in_one_line_naming_the_problem(
    tmp_path: Path, make_file: Callable[[Path], Path], message: str
) -> None:
    path = make_file(tmp_path)

    result = CliRunner().invoke(metrics, ["report", "--events", str(path)])

    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0


def test_report_command_rejects_an_experiment_without_by(tmp_path: Path) -> None:
    path = write_log(tmp_path, day_of_behaviour(2, 2, {}, DAY1))

    result = CliRunner().invoke(metrics, ["report", "--events", str(path), "--experiment", "x"])

    assert result.exit_code != 0
    assert "--by variant and --experiment go together" in result.output
