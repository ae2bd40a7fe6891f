"""``feedrank pipeline foundation``: world, features, Feast, online store, training set at once.

The continuous-training workflow runs it in place of the five stage
commands; it calls :func:`feedrank.pipeline.build_foundation`, as the demo,
the tests and the benchmarks do.
"""

from __future__ import annotations

from pathlib import Path

import click

from core.config_options import workspace_option
from core.workspace import Profile, Workspace
from feedrank.commands.data import world_line
from feedrank.options import (
    WORLD_COMMAND,
    Group,
    preset_option,
    profile_option,
    progress_bar,
    stage,
)
from simulation.config import WorldConfig


@click.group(cls=Group)
def pipeline() -> None:
    """Chains of stages, run as one command (for the continuous-training workflow)."""


@pipeline.command("foundation", **WORLD_COMMAND)
@workspace_option
@preset_option
@profile_option()
@click.option(
    "--fill/--no-fill",
    default=True,
    show_default=True,
    help="Also fill the online store (training alone does not need it).",
)
@click.option(
    "--project",
    default=None,
    envvar="FEEDRANK_FEAST_PROJECT",
    help="Feast project (default: the feature repo's; env FEEDRANK_FEAST_PROJECT).",
)
def foundation(
    workspace: Path, config: WorldConfig, profile: Profile, fill: bool, project: str | None
) -> None:
    """Build everything a model trains and serves on: world, features, Feast, training set.

    The world comes from the preset, --config world.yaml and the options, as
    in `feedrank data generate`. On the embedded profile the workspace's Feast
    registry and online store are made anew. On the cluster profile the online
    store is filled by Feast's Ray compute engine and the training set is joined
    in Ray tasks (docs/scale-out.md).
    """
    # Every stage: imported when the command runs, not for `feedrank --help`.
    from feedrank.pipeline import build_foundation  # pylint: disable=import-outside-toplevel

    built = build_foundation(
        Workspace(workspace),
        config,
        profile=profile,
        project=project,
        fill=fill,
        stage=stage,
        progress=progress_bar,
    )
    training = built.training
    click.echo(world_line(built.world))
    click.echo(f"features: {sum(built.features.rows.values()):,} rows")
    if fill and built.online:
        click.echo(f"online store ({profile}): {sum(built.online.values()):,} entities")
    elif fill:
        click.echo(f"online store ({profile}): materialized by Feast's compute engine")
    click.echo(
        f"training set: {training.rows:,} rows x {len(training.features)} features -> "
        f"{training.path}"
    )
