"""Scale-out figures: the offline path in this process and on Ray, side by side.

For each preset (tiny and demo; ``--large`` adds large), on one world:

- world: generated in this process, and its impression shards as Ray tasks on
  a local Ray of 1 and of 2 CPUs, impressions/s; each Ray world must equal the
  local one (a preset below ``shard_visits`` visits is one shard: no gain);
- feature tables: the shard functions in this process, and as Ray tasks on a
  local Ray of 1 and of 2 CPUs (one shard per CPU at least), impressions/s;
  each Ray build must equal the local one table for table (``Table.equals``);
- training set: Feast's DuckDB join in this process, and the cluster profile's
  join in Ray tasks on a local Ray of 1 and of 2 CPUs (workers), rows/s; each
  Ray result must equal the local one (``Table.equals``);
- online fill into Redis: the fast column-wise writer, and Feast's ``ray.engine``
  materialization with 1 and 2 workers, entities/s; each Redis copy must serve
  what the embedded store serves (``get_online_features`` on a sample);
- on tiny, Feast's own Ray offline store joining a 1,000-row sample next to
  DuckDB on the same rows (why the cluster profile does not join with it);
- training, one network's epoch: in this process and with 2 Ray Train workers,
  training rows/s (from the loop's own clock, not Ray's start-up), and the
  larger worker's peak RSS (each worker reads its shard of the training set);
- on large, only the world and the feature tables (its 12M-row join and
  fills take hours here);
- the driver's peak RSS (each preset runs in a child process of its own), and
  during each stage (``VmHWM``, reset before it through ``/proc/self/clear_refs``).

Needs Redis and PostgreSQL on 127.0.0.1; every Feast project is dropped at the
end. Ends with ``RESULT {json}``.

    .venv/bin/python benchmarks/scale_out.py            # tiny and demo
    .venv/bin/python benchmarks/scale_out.py --large    # and large
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import subprocess  # nosec B404
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import ray

from core import tables
from core.feast_store import FEATURE_SERVICE, drop_project, entity_rows, open_store
from core.ray_tasks import run_on_ray
from core.workspace import REPO_ROOT, Workspace
from features.online import apply_repo, fill_online, materialize_feast
from features.pipelines import build_features, feature_shards
from simulation.config import WorldConfig, world_config
from simulation.world import generate_world, world_end
from training.dataset import build_training_set
from training.feature_join import entity_frame
from training.pipeline import run_training_pipeline
from training.ray_train import train_on_ray
from training.train import TrainConfig

WORKERS = (1, 2)


def _ray(cpus: int) -> None:
    ray.shutdown()
    ray.init(
        address="local",
        num_cpus=cpus,
        object_store_memory=500 * 2**20,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )


STAGE_PEAK_MB: dict[str, float] = {}
"""The driver's peak RSS during each timed stage (Linux: VmHWM, reset before the stage)."""


def _stage_peak_mb() -> float:
    status = Path("/proc/self/status").read_text(encoding="utf-8")
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1]) / 1024


def _timed(label: str, func, *args, **kwargs):  # type: ignore[no-untyped-def]
    Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")  # reset the peak
    start = time.perf_counter()
    out = func(*args, **kwargs)
    seconds = time.perf_counter() - start
    STAGE_PEAK_MB[label] = _stage_peak_mb()
    print(f"  {label:<40} {seconds:8.2f} s  peak {STAGE_PEAK_MB[label]:8,.0f} MB", flush=True)
    return out, seconds


def _serves_the_same(store, embedded, ws: Workspace) -> bool:  # type: ignore[no-untyped-def]
    impressions = pq.read_table(ws.world / "impressions.parquet").to_pandas()
    sample = impressions.sample(500, random_state=3)
    rows = entity_rows(embedded, FEATURE_SERVICE, sample, 1_768_000_000)

    def read(s) -> dict:  # type: ignore[no-untyped-def]
        service = s.get_feature_service(FEATURE_SERVICE)
        return s.get_online_features(features=service, entity_rows=rows).to_dict()

    return read(store) == read(embedded)


