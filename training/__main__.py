"""``python -m training``: the training stage's chain under torchrun, configured by TrainConfig.

``python -m torch.distributed.run --standalone --nproc_per_node=2 -m training
--config train.yaml`` runs DistributedDataParallel: every rank trains, rank 0
evaluates, logs, registers and prints the ``RESULT {json}`` line. The options
are ``feedrank train``'s, generated from the same :class:`TrainConfig`
(``--max-epochs``, ``--batch-size``, ...). This entry point imports no
orchestration (``feedrank``), only the training stage and the foundation.
"""

from __future__ import annotations

from pathlib import Path

import click

from core.config_options import ConfigCommand
from core.results import result_line
from training.pipeline import REPO_ROOT, rank, run_training_pipeline
from training.train import TrainConfig


@click.command("training", cls=ConfigCommand, config=lambda: TrainConfig)
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO_ROOT,
    show_default="the repository root",
    envvar="FEEDRANK_WORKSPACE",
    help="Folder holding feature_repo/ and data/ (env FEEDRANK_WORKSPACE).",
)
@click.option(
    "--register/--no-register",
    default=True,
    show_default=True,
    help="Log the run to MLflow and register the model as the challenger.",
)
@click.option(
    "--promote/--no-promote",
    default=False,
    show_default=True,
    help="Run the promotion gate right after registering.",
)
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="Show a progress bar with the live loss.",
)
def main(
    workspace: Path, config: TrainConfig, register: bool, promote: bool, progress: bool
) -> None:
    """Train, evaluate, log and register the engagement model (one process per rank)."""
    summary = run_training_pipeline(
        workspace, config, register=register, promote=promote, progress=progress
    )
    if rank() == "0":
        click.echo(result_line(summary))


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter  # click supplies the arguments
