"""The ``feedrank`` command: one subcommand per stage, each a thin driver.

Commands parse options, call the stage's library function, and print. A
predictable failure (a missing or malformed input file, a bad option) is one
line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

# Each command imports its stage inside the function: Feast, MLflow and torch
# take seconds to import, and `feedrank --help` should not wait for them.
# pylint: disable=import-outside-toplevel
import importlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import click
from tqdm import tqdm

from core.workspace import Workspace
from feedrank.options import one_line_errors, workspace_option

profile_option = click.option(
    "--profile",
    type=click.Choice(["embedded", "production"]),
    default="embedded",
    show_default=True,
    help="Feast profile: embedded (SQLite + files) or production (Redis + SQL registry).",
)


@contextmanager
def _stage(name: str) -> Iterator[None]:
    click.echo(f"== {name}", err=True)
    start = time.perf_counter()
    yield
    click.echo(f"   {name}: {time.perf_counter() - start:.1f}s", err=True)


def _bar(desc: str) -> Callable[[int, int], None]:
    """A tqdm progress callback taking (done, total)."""
    state: dict[str, tqdm] = {}

    def update(done: int, total: int) -> None:
        if "tqdm" not in state:
            state["tqdm"] = tqdm(total=total, desc=desc, unit="row", leave=False)
        state["tqdm"].update(done - state["tqdm"].n)
        if done >= total:
            state["tqdm"].close()

    return update


class _LazyGroup(click.Group):
    """A group whose stage commands live next to their code and load only when used."""

    lazy: ClassVar[dict[str, str]] = {
        "metrics": "metrics.commands:metrics",
        "monitor": "metrics.commands:monitor",
        "serve": "serving.commands:serve_command",
        "train": "training.commands:train_command",
        "evaluate": "training.commands:evaluate_command",
        "promote": "training.commands:promote_command",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attr = self.lazy[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            (name, _LAZY_HELP.get(name) or self.get_command(ctx, name).get_short_help_str())
            for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


_LAZY_HELP = {
    "metrics": "Weighted engagement per user and A/B analysis over the event log.",
    "monitor": "Drift of served features and scores from the training data (PSI).",
    "serve": "Serve the ranked feed: `bentoml serve serving.service:FeedRanker`.",
    "train": "Train the engagement model, log it to MLflow and register it.",
    "evaluate": "Evaluate a registered model against the oracle.",
    "promote": "Give the champion alias to the challenger if it passes the gate.",
}


@click.group(cls=_LazyGroup)
@click.version_option(package_name="feedrank")
def main() -> None:
    """feedrank: rank the tweets a user sees by predicted engagement.

    Stages, in order: data generate -> features build -> features apply ->
    features materialize -> dataset build. `feedrank demo` runs them all.
    """


@main.group()
def data() -> None:
    """The synthetic world (users, follow graph, tweets, visits, engagement)."""


@data.command("generate")
@workspace_option
@click.option(
    "--preset",
    type=click.Choice(["tiny", "demo", "large"]),
    default="demo",
    show_default=True,
    help="Size: tiny (tests, seconds), demo (>= 1M impressions), large (>= 10M impressions).",
)
@click.option(
    "--seed", type=int, default=None, help="Random seed (default 7). Same seed, same world."
)
@click.option(
    "--users", type=click.IntRange(min=2), default=None, help="Override the number of users."
)
@click.option(
    "--days", type=click.IntRange(min=2), default=None, help="Override the number of days."
)
@click.option(
    "--mean-followees",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Override the mean number of accounts a user follows (the brief: ~100).",
)
@one_line_errors()
def data_generate(
    workspace: Path,
    preset: str,
    seed: int | None,
    users: int | None,
    days: int | None,
    mean_followees: float | None,
) -> None:
    """Generate the world into DATA/world and its hidden truth into DATA/truth."""
    from simulation.config import world_config
    from simulation.world import generate_world

    config = world_config(
        preset,
        seed=seed,
        n_users=users,
        days=days,
        mean_followees=mean_followees,  # type: ignore[arg-type]
    )
    summary = generate_world(config, Workspace(workspace).data, progress=_bar("visits"))
    click.echo(
        f"world: {summary.users:,} users, {summary.follows:,} follows, {summary.tweets:,} tweets, "
        f"{summary.visits:,} visits, {summary.impressions:,} impressions, {summary.events:,} events"
    )


@main.group()
def features() -> None:
    """Feature tables and the Feast feature store."""


@features.command("build")
@workspace_option
@one_line_errors()
def features_build(workspace: Path) -> None:
    """Compute the time-stamped feature tables (DATA/features) from the world."""
    from features.pipelines import build_features

    ws = Workspace(workspace)
    result = build_features(ws.world, ws.features)
    rows = ", ".join(f"{name} {count:,}" for name, count in result.rows.items())
    click.echo(f"features: {result.snapshots} daily snapshots; rows: {rows}")


@features.command("apply")
@workspace_option
@profile_option
@one_line_errors()
def features_apply(workspace: Path, profile: str) -> None:
    """Register the feature repo's objects in Feast (`feast apply`)."""
    from core.feast_store import open_store
    from features.online import apply_repo

    ws = Workspace(workspace)
    names = apply_repo(open_store(ws, profile), ws)  # type: ignore[arg-type]
    click.echo(f"applied ({profile}): {', '.join(names)}")


@features.command("materialize")
@workspace_option
@profile_option
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
@one_line_errors()
def features_materialize(
    workspace: Path, profile: str, end: datetime | None, feast_default: bool
) -> None:
    """Fill the online store incrementally with the latest value per entity."""
    from core.feast_store import open_store
    from features.online import fill_online, materialize_feast
    from simulation.world import load_world_config, world_end

    ws = Workspace(workspace)
    until = end or world_end(load_world_config(ws.world))
    if until.tzinfo is None:
        until = until.astimezone()
    store = open_store(ws, profile)  # type: ignore[arg-type]
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


@main.group()
def dataset() -> None:
    """Training sets from the offline store."""


@dataset.command("build")
@workspace_option
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Keep only the latest N impressions (default: all).",
)
@one_line_errors()
def dataset_build(workspace: Path, max_rows: int | None) -> None:
    """Point-in-time training set through the FeatureService of new models."""
    from core.feast_store import open_store
    from training.dataset import build_training_set

    ws = Workspace(workspace)
    result = build_training_set(open_store(ws), ws, max_rows=max_rows, progress=_bar("rows"))
    click.echo(
        f"training set: {result.rows:,} rows x {len(result.features)} features -> {result.path}"
    )


@main.command()
@workspace_option
@click.option(
    "--preset",
    type=click.Choice(["tiny", "demo", "large"]),
    default="demo",
    show_default=True,
    help="World size.",
)
@one_line_errors()
def demo(workspace: Path, preset: str) -> None:
    """Run the whole pipeline on the embedded defaults and print a summary."""
    from feedrank.demo import run_demo

    run_demo(Workspace(workspace), preset, stage=_stage, progress_bar=_bar)