def _feast_ray_join(ws: Workspace, project: str, rows: int) -> dict[str, float]:
    """Feast's Ray offline store and DuckDB, each joining the same ``rows`` impressions."""
    entity = entity_frame(tables.read_table(tables.IMPRESSIONS, ws.world))
    entity = entity.sample(rows, random_state=1)
    out = {}
    for name, store in (
        ("feast_ray_store", open_store(ws, "cluster", project)),
        ("duckdb", open_store(ws)),
    ):
        service = store.get_feature_service(FEATURE_SERVICE)
        with contextlib.chdir(ws.repo):
            _, seconds = _timed(
                f"join {rows:,} rows: {name}",
                lambda s=store, f=service: s.get_historical_features(
                    entity_df=entity, features=f
                ).to_df(),
            )
        out[f"{name}_rows_per_s"] = rows / seconds
    return out


def _world_on_ray(
    config: WorldConfig, ws: Workspace, folder: Path, workers: int, out: dict
) -> bool:
    """The world again, its shards as Ray tasks; True when every table equals the local one."""
    summary, seconds = _timed(
        f"world: Ray tasks, {workers} worker(s)", generate_world, config, folder, run=run_on_ray
    )
    out[f"world_rows_per_s_ray{workers}"] = summary.impressions / seconds
    same = all(
        pq.read_table(folder / f"{name}.parquet").equals(pq.read_table(ws.data / f"{name}.parquet"))
        for name in ("world/impressions", "world/events", "truth/oracle")
    )
    shutil.rmtree(folder)
    return same


def _training(ws: Workspace) -> dict[str, float]:
    """One network's epoch in this process and with 2 Ray Train workers (Ray of 2 CPUs is up),
    and the larger worker's peak memory (each reads its shard of the training set)."""
    config = TrainConfig(max_epochs=1, ensemble=1, refit=False)  # one epoch, as measured before
    local, _ = _timed(
        "train one epoch: this process",
        run_training_pipeline,
        ws.root,
        config,
        register=False,
        promote=False,
        progress=False,
    )
    on_ray, _ = _timed(
        "train one epoch: Ray Train, 2 workers",
        train_on_ray,
        ws.root,
        config,
        2,
        register=False,
        promote=False,
    )
    return {
        "train_rows_per_s_local": local["train_rows"] / local["train_seconds"],
        "train_rows_per_s_ray2": on_ray["train_rows"] / on_ray["train_seconds"],
        "train_peak_rss_mb_ray2_per_worker": max(on_ray["peak_rss_mb_per_rank"]),
    }


def _sharded_stages(config: WorldConfig, ws: Workspace, tmp: Path, out: dict) -> bool:
    """World and feature tables in this process, then as Ray tasks on 1 and 2 CPUs."""
    summary, seconds = _timed("world: this process", generate_world, config, ws.data)
    out |= {
        "impressions": summary.impressions,
        "shards": summary.shards,
        "world_rows_per_s_local": summary.impressions / seconds,
    }
    _, seconds = _timed("features: this process", build_features, ws.world, ws.features)
    out["features_rows_per_s_local"] = summary.impressions / seconds
    parity = True
    for workers in WORKERS:
        _ray(workers)
        parity &= _world_on_ray(config, ws, tmp / f"world-ray{workers}", workers, out)
        folder = tmp / f"features-ray{workers}"
        _, seconds = _timed(
            f"features: Ray tasks, {workers} worker(s)",
            build_features,
            ws.world,
            folder,
            run=run_on_ray,
            shards=feature_shards(ws.world, workers),
        )
        out[f"features_rows_per_s_ray{workers}"] = summary.impressions / seconds
        parity &= all(
            pq.read_table(folder / f"{name}.parquet").equals(
                pq.read_table(ws.features / f"{name}.parquet")
            )
            for name in tables.FEATURE_TABLES
        )
        shutil.rmtree(folder)
    ray.shutdown()
    return parity


