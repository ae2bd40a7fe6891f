"""``feedrank dataset build``: the point-in-time training set from the offline store."""

from __future__ import annotations

from pathlib import Path

import click

from core.config_options import workspace_option
from core.workspace import Profile, Workspace
from feedrank.options import Group, profile_option, progress_bar

# Each command imports its stage inside the function (see feedrank.commands).
# pylint: disable=import-outside-toplevel


@click.group(cls=Group)
def dataset() -> None:
    """Training sets from the offline store."""


@dataset.command("build")
@workspace_option
@profile_option()
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Keep only the last N impressions of the world file (default: all).",
)
def build(workspace: Path, profile: Profile, max_rows: int | None) -> None:
    """Point-in-time training set through the FeatureService of new models.

    The join runs range by range of the impressions, streamed into the file; on the
    cluster profile each range is a Ray task.
    """
    from core.feast_store import open_store
    from training.dataset import build_training_set

    ws = Workspace(workspace)
    progress = progress_bar("rows")
    result = build_training_set(open_store(ws, profile), ws, max_rows=max_rows, progress=progress)
    click.echo(
        f"training set: {result.rows:,} rows x {len(result.features)} features -> {result.path}"
    )
