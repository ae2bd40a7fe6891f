"""The feedrank CLI end to end on the tiny preset, and its errors on bad input."""

import subprocess  # nosec B404: runs our own console script
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import new_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FEEDRANK = str(Path(sys.executable).with_name("feedrank"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # nosec B603: fixed argv, no shell
        [FEEDRANK, *args], capture_output=True, text=True, timeout=600, check=False
    )


def test_every_stage_runs_from_the_command_line(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    w = ["--workspace", str(ws.root)]
    steps = [
        ["data", "generate", "--preset", "tiny", "--users", "150", *w],
        ["features", "build", *w],
        ["features", "apply", *w],
        ["features", "materialize", *w],
        ["dataset", "build", *w],
    ]
    for step in steps:
        done = run(*step)
        assert done.returncode == 0, (step, done.stderr[-2000:])
    assert "150 users" in run("data", "generate", "--preset", "tiny", "--users", "150", *w).stdout
    training = pq.read_table(ws.datasets / "ranker_v1.parquet")
    impressions = pq.read_table(ws.world / "impressions.parquet")
    assert training.num_rows == impressions.num_rows
    again = run("features", "materialize", *w)
    assert again.returncode == 0 and "filled up to" in again.stdout


def test_missing_input_is_one_clear_line(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    done = run("features", "build", "--workspace", str(ws.root))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "users.parquet: no such file" in done.stderr


def test_corrupt_input_names_the_file_and_writes_nothing(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    assert (
        run(
            "data", "generate", "--preset", "tiny", "--users", "80", "--workspace", str(ws.root)
        ).returncode
        == 0
    )
    tweets = ws.world / "tweets.parquet"
    tweets.write_bytes(tweets.read_bytes()[:100])
    done = run("features", "build", "--workspace", str(ws.root))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "tweets.parquet: not a readable parquet file" in done.stderr
    assert not ws.features.exists()


def test_help_explains_every_option() -> None:
    done = run("data", "generate", "--help")
    assert done.returncode == 0
    for option in ("--preset", "--seed", "--users", "--days", "--mean-followees", "--workspace"):
        assert option in done.stdout
