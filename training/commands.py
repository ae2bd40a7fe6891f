"""``feedrank train | evaluate | promote``: thin drivers over the training library.

Each command parses options, calls :mod:`training.train`,
:mod:`training.evaluate` or :mod:`training.registry`, and ends with a
``RESULT {json}`` line. Errors a user can fix are one line, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import click
from mlflow.exceptions import MlflowException

from core.actions import load_actions
from core.model import ModelConfig
from core.workspace import Workspace
from feedrank.options import one_line_errors, workspace_option
from training import registry
from training.pipeline import rank, run_training_pipeline
from training.train import TrainConfig


@click.command("train")
@workspace_option
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=6,
    show_default=True,
    help="Maximum epochs: the cosine learning-rate decay ends there "
    "(early stopping on validation loss may end sooner).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=2048,
    show_default=True,
    help="Rows per optimiser step, summed over all ranks.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=2e-3,
    show_default=True,
    help="AdamW learning rate.",
)
@click.option(
    "--seed",
    type=int,
    default=7,
    show_default=True,
    help="Seed of initialisation and batch order (runs are reproducible).",
)
@click.option(
    "--architecture",
    type=click.Choice(["shared_bottom", "mmoe"]),
    default="shared_bottom",
    show_default=True,
    help="Shared-bottom MLP or multi-gate mixture of experts.",
)
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
@one_line_errors(MlflowException)
def train_command(
    workspace: Path,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    architecture: str,
    register: bool,
    promote_after: bool,
    progress: bool,
) -> None:
    """Train the ranker on the training days and evaluate it on the test day.

    Works unchanged under `torchrun --nproc_per_node=N -m training.train`
    (DistributedDataParallel; rank 0 evaluates and logs).
    """
    config = TrainConfig(
        max_epochs=epochs,
        batch_size=batch_size,
        learning_rate=lr,
        seed=seed,
        model=ModelConfig.model_validate({"architecture": architecture}),
    )
    summary = run_training_pipeline(
        workspace, config, register=register, promote=promote_after, progress=progress
    )
    if rank() == "0":
        click.echo(registry.result_line(summary))


@click.group("evaluate", invoke_without_command=True)
@workspace_option
@click.option(
    "--model",
    "ref",
    default=registry.CHALLENGER,
    show_default=True,
    help="Registered version number or alias of feed-ranker to evaluate.",
)
@click.option(
    "--plots-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write calibration, ROC and lift plots here (default: no plots).",
)
@click.pass_context
@one_line_errors(MlflowException)
def evaluate_command(ctx: click.Context, workspace: Path, ref: str, plots_dir: Path | None) -> None:
    """Evaluate a registered model on the workspace's test day against the oracle.

    `feedrank evaluate replay` replays the held-out visits under every policy.
    """
    if ctx.invoked_subcommand is not None:
        return
    evaluation = registry.evaluate_version(Workspace(workspace), ref, plots_dir=plots_dir)
    click.echo(registry.result_line(evaluation.result(load_actions())))


@evaluate_command.command("replay")
@workspace_option
@click.option(
    "--model",
    "ref",
    default=registry.CHAMPION,
    show_default=True,
    help="Registered version number or alias of feed-ranker to replay.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 500),
    default=50,
    show_default=True,
    help="Tweets shown per visit.",
)
@click.option(
    "--explore-share",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Share of the shown slots that model+explore gives to fresh tweets.",
)
@click.option(
    "--draws",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Independent simulations of each held-out visit (narrower intervals).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the replay.")
@one_line_errors(MlflowException)
def replay_command(
    workspace: Path, ref: str, limit: int, explore_share: float, draws: int, seed: int
) -> None:
    """Replay held-out visits: chrono, model, model+explore and oracle, as an A/B table.

    The table and a PNG plot are printed/written and logged to the MLflow run
    of the model version.
    """
    from metrics import replay as replaying  # pylint: disable=import-outside-toplevel

    ws = Workspace(workspace)
    result = replaying.replay(
        ws,
        registry.load_ranker(ws, ref),
        limit=limit,
        explore_share=explore_share,
        draws=draws,
        seed=seed,
    )
    out = ws.data / "replay"
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "replay.csv"
    result.table.to_csv(csv, index=False)
    png = replaying.plot(result, out / "replay.png")
    registry.log_replay(ws, ref, result.result(), [csv, png])
    click.echo(result.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    click.echo(f"plot: {png}")
    click.echo(registry.result_line(result.result()))


@click.command("promote")
@workspace_option
@click.option(
    "--require-approval",
    is_flag=True,
    help="Stop at a pending state (tag) instead of moving the champion alias.",
)
@click.option(
    "--approve",
    "approve_version",
    default=None,
    metavar="VERSION",
    help="Grant the pending promotion of VERSION (skips the gate, already passed).",
)
@click.option(
    "--auc-tolerance",
    type=click.FloatRange(min=0),
    default=0.005,
    show_default=True,
    help="Refuse when any head's AUC is lower than the champion's by more than this.",
)
@click.option(
    "--min-gain",
    type=float,
    default=0.0,
    show_default=True,
    help="Required gain in share of oracle lift at 50 over the champion.",
)
@click.option(
    "--approval-ttl-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=72.0,
    show_default=True,
    help="A pending promotion older than this expires instead of being approved.",
)
@one_line_errors(MlflowException)
def promote_command(
    workspace: Path,
    require_approval: bool,
    approve_version: str | None,
    auc_tolerance: float,
    min_gain: float,
    approval_ttl_hours: float,
) -> None:
    """Give the champion alias to the challenger if it passes the gate."""
    ws = Workspace(workspace)
    if approve_version is not None:
        outcome = registry.approve(ws, approve_version, approval_ttl_hours)
    else:
        outcome = registry.promote(ws, require_approval, auc_tolerance, min_gain)
    click.echo(registry.result_line(outcome))