def _feast_stages(config: WorldConfig, ws: Workspace, out: dict) -> bool:
    """Training set, online fill and training in this process, then on Ray with 1 and 2 CPUs."""
    embedded = open_store(ws)
    apply_repo(embedded, ws)
    entities = sum(fill_online(embedded, ws, world_end(config)).values())
    local, seconds = _timed("training set: DuckDB, this process", build_training_set, embedded, ws)
    out["dataset_rows_per_s_duckdb"] = local.rows / seconds
    reference = pq.read_table(local.path)
    parity = True
    projects = []
    try:
        production = open_store(ws, "production", f"b{uuid.uuid4().hex[:10]}")
        projects.append(production)
        apply_repo(production, ws)
        _, seconds = _timed(
            "online fill: fast writer", fill_online, production, ws, world_end(config)
        )
        out["materialize_rows_per_s_local"] = entities / seconds
        parity &= _serves_the_same(production, embedded, ws)
        for workers in WORKERS:
            _ray(workers)
            cluster = open_store(ws, "cluster", f"b{uuid.uuid4().hex[:10]}")
            projects.append(cluster)
            apply_repo(cluster, ws)
            built, seconds = _timed(
                f"training set: Ray tasks, {workers} worker(s)", build_training_set, cluster, ws
            )
            out[f"dataset_rows_per_s_ray{workers}"] = built.rows / seconds
            parity &= pq.read_table(built.path).equals(reference)
            _, seconds = _timed(
                f"online fill: ray.engine, {workers} worker(s)",
                materialize_feast,
                cluster,
                ws,
                world_end(config),
            )
            out[f"materialize_rows_per_s_ray{workers}"] = entities / seconds
            parity &= _serves_the_same(cluster, embedded, ws)
        out |= _training(ws)
        if config.n_users == world_config("tiny").n_users:
            out |= _feast_ray_join(ws, projects[-1].project, 1_000)
    finally:
        for store in projects:
            drop_project(store)
        ray.shutdown()
    return parity


def run_preset(preset: str, tmp: Path) -> dict[str, float | bool]:
    """Every figure of one preset (in a child process: its peak RSS is the preset's).

    On large only the world and the feature tables: its 12M-row join and fills
    would take hours on this machine.
    """
    ws = Workspace(tmp / preset)
    shutil.copytree(REPO_ROOT / "feature_repo", ws.repo)
    config = world_config(preset)
    out: dict[str, Any] = {}
    parity = _sharded_stages(config, ws, tmp, out)
    if preset != "large":
        parity &= _feast_stages(config, ws, out)
    out["parity_ok"] = parity
    # ru_maxrss misses the peaks of stages before a VmHWM reset: the largest of both.
    rusage_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["driver_peak_rss_mb"] = max(rusage_mb, *STAGE_PEAK_MB.values())
    out["driver_peak_rss_mb_by_stage"] = dict(STAGE_PEAK_MB)
    return out


