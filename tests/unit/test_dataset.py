"""The training set's staged parts: one promoted schema, and impression order checked."""

from pathlib import Path

import pyarrow as pa
import pytest
from pyarrow import feather

from core import tables
from training.dataset import in_impression_order

pytestmark = pytest.mark.unit


def _stage(tmp_path: Path, name: str, table: pa.Table) -> Path:
    path = tmp_path / f"{name}.arrow"
    feather.write_feather(table, path, compression="uncompressed")
    return path


def test_parts_share_one_schema_promoted_as_one_concatenation_would(tmp_path: Path) -> None:
    whole = _stage(tmp_path, "a", pa.table({"id": [0, 1], "count": pa.array([3, 4], pa.int64())}))
    missing = _stage(tmp_path, "b", pa.table({"id": [2], "count": pa.array([None], pa.float64())}))
    empty = _stage(tmp_path, "c", pa.table({"id": pa.array([], pa.int64()), "count": pa.nulls(0)}))
    schema = tables.parts_schema([whole, empty, missing])
    assert schema.field("count").type == pa.float64()
    assert schema.field("id").type == pa.int64()


def test_parts_out_of_impression_order_are_refused(tmp_path: Path) -> None:
    parts = [
        _stage(tmp_path, "a", pa.table({"impression_id": [0, 1, 2]})),
        _stage(tmp_path, "b", pa.table({"impression_id": pa.array([], pa.int64())})),
        _stage(tmp_path, "c", pa.table({"impression_id": [3, 4]})),
    ]
    assert sum(t.num_rows for t in in_impression_order(parts)) == 5
    parts.append(_stage(tmp_path, "d", pa.table({"impression_id": [4, 5]})))
    with pytest.raises(tables.TableError, match=r"not in impression_id order .*\(id 4 after 4\)"):
        list(in_impression_order(parts))
