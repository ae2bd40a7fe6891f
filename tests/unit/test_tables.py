"""Table schemas: validated on write and on read, errors name the file and the column."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import tables

pytestmark = pytest.mark.unit


def _users(n: int = 3) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(range(n), pa.int64()),
            "created_at": pa.array([0] * n, pa.int64()).cast(tables.TS),
        }
    )


def test_round_trip_keeps_rows_and_schema(tmp_path: Path) -> None:
    tables.write_table(_users(), tables.USERS, tmp_path)
    back = tables.read_table(tables.USERS, tmp_path)
    assert back.num_rows == 3
    assert back.schema.field("user_id").metadata[b"description"]


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    pq.write_table(_users().drop_columns(["created_at"]), tmp_path / "users.parquet")
    with pytest.raises(tables.TableError, match=r"users\.parquet: missing column 'created_at'"):
        tables.read_table(tables.USERS, tmp_path)


def test_mistyped_column_names_file_column_and_types(tmp_path: Path) -> None:
    bad = _users().set_column(0, "user_id", pa.array(["a", "b", "c"]))
    with pytest.raises(tables.TableError, match=r"users\.parquet: column 'user_id'.*string.*int64"):
        tables.write_table(bad, tables.USERS, tmp_path)
    assert not (tmp_path / "users.parquet").exists()


def test_truncated_parquet_is_a_clear_error(tmp_path: Path) -> None:
    tables.write_table(_users(), tables.USERS, tmp_path)
    path = tmp_path / "users.parquet"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(tables.TableError, match=r"users\.parquet: not a readable parquet file"):
        tables.read_table(tables.USERS, tmp_path)


def test_missing_file_says_which_stage(tmp_path: Path) -> None:
    with pytest.raises(
        tables.TableError, match=r"no such file \(run the stage that writes 'users'"
    ):
        tables.read_table(tables.USERS, tmp_path)


def test_failed_write_leaves_previous_file_and_no_temporary(tmp_path: Path) -> None:
    tables.write_table(_users(3), tables.USERS, tmp_path)

    class Boom(pa.Table):  # pylint: disable=abstract-method
        """Not a table: pyarrow fails while writing it."""

    with pytest.raises(Exception):  # noqa: B017 - any failure of the writer
        tables.write_parquet_atomic(Boom(), tmp_path / "users.parquet")  # type: ignore[arg-type]
    assert tables.read_table(tables.USERS, tmp_path).num_rows == 3
    assert [p.name for p in tmp_path.iterdir()] == ["users.parquet"]


def test_nulls_ranges_and_time_order_are_checked(tmp_path: Path) -> None:
    users = _users()
    with_null = users.set_column(0, "user_id", pa.array([0, None, 2], pa.int64()))
    with pytest.raises(tables.TableError, match=r"users\.parquet: column 'user_id' has 1 null"):
        tables.write_table(with_null, tables.USERS, tmp_path)
    tweets = pa.table(
        {
            "tweet_id": pa.array([0, 1], pa.int64()),
            "author_id": pa.array([0, 0], pa.int64()),
            "topic": pa.array([0, 1], pa.int32()),
            "media_type": pa.array([0, 7], pa.int32()),
            "length": pa.array([10, 20], pa.int32()),
            "created_at": pa.array([0, 1], pa.int64()).cast(tables.TS),
        }
    )
    with pytest.raises(tables.TableError, match=r"tweets\.parquet: column 'media_type' has 7 > 3"):
        tables.write_table(tweets, tables.TWEETS, tmp_path)
    visits = pa.table(
        {
            "visit_id": pa.array([0, 1], pa.int64()),
            "user_id": pa.array([0, 0], pa.int64()),
            "visit_time": pa.array([5, 9], pa.int64()).cast(tables.TS),
            "prev_visit_time": pa.array([1, 9], pa.int64()).cast(tables.TS),
        }
    )
    with pytest.raises(
        tables.TableError, match=r"'prev_visit_time' is not before 'visit_time' in 1 rows"
    ):
        tables.write_table(visits, tables.VISITS, tmp_path)


def test_read_key_range_reads_the_rows_of_its_keys_across_row_groups(tmp_path: Path) -> None:
    pq.write_table(
        _users(10).take([3, 0, 9, 4, 1, 8, 2, 7, 5, 6]),
        tmp_path / "users.parquet",
        row_group_size=3,
    )
    ranges = [
        tables.read_key_range(tables.USERS, tmp_path, "user_id", lo, hi)
        for lo, hi in ((0, 4), (4, 7), (7, 10))
    ]
    assert [t["user_id"].to_pylist() for t in ranges] == [[3, 0, 1, 2], [4, 5, 6], [9, 8, 7]]
    assert ranges[0].schema == tables.USERS.schema  # validated, descriptions kept


def test_read_key_range_checks_columns_and_sends_null_keys_to_the_first_range(
    tmp_path: Path,
) -> None:
    pq.write_table(_users().drop_columns(["created_at"]), tmp_path / "users.parquet")
    with pytest.raises(tables.TableError, match=r"users\.parquet: missing column 'created_at'"):
        tables.read_key_range(tables.USERS, tmp_path, "user_id", 1, 2)
    nulls = _users().set_column(0, "user_id", pa.array([None, 1, 2], pa.int64()))
    pq.write_table(nulls, tmp_path / "users.parquet")
    assert tables.read_key_range(tables.USERS, tmp_path, "user_id", 1, 3)[
        "user_id"
    ].to_pylist() == [1, 2]
    with pytest.raises(tables.TableError, match=r"column 'user_id' has 1 null"):
        tables.read_key_range(tables.USERS, tmp_path, "user_id", 0, 1)


def test_read_rows_reads_a_range_across_row_groups(tmp_path: Path) -> None:
    pq.write_table(_users(10), tmp_path / "users.parquet", row_group_size=3)
    ids = [
        tables.read_rows(tables.USERS, tmp_path, lo, hi)["user_id"].to_pylist()
        for lo, hi in ((0, 3), (2, 7), (9, 10), (8, 20), (5, 5))
    ]
    assert ids == [[0, 1, 2], [2, 3, 4, 5, 6], [9], [8, 9], []]
    assert tables.read_rows(tables.USERS, tmp_path, 4, 6).schema == tables.USERS.schema
    pq.write_table(_users().drop_columns(["created_at"]), tmp_path / "users.parquet")
    with pytest.raises(tables.TableError, match=r"users\.parquet: missing column 'created_at'"):
        tables.read_rows(tables.USERS, tmp_path, 0, 2)


def test_write_parts_streams_parts_in_order_cast_to_the_first(tmp_path: Path) -> None:
    path = tmp_path / "parts.parquet"
    parts = [pa.table({"x": pa.array([1, 2], pa.int64())}), pa.table({"x": pa.array([3.0])})]
    with tables.replaced_atomically(path) as tmp:
        assert tables.write_parts(iter(parts), tmp) == 3
    assert pq.read_table(path).equals(pa.table({"x": pa.array([1, 2, 3], pa.int64())}))
    broken = [parts[0], pa.table({"x": pa.array([0.5])})]  # not an integer: nothing written
    with pytest.raises(pa.ArrowInvalid), tables.replaced_atomically(path) as tmp:
        tables.write_parts(broken, tmp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts.parquet"]
    assert pq.read_table(path).num_rows == 3  # the previous file stays


def test_read_key_range_skips_row_groups_outside_the_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pq.write_table(_users(9), tmp_path / "users.parquet", row_group_size=3)  # ids 0-2, 3-5, 6-8
    read: list[list[int]] = []
    iter_batches = pq.ParquetFile.iter_batches

    def recorded(self: pq.ParquetFile, *args: object, **kwargs: object) -> object:
        read.append(list(kwargs["row_groups"]))  # type: ignore[call-overload]
        return iter_batches(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", recorded)
    got = tables.read_key_range(tables.USERS, tmp_path, "user_id", 4, 7)
    assert got["user_id"].to_pylist() == [4, 5, 6]
    assert read == [[1, 2]]
