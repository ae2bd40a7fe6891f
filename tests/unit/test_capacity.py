"""The capacity plan traces to the measured figures: the document is what they produce."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from analysis import capacity

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(name="figures")
def _figures() -> dict[str, Any]:
    """The committed measured figures."""
    return capacity.load_figures(REPO / "docs" / "figures.json")


def test_document_is_what_the_figures_render(figures: dict[str, Any]) -> None:
    """A hand edit or a figure changed without regenerating breaks the trace."""
    on_disk = (REPO / "docs" / "capacity.md").read_text(encoding="utf-8")
    assert on_disk == capacity.render(figures), "docs/capacity.md is stale: regenerate it"


def test_check_flag_fails_on_a_stale_document(tmp_path: Path) -> None:
    """``--check`` is what CI or a reviewer runs: it must fail on drift, pass after a write."""
    stale = tmp_path / "capacity.md"
    stale.write_text("# hand-edited\n", encoding="utf-8")
    figures = str(REPO / "docs" / "figures.json")
    assert capacity.main(["--check", "--figures", figures, "--output", str(stale)]) == 1
    assert capacity.main(["--figures", figures, "--output", str(stale)]) == 0
    assert capacity.main(["--check", "--figures", figures, "--output", str(stale)]) == 0


def test_every_measured_figure_carries_its_command_and_date(figures: dict[str, Any]) -> None:
    """A figure without the command that printed it cannot be re-measured."""
    for section, values in figures.items():
        assert values.get("command"), section
        assert "date" in values, section


def test_brief_scale_is_58k_rank_calls_per_second() -> None:
    """500M users x 10 fetches / 86,400 s, and the peak is the stated factor over it."""
    a = capacity.Assumptions()
    assert a.daily_users == 500e6 and a.fetches_per_user_day == 10
    assert capacity.average_rps(a) == pytest.approx(57_870.37, abs=0.01)
    p = capacity.plan(capacity.load_figures(REPO / "docs" / "figures.json"), a)
    assert p.peak_rps == pytest.approx(57_870.37 * a.peak_factor, abs=0.1)


def test_document_shows_the_brief_arithmetic(figures: dict[str, Any]) -> None:
    """The reader sees the average and the peak factor, not only the result."""
    text = capacity.render(figures)
    assert "57,870 rank calls/s on average" in text
    assert "| peak factor | 3x |" in text


def test_replicas_scale_inversely_with_measured_throughput(figures: dict[str, Any]) -> None:
    """A measured rps replaces the assumption, and replicas follow 1 / rps."""
    slow, fast = copy.deepcopy(figures), copy.deepcopy(figures)
    slow["serve"]["rps_c8"], fast["serve"]["rps_c8"] = 100.0, 400.0
    p_slow, p_fast = capacity.plan(slow), capacity.plan(fast)
    assert p_slow.rps_measured and p_fast.rps_measured
    assert p_slow.replicas == math.ceil(p_slow.peak_rps / (100.0 * 0.6))
    # 4x the throughput: a quarter of the replicas (up to rounding).
    assert abs(p_slow.replicas - 4 * p_fast.replicas) <= 4


def test_null_serve_figures_fall_back_to_the_labelled_assumption(
    figures: dict[str, Any],
) -> None:
    """Unmeasured /rank figures are shown as such and the plan says it uses an assumption."""
    unmeasured = copy.deepcopy(figures)
    unmeasured["serve"] = {**unmeasured["serve"], "rps_c8": None, "p99_ms_c8": None}
    a = capacity.Assumptions(planning_rps_per_replica=120)
    p = capacity.plan(unmeasured, a)
    assert (p.rps_per_replica, p.rps_measured) == (120, False)
    text = capacity.render(unmeasured, a)
    assert "**planning assumption** `planning_rps_per_replica`" in text
    assert "| serve.p99_ms_c8 | not measured yet |" in text

    measured = copy.deepcopy(figures)
    measured["serve"]["rps_c8"] = 210.0
    text = capacity.render(measured)
    assert "**planning assumption**" not in text
    assert "| rank calls/s per replica | 210.0 | measured: serve.rps_c8 |" in text


def test_redis_shards_cover_both_throughput_and_memory(figures: dict[str, Any]) -> None:
    """Shards are the larger of the throughput and the memory needs."""
    p = capacity.plan(figures)
    assert p.redis_shards == max(p.shards_for_ops, p.shards_for_memory)
    per_shard = figures["redis"]["hmget_per_server_cpu_s"] * 0.5
    assert p.redis_shards * per_shard >= p.read_ops_peak + p.write_ops_peak
    # A bigger measured key needs more memory and never fewer shards.
    bigger = copy.deepcopy(figures)
    bigger["redis"]["bytes_per_key"]["user"] *= 2
    p_bigger = capacity.plan(bigger)
    assert p_bigger.online_store_gb > p.online_store_gb
    assert p_bigger.shards_for_memory > p.shards_for_memory
    assert p_bigger.redis_shards >= p.redis_shards


def test_cache_cuts_redis_reads_only_where_it_hits(figures: dict[str, Any]) -> None:
    """Reads per call are distinct rows times the miss rate of the in-process cache."""
    p = capacity.plan(figures)
    assert p.rows_per_rank["tweet_content"] == 500
    assert p.rows_per_rank["author_stats"] == 100  # distinct authors <= followees
    assert p.rows_per_rank["user_top_authors"] == 1  # the pair features: one key per user
    assert p.reads_per_rank["tweet_content"] == pytest.approx(500 * (1 - 0.8))


def test_training_volume_follows_the_measured_row_size(figures: dict[str, Any]) -> None:
    """Training TB/day = kept impressions x measured bytes per row."""
    p = capacity.plan(figures)
    world = figures["world"]
    impressions = 5e9 * world["impressions_per_visit"]
    kept = impressions * (world["any_action_share"] + (1 - world["any_action_share"]) * 0.1)
    assert p.training_tb_per_day == pytest.approx(kept * world["training_bytes_per_row"] / 1e12)


def test_ray_workers_finish_a_day_within_the_batch_window(figures: dict[str, Any]) -> None:
    """Workers x measured rate per worker x window covers the day's rows, one worker less not."""
    p = capacity.plan(figures)
    window = capacity.Assumptions().batch_window_hours * 3600
    assert p.day_rows == {
        "impressions": p.impressions_per_day,
        "training rows": p.training_rows_per_day,
        "entities": p.batch_rows_per_day,
    }
    assert {stage for stage, _, _ in capacity.RAY_STAGES} == set(p.ray_workers)
    for stage, unit, key in capacity.RAY_STAGES:
        rows = p.day_rows[unit]
        per_worker = figures["scale_out"][key] / 2
        workers = p.ray_workers[stage]
        assert workers * per_worker * window >= rows > (workers - 1) * per_worker * window
        faster = copy.deepcopy(figures)
        faster["scale_out"][key] *= 4
        assert capacity.plan(faster).ray_workers[stage] == math.ceil(rows / per_worker / 4 / window)


def test_result_line_has_the_main_figures(
    figures: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The RESULT line carries the plan's main figures, equal to :func:`plan`."""
    out = tmp_path / "capacity.md"
    capacity.main(["--figures", str(REPO / "docs" / "figures.json"), "--output", str(out)])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("RESULT ")
    result = json.loads(line.removeprefix("RESULT "))
    assert set(result) == {
        "replicas",
        "redis_shards",
        "online_store_gb",
        "training_tb_per_day",
        "peak_rps",
    }
    assert result == capacity.plan(figures).result()
    assert result["peak_rps"] == round(capacity.plan(figures).peak_rps)
