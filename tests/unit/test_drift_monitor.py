"""``feedrank monitor drift`` on served samples: windows, minimum size, thresholds, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from feedrank.commands.monitor import DRIFT_EXIT_CODES, monitor
from metrics.drift import Window, load_drift_config, read_sample

pytestmark = pytest.mark.unit

DAY_US = 86_400 * 10**6
END_US = 1_768_435_200_000_000  # 2026-01-15T00:00:00Z


def _write_samples(
    folder: Path, day: int, requests: int, seed: int, like_shift: float = 0.0
) -> None:
    """``requests`` sampled requests on day ``day`` before END (1 = the last day), 5 rows each."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    start = END_US - day * DAY_US
    with (folder / f"day-{day}.jsonl").open("a") as out:
        for i in range(requests):
            like = float(rng.beta(2, 20)) + like_shift  # a user feature: one value per request
            record = {
                "request_id": f"d{day}-s{seed}-{i}",
                "request_us": int(start + rng.integers(DAY_US)),
                "user_id": int(rng.integers(10**6)),
                "model": "feed-ranker:t",
                "rows": [
                    {
                        "tweet_id": int(rng.integers(10**6)),
                        "author_id": int(rng.integers(100)),
                        "user_like_rate_7d": like,
                        "tweet_age_hours": float(rng.exponential(10)),
                    }
                    for _ in range(5)
                ],
            }
            out.write(json.dumps(record) + "\n")


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(monitor, ["drift", *map(str, args)])


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    """Eight days of 600 requests each from one unchanged population."""
    folder = tmp_path / "feature_samples"
    for day in range(1, 9):
        _write_samples(folder, day, 600, seed=day)
    return folder


def test_a_stable_population_is_quiet_against_the_week_before(
    samples: Path, tmp_path: Path
) -> None:
    outputs = tmp_path / "out.txt"
    done = _run("--current", samples, "--outputs", outputs)
    assert done.exit_code == DRIFT_EXIT_CODES["quiet"], done.output
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    # defaults: the 24 hours up to the newest sample against the 7 days before them
    assert 550 < int(values["current_users"]) < 650
    assert 4150 < int(values["reference_users"]) < 4250
    assert values["outcome"] == "quiet" and values["exit_code"] == "0"
    assert values["drifted"] == "" and float(values["worst_psi"]) < 0.1


def test_a_shifted_day_is_drift_naming_the_feature(samples: Path) -> None:
    _write_samples(samples, 1, 600, seed=99, like_shift=0.15)  # half the last day moved
    done = _run("--current", samples)
    assert done.exit_code == DRIFT_EXIT_CODES["drift"], done.output
    assert done.output.strip().splitlines()[-1] == "drift: user_like_rate_7d"


def test_too_few_requests_are_not_judged_however_far_apart(tmp_path: Path) -> None:
    folder = tmp_path / "few"
    _write_samples(folder, 2, 100, seed=1)
    _write_samples(folder, 1, 100, seed=2, like_shift=0.5)
    done = _run("--current", folder)
    assert done.exit_code == DRIFT_EXIT_CODES["too_few_samples"], done.output
    assert "too few samples to judge: each side needs 400 users" in done.output


def test_explicit_windows_and_a_per_feature_threshold(samples: Path, tmp_path: Path) -> None:
    _write_samples(samples, 1, 600, seed=99, like_shift=0.15)
    config = tmp_path / "drift.yaml"
    config.write_text("min_users: 400\nfeatures:\n  user_like_rate_7d: 5.0\n")
    done = _run("--current", samples, "--config", config)
    assert done.exit_code == DRIFT_EXIT_CODES["quiet"], done.output  # its own bar is higher
    # two days before the shift, judged against each other: quiet with the default settings
    done = _run(
        "--current",
        samples,
        "--current-window",
        "2026-01-13T00:00Z/2026-01-14T00:00Z",
        "--reference-window",
        "2026-01-12T00:00:00+00:00/2026-01-13T00:00:00+00:00",
    )
    assert done.exit_code == DRIFT_EXIT_CODES["quiet"], done.output
    assert "reference: 600 users in 2026-01-12T00:00:00Z/2026-01-13T00:00:00Z" in done.output


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("2026-01-13", "not an ISO 8601 interval START/END"),
        ("2026-01-14T00:00Z/2026-01-13T00:00Z", "START must be before END"),
        ("2026-01-13T00:00/2026-01-14T00:00", "has no time zone"),
    ],
)
def test_a_bad_window_is_one_line_naming_it(samples: Path, window: str, message: str) -> None:
    done = _run("--current", samples, "--current-window", window)
    assert done.exit_code == 1
    assert message in done.output and window in done.output
    assert "Traceback" not in done.output


def test_a_bad_setting_names_the_file_and_field(samples: Path, tmp_path: Path) -> None:
    config = tmp_path / "drift.yaml"
    config.write_text("threshold: -1\n")
    done = _run("--current", samples, "--config", config)
    assert done.exit_code == 1
    assert f"{config}: threshold:" in done.output


def test_the_shipped_settings_and_the_sample_units() -> None:
    config = load_drift_config()
    assert config.threshold_for("anything") == config.threshold == 0.2
    assert config.min_users == 400
    window = Window.parse("2026-01-14T00:00Z/2026-01-15T00:00Z")
    assert (window.start_us, window.end_us) == (END_US - DAY_US, END_US)


def test_a_user_counts_once_however_many_rows_and_requests(tmp_path: Path) -> None:
    folder = tmp_path / "one-user"
    _write_samples(folder, 1, 3, seed=1)
    lines = (folder / "day-1.jsonl").read_text().splitlines()
    same_user = [json.loads(line) | {"user_id": 7} for line in lines]
    (folder / "day-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in same_user))
    sample = read_sample(folder)
    assert (len(sample.rows), sample.users) == (15, 1)
