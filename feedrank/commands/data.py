"""``feedrank data generate``: the synthetic world, from a preset, a file and options."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from core.config_options import workspace_option
from core.workspace import Profile, Workspace
from feedrank.options import WORLD_COMMAND, Group, preset_option, profile_option, progress_bar
from simulation.config import WorldConfig

if TYPE_CHECKING:
    from simulation.world import WorldSummary

# Each command imports its stage inside the function (see feedrank.commands).
# pylint: disable=import-outside-toplevel


@click.group(cls=Group)
def data() -> None:
    """The synthetic world (users, follow graph, tweets, visits, engagement)."""


@data.command("generate", **WORLD_COMMAND)
@workspace_option
@preset_option
@profile_option()
def generate(workspace: Path, config: WorldConfig, profile: Profile) -> None:
    """Generate the world into DATA/world and its hidden truth into DATA/truth.

    The preset sets every field; --config world.yaml (any WorldConfig field)
    and then the options override it. Same config, same world: on the
    cluster profile the impression shards run as Ray tasks.
    """
    from core.ray_tasks import profile_runner
    from simulation.world import generate_world

    ws = Workspace(workspace)
    run, _ = profile_runner(ws, profile)
    summary = generate_world(config, ws.data, progress=progress_bar("shards"), run=run)
    click.echo(world_line(summary))


def world_line(summary: WorldSummary) -> str:
    """The one line a command prints about the world it generated."""
    return (
        f"world: {summary.users:,} users, {summary.follows:,} follows, {summary.tweets:,} tweets, "
        f"{summary.visits:,} visits, {summary.impressions:,} impressions, {summary.events:,} events"
    )
