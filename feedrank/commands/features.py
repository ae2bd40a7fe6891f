"""``feedrank features build | apply | materialize``: feature tables and the Feast store."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import click

from core.config_options import workspace_option
from core.workspace import Profile, Workspace
from feedrank.options import Group, profile_option

# Each command imports its stage inside the function (see feedrank.commands).
# pylint: disable=import-outside-toplevel


@click.group(cls=Group)
def features() -> None:
    """Feature tables and the Feast feature store."""


@features.command("build")
@workspace_option
@profile_option()
def build(workspace: Path, profile: Profile) -> None:
    """Compute the time-stamped feature tables (DATA/features) from the world.

    On the cluster profile the shards (users, authors, tweets by id) run as
    Ray tasks; the tables are the same row for row.
    """
    from core.ray_tasks import profile_runner
    from features.pipelines import build_features

    ws = Workspace(workspace)
    run, workers = profile_runner(ws, profile)
    result = build_features(ws.world, ws.features, run=run, workers=workers)
    rows = ", ".join(f"{name} {count:,}" for name, count in result.rows.items())
    click.echo(
        f"features: {result.snapshots} daily snapshots, {result.shards} shard(s); rows: {rows}"
    )


@features.command("validate")
@workspace_option
def validate(workspace: Path) -> None:
    """Check every feature table against its schema (types, nulls, ranges, freshness).

    Exit 1 with one line naming the file, the column and the rule on the
    first violation; ends with RESULT {json} (rows per table) when all pass.
    """
    from core.results import result_line
    from core.validation import validate_feature_files, world_key, world_last_event_us

    ws = Workspace(workspace)
    rows = validate_feature_files(
        ws.features, world_last_event_us(ws.world), key=world_key(ws.world)
    )
    click.echo(
        result_line({"valid_tables": len(rows), **{f"rows_{k}": v for k, v in rows.items()}})
    )


@features.command("apply")
@workspace_option
@profile_option()
def apply(workspace: Path, profile: Profile) -> None:
    """Register the feature repo's objects in Feast (`feast apply`)."""
    from core.feast_store import open_store
    from features.online import apply_repo

    ws = Workspace(workspace)
    names = apply_repo(open_store(ws, profile), ws)
    click.echo(f"applied ({profile}): {', '.join(names)}")


@features.command("materialize")
@workspace_option
@profile_option()
@click.option(
    "--end",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
    default=None,
    help="Fill up to this time (default: the end of the simulated world).",
)
@click.option(
    "--feast-default",
    is_flag=True,
    help="Use Feast's own materialize-incremental instead of the fast column-wise fill.",
)
def materialize(
    workspace: Path, profile: Profile, end: datetime | None, feast_default: bool
) -> None:
    """Fill the online store incrementally with the latest value per entity."""
    from core.feast_store import open_store
    from features.online import fill_online, materialize_feast
    from simulation.world import load_world_config, world_end

    ws = Workspace(workspace)
    until = end or world_end(load_world_config(ws.world))
    if until.tzinfo is None:
        until = until.astimezone()
    store = open_store(ws, profile)
    start = time.perf_counter()
    if feast_default:
        materialize_feast(store, ws, until)
        click.echo(f"materialized with Feast up to {until.isoformat()}")
        return
    written = fill_online(store, ws, until)
    seconds = time.perf_counter() - start
    total = sum(written.values())
    click.echo(
        f"online store ({profile}) filled up to {until.isoformat()}: {total:,} entities "
        f"in {seconds:.1f}s ({total / max(seconds, 1e-9):,.0f}/s)"
    )
