"""The feedrank CLI end to end on the tiny preset, and its errors on bad input."""

import subprocess  # nosec B404
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from core.feast_store import training_set_path
from feedrank.cli import main
from serving.auth import KeyRing
from tests.conftest import new_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class Run:
    """A CLI result with the names of a finished process (in-process, so coverage counts)."""

    def __init__(self, result: Result) -> None:
        self.returncode = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.exception = result.exception


def run(*args: str) -> Run:
    return Run(CliRunner().invoke(main, list(args)))


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
    training = pq.read_table(training_set_path(ws))
    impressions = pq.read_table(ws.world / "impressions.parquet")
    assert training.num_rows == impressions.num_rows
    again = run("features", "materialize", *w)
    assert again.returncode == 0 and "filled up to" in again.stdout


def test_missing_input_is_one_clear_line(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    done = run("features", "build", "--workspace", str(ws.root))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert isinstance(done.exception, SystemExit)  # a ClickException, not a crash
    assert "impressions.parquet: no such file" in done.stderr


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
    assert isinstance(done.exception, SystemExit)  # a ClickException, not a crash
    assert "tweets.parquet: not a readable parquet file" in done.stderr
    assert not ws.features.exists()


def test_help_explains_every_option() -> None:
    done = run("data", "generate", "--help")
    assert done.returncode == 0
    for option in ("--preset", "--seed", "--users", "--days", "--mean-followees", "--workspace"):
        assert option in done.stdout


def test_installed_console_script_runs() -> None:
    feedrank = str(Path(sys.executable).with_name("feedrank"))
    done = subprocess.run(  # nosec B603
        [feedrank, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0
    for group in ("data", "features", "dataset", "demo", "metrics"):
        assert group in done.stdout


def test_demo_runs_the_pipeline_on_a_tiny_world(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    done = run("demo", "--preset", "tiny", "--workspace", str(ws.root))
    assert done.returncode == 0, done.exception
    assert "feedrank demo summary" in done.stdout
    training = pq.read_table(training_set_path(ws))
    assert f"{training.num_rows:,}" in done.stdout
    # The demo's API key: printed how to use, stored hashed, working, one at a time.
    assert "Authorization: Bearer" in done.stdout
    key = (ws.data / "serving" / "demo_key").read_text().strip()
    keys = ws.data / "serving" / "api_keys.yaml"
    assert KeyRing(keys, "10/second").authenticate(key) is not None
    assert key not in keys.read_text()
    assert run("keys", "list", "--key-file", str(keys)).stdout.count("demo") == 1


def test_feast_default_materialize_from_the_cli(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    w = ["--workspace", str(ws.root)]
    for step in (
        ["data", "generate", "--preset", "tiny", "--users", "60", *w],
        ["features", "build", *w],
        ["features", "apply", *w],
    ):
        assert run(*step).returncode == 0
    done = run("features", "materialize", "--feast-default", "--end", "2026-01-20", *w)
    assert done.returncode == 0, done.exception
    assert "materialized with Feast" in done.stdout


def test_damaged_feature_table_stops_the_dataset_stage(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    w = ["--workspace", str(ws.root)]
    for step in (
        ["data", "generate", "--preset", "tiny", "--users", "60", *w],
        ["features", "build", *w],
        ["features", "apply", *w],
    ):
        assert run(*step).returncode == 0
    table = ws.features / "user_author_affinity.parquet"
    table.write_bytes(table.read_bytes()[:200])
    done = run("dataset", "build", *w)
    assert done.returncode == 1
    assert isinstance(done.exception, SystemExit)
    assert "user_author_affinity.parquet: not a readable parquet file" in done.stderr
    assert not ws.datasets.exists()


def test_train_config_file_is_validated_by_train_config(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("max_epochs: 0\nmodel: {architecture: mmoe}\n", encoding="utf-8")
    done = run("train", "--config", str(config), "--workspace", str(tmp_path))
    assert done.returncode == 1
    assert isinstance(done.exception, SystemExit)
    assert f"{config}: max_epochs: Input should be greater than or equal to 1" in done.stderr
    overridden = run(
        "train", "--config", str(config), "--epochs", "1", "--workspace", str(tmp_path)
    )
    assert overridden.returncode == 1
    assert "no training set" in overridden.stderr  # the flag won; training found no data


def test_a_bug_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise KeyError("a programming error")

    monkeypatch.setattr("features.pipelines.build_features", broken)
    done = run("features", "build", "--workspace", str(new_workspace(tmp_path).root))
    assert isinstance(done.exception, KeyError)  # not turned into a one-line error


def test_pipeline_foundation_builds_the_training_set(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    done = run(
        "pipeline", "foundation", "--preset", "tiny", "--users", "60", "--workspace", str(ws.root)
    )
    assert done.returncode == 0, done.exception
    assert "60 users" in done.stdout
    training = pq.read_table(training_set_path(ws))
    assert f"training set: {training.num_rows:,} rows" in done.stdout


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    keys = tmp_path / "api_keys.yaml"
    made = run(
        "keys",
        "create",
        "--name",
        "user-5",
        "--scope",
        "rank",
        "--user",
        "5",
        "--key-file",
        str(keys),
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.splitlines()[0]
    principal = KeyRing(keys, "1/second").authenticate(key)
    assert principal is not None and principal.user_id == 5
    listed = run("keys", "list", "--key-file", str(keys)).stdout
    assert principal.key_id in listed and key not in listed
    assert run("keys", "revoke", "user-5", "--key-file", str(keys)).returncode == 0
    assert KeyRing(keys, "1/second").authenticate(key) is None
    bad = run("keys", "create", "--name", "x", "--scope", "root", "--key-file", str(keys))
    assert bad.returncode != 0 and "root" in bad.stderr