def main() -> None:
    """Run each preset in a child process, print the table, end with RESULT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large", action="store_true", help="Also the large preset.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print("CHILD " + json.dumps(run_preset(args.child, Path(tmp))))
        return
    presets = ["tiny", "demo", *(["large"] if args.large else [])]
    figures = {}
    for preset in presets:
        print(f"== {preset}", flush=True)
        done = subprocess.run(  # nosec B603
            [sys.executable, __file__, "--child", preset],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        lines = done.stdout.splitlines()
        print("\n".join(line for line in lines if line.startswith("  ")))
        figures[preset] = json.loads(next(x for x in lines if x.startswith("CHILD "))[6:])
    print(f"\n{'rows/s':<34}" + "".join(f"{p:>14}" for p in presets))
    for key in figures["tiny"]:
        if "_per_s" in key:
            cells = [f"{figures[p][key]:,.0f}" if key in figures[p] else "-" for p in presets]
            print(f"{key:<34}" + "".join(f"{c:>14}" for c in cells))
    demo = figures["demo"]
    print(f"\n{'driver peak RSS, MB':<44}" + "".join(f"{p:>12}" for p in presets))
    for stage in figures["tiny"]["driver_peak_rss_mb_by_stage"]:
        peaks = [
            figures[p]["driver_peak_rss_mb_by_stage"].get(stage, float("nan")) for p in presets
        ]
        print(f"{stage:<44}" + "".join(f"{mb:>12,.0f}" for mb in peaks))
    for preset in presets[1:]:
        for stage, local in (
            ("world", "local"),
            ("features", "local"),
            ("dataset", "duckdb"),
            ("materialize", "local"),
        ):
            got = figures[preset]
            if f"{stage}_rows_per_s_ray1" not in got:
                continue
            ray1, ray2 = got[f"{stage}_rows_per_s_ray1"], got[f"{stage}_rows_per_s_ray2"]
            print(
                f"{preset} {stage}: Ray 2 workers over 1 {ray2 / ray1:.2f}x, "
                f"over this process {ray2 / got[f'{stage}_rows_per_s_{local}']:.2f}x"
            )
        got = figures[preset]
        if "train_rows_per_s_ray2" not in got:
            continue
        print(
            f"{preset} train: Ray Train 2 workers over this process "
            f"{got['train_rows_per_s_ray2'] / got['train_rows_per_s_local']:.2f}x"
        )
    tiny = figures["tiny"]
    print(
        "tiny, Feast's Ray offline store over DuckDB, same 1,000 rows: "
        f"{tiny['feast_ray_store_rows_per_s'] / tiny['duckdb_rows_per_s']:.4f}x"
    )
    biggest = figures[presets[-1]]  # the world is sharded from shard_visits visits on
    result = {
        "world_preset": presets[-1],
        "world_shards": biggest["shards"],
        "world_rows_per_s_local": biggest["world_rows_per_s_local"],
        "world_rows_per_s_ray1": biggest["world_rows_per_s_ray1"],
        "world_rows_per_s_ray2": biggest["world_rows_per_s_ray2"],
        "features_rows_per_s_local": demo["features_rows_per_s_local"],
        "features_rows_per_s_ray1": demo["features_rows_per_s_ray1"],
        "features_rows_per_s_ray2": demo["features_rows_per_s_ray2"],
        "dataset_rows_per_s_duckdb": demo["dataset_rows_per_s_duckdb"],
        "dataset_rows_per_s_ray1": demo["dataset_rows_per_s_ray1"],
        "dataset_rows_per_s_ray2": demo["dataset_rows_per_s_ray2"],
        "materialize_rows_per_s_local": demo["materialize_rows_per_s_local"],
        "materialize_rows_per_s_ray1": demo["materialize_rows_per_s_ray1"],
        "materialize_rows_per_s_ray2": demo["materialize_rows_per_s_ray2"],
        "feast_ray_store_join_rows_per_s_tiny": tiny["feast_ray_store_rows_per_s"],
        "duckdb_join_rows_per_s_tiny_sample": tiny["duckdb_rows_per_s"],
        "train_rows_per_s_local": demo["train_rows_per_s_local"],
        "train_rows_per_s_ray2": demo["train_rows_per_s_ray2"],
        "train_peak_rss_mb_ray2_per_worker": demo["train_peak_rss_mb_ray2_per_worker"],
        "driver_peak_rss_mb_demo": demo["driver_peak_rss_mb"],
        "driver_peak_rss_mb_by_stage_demo": demo["driver_peak_rss_mb_by_stage"],
        "parity_ok": all(f["parity_ok"] for f in figures.values()),
    }
    if args.large:
        result["driver_peak_rss_mb_large"] = figures["large"]["driver_peak_rss_mb"]
        result["driver_peak_rss_mb_by_stage_large"] = figures["large"][
            "driver_peak_rss_mb_by_stage"
        ]
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
