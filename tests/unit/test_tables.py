"""Table schemas: validated on write and on read, errors name the file and the column."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedrank import tables

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
