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
    def train(
        workspace: Path, config: TrainConfig, register: bool, promote_after: bool, progress: bool
    ) -> None:
        """Train the engagement model, log it to MLflow and register it.

        Trains on the training days and evaluates on the test day. Every
        TrainConfig field is an option; --config train.yaml sets any of them and
        the options given override the file. Under torchrun the same options run
        DistributedDataParallel: `python -m torch.distributed.run --nproc_per_node=N
        -m training` (rank 0 evaluates and logs).
        """
        # pylint: disable-next=import-outside-toplevel  # torch, only when the command runs
        from training.pipeline import rank, run_training_pipeline

        summary = run_training_pipeline(
            workspace, config, register=register, promote=promote_after, progress=progress
        )
        if rank() == "0":
            click.echo(result_line(summary))

    return train
