"""The training stage's command: train, evaluate, log, register (and gate), once per rank.

Declared once and run two ways: ``feedrank train`` registers it with the CLI's
error policy (:mod:`feedrank.commands.train`), and ``python -m training`` runs
it under torchrun without importing the orchestration. Its options come from
:class:`training.train.TrainConfig` (one per field, with the field's default,
bounds and description) and ``--config train.yaml``; the options given
override the file. It ends with a ``RESULT {json}`` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from pydantic import BaseModel

from core.config_options import ConfigCommand, workspace_option
from core.results import result_line

if TYPE_CHECKING:
    from training.train import TrainConfig

TRAIN_OPTION_NAMES = {
    "max_epochs": ["--epochs"],
    "learning_rate": ["--lr"],
    "model.architecture": ["--architecture"],
}
"""The short names ``feedrank train`` had before its options came from TrainConfig."""


def _train_config() -> type[BaseModel]:
    """TrainConfig lives beside torch: imported only when the command parses its options."""
    from training.train import TrainConfig  # pylint: disable=import-outside-toplevel

    return TrainConfig


def train_command(cls: type[ConfigCommand] = ConfigCommand) -> click.Command:
    """The ``train`` command, built on ``cls`` (the CLI passes one with its error policy)."""

    @click.command("train", cls=cls, config=_train_config, names=TRAIN_OPTION_NAMES)
    @workspace_option
    @click.option(
        "--register/--no-register",
        default=True,
        show_default=True,
        help="Log the run to MLflow and register the model as the challenger.",
    )
    @click.option(
        "--promote/--no-promote",
        "promote_after",
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
    @click.option(
        "--ray-workers",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Train with this many Ray Train workers (DistributedDataParallel, one CPU each) "
        "on the Ray cluster of FEEDRANK_RAY_ADDRESS (else RAY_ADDRESS, else a Ray in this "
        "process); 0 trains in this process.",
    )
    def train(
        workspace: Path,
        config: TrainConfig,
        register: bool,
        promote_after: bool,
        progress: bool,
        ray_workers: int,
    ) -> None:
        """Train the engagement model, log it to MLflow and register it.

        Trains on the training days and evaluates on the test day. Every
        TrainConfig field is an option; --config train.yaml sets any of them and
        the options given override the file. Under torchrun the same options run
        DistributedDataParallel: `python -m torch.distributed.run --nproc_per_node=N
        -m training` (rank 0 evaluates and logs), and so does --ray-workers N on a
        Ray cluster (Ray Train's TorchTrainer).
        """
        # Torch and Ray, only when the command runs.
        # pylint: disable=import-outside-toplevel
        if ray_workers:
            from training.ray_train import train_on_ray

            summary = train_on_ray(workspace, config, ray_workers, register, promote_after)
            click.echo(result_line(summary))
            return
        from training.pipeline import rank, run_training_pipeline

        summary = run_training_pipeline(
            workspace, config, register=register, promote=promote_after, progress=progress
        )
        if rank() == "0":
            click.echo(result_line(summary))

    return train
