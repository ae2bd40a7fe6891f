"""``feedrank demo``: the whole pipeline on the embedded defaults, with a summary."""

from __future__ import annotations

from pathlib import Path

import click

from core.config_options import workspace_option
from core.workspace import Workspace
from feedrank.options import Command, preset_option, progress_bar, stage
from simulation.config import Preset


@click.command("demo", cls=Command)
@workspace_option
@preset_option
def demo(workspace: Path, preset: Preset) -> None:
    """Run the whole pipeline on the embedded defaults and print a summary.

    A new --workspace folder gets a copy of the repository's feature_repo/.
    """
    from feedrank.demo import run_demo  # pylint: disable=import-outside-toplevel  # every stage

    run_demo(Workspace.new(workspace), preset, stage=stage, progress_bar=progress_bar)
