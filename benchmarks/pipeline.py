"""Foundation figures: world generation, feature pipelines, online fill, training set, demo.

Runs each stage on a fresh workspace, and Feast's default online write path
side by side with the fast fill on the same rows. Ends with ``RESULT {json}``.

    .venv/bin/python benchmarks/pipeline.py             # large world, demo timing
    .venv/bin/python benchmarks/pipeline.py --quick     # demo world only, no demo run
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess  # nosec B404
import sys
import tempfile
import time
from pathlib import Path

from core.feast_store import open_store
from core.workspace import REPO_ROOT, Workspace
from features.online import apply_repo, fill_online, materialize_feast
from features.pipelines import build_features
from simulation.config import world_config
from simulation.world import generate_world, world_end
from training.dataset import build_training_set


def _workspace(root: Path) -> Workspace:
    shutil.copytree(REPO_ROOT / "feature_repo", root / "feature_repo")
    return Workspace(root)


def _timed(label: str, func, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = func(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"{label:<34} {seconds:8.2f} s", flush=True)
    return result, seconds


def main() -> None:
    """Measure every foundation stage and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Skip the large world and the demo.")
    args = parser.parse_args()
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.quick:
            large = _workspace(Path(tmp) / "large")
            summary, seconds = _timed(
                "world generation (large)", generate_world, world_config("large"), large.data
            )
            result["world_impressions_per_s"] = summary.impressions / seconds
            print(f"  {summary.impressions:,} impressions")
            shutil.rmtree(large.root)

        ws = _workspace(Path(tmp) / "demo")
        config = world_config("demo")
        summary, seconds = _timed("world generation (demo)", generate_world, config, ws.data)
        result.setdefault("world_impressions_per_s", summary.impressions / seconds)
        built, seconds = _timed("feature pipelines", build_features, ws.world, ws.features)
        result["features_rows_per_s"] = summary.impressions / seconds
        print(f"  {summary.impressions:,} impressions in, {sum(built.rows.values()):,} rows out")

        store = open_store(ws)
        apply_repo(store, ws)
        filled, seconds = _timed("online fill (fast)", fill_online, store, ws, world_end(config))
        result["online_fill_rows_per_s"] = sum(filled.values()) / seconds

        # Feast's default path on a copy, same rows: materialize (write_to_online_store).
        reference = _workspace(Path(tmp) / "feast")
        for folder in ("world", "features"):
            shutil.copytree(ws.data / folder, reference.data / folder)
        ref_store = open_store(reference)
        apply_repo(ref_store, reference)
        _, seconds = _timed(
            "online fill (Feast materialize)",
            materialize_feast,
            ref_store,
            reference,
            world_end(config),
        )
        result["feast_default_fill_rows_per_s"] = sum(filled.values()) / seconds
        result["online_fill_ratio"] = (
            result["online_fill_rows_per_s"] / result["feast_default_fill_rows_per_s"]
        )

        training, seconds = _timed("training set (Feast historical)", build_training_set, store, ws)
        result["training_set_rows_per_s"] = training.rows / seconds

        if not args.quick:
            demo_ws = _workspace(Path(tmp) / "demo_run")
            feedrank = str(Path(sys.executable).with_name("feedrank"))
            _, seconds = _timed(
                "feedrank demo (end to end)",
                subprocess.run,  # nosec B603: our own console script, fixed argv
                [feedrank, "demo", "--workspace", str(demo_ws.root)],
                check=True,
                capture_output=True,
            )
            result["demo_seconds"] = seconds

    print(
        f"online fill: fast {result['online_fill_rows_per_s']:,.0f} rows/s vs Feast "
        f"{result['feast_default_fill_rows_per_s']:,.0f} rows/s = "
        f"{result['online_fill_ratio']:.1f}x"
    )
    print("RESULT " + json.dumps({k: round(v, 2) for k, v in result.items()}))


if __name__ == "__main__":
    main()
