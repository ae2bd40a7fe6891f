"""What every ``feedrank`` command shares: its classes, common options and error policy.

A command is declared one way: ``@group.command()`` on a :class:`Group`, or
``cls=ConfigCommand`` when a pydantic config drives its options. Both turn
bad input into one line on stderr and exit code 1, and leave every other
exception alone, so a bug still shows its traceback.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, get_args

import click

from core import config_options
from core.errors import UserError
from core.workspace import Profile
from simulation.config import Preset, WorldConfig, world_config

MISSING_MODEL = "RESOURCE_DOES_NOT_EXIST"
"""MLflow's error code for a model, version or alias that is not registered."""
FC = TypeVar("FC", bound=Callable[..., Any] | click.Command)
SHORT_HELP_LIMIT = 150
"""Characters of a command's first sentence that a group's help shows."""


def is_user_error(exc: BaseException) -> bool:
    """Bad input a user can fix, as opposed to a bug.

    A missing file, a :class:`~core.errors.UserError` (bad tables, configs,
    missing artifacts, refused promotions), or MLflow's answer that the model
    asked for does not exist. Click's own errors are handled by click.
    """
    if isinstance(exc, UserError | FileNotFoundError):
        return True
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")  # loaded if MLflow raised at all
    return (
        mlflow_exceptions is not None
        and isinstance(exc, mlflow_exceptions.MlflowException)
        and exc.error_code == MISSING_MODEL
    )


def _run(invoke: Callable[[click.Context], Any], ctx: click.Context) -> Any:
    """Run a command; a user error becomes one line on stderr and exit code 1."""
    try:
        return invoke(ctx)
    except Exception as exc:
        if not is_user_error(exc):
            raise
        text = str(exc).strip()
        raise click.ClickException(text.splitlines()[0] if text else type(exc).__name__) from exc


class Command(click.Command):
    """A command whose user errors are one line (see :func:`is_user_error`)."""

    def invoke(self, ctx: click.Context) -> Any:
        return _run(super().invoke, ctx)


class ConfigCommand(config_options.ConfigCommand):
    """A :class:`Command` whose options come from a pydantic config (:mod:`core.config_options`)."""

    def invoke(self, ctx: click.Context) -> Any:
        return _run(super().invoke, ctx)


class Group(click.Group):
    """A group whose commands and subgroups are :class:`Command` and :class:`Group`."""

    command_class = Command
    group_class = type

    def invoke(self, ctx: click.Context) -> Any:
        return _run(super().invoke, ctx)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List each command with its docstring's whole first sentence, wrapped, not cut at 45."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=SHORT_HELP_LIMIT)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def profile_option(envvar: str | None = None) -> Callable[[FC], FC]:
    """``--profile``: the Feast profile, optionally also read from ``envvar``."""
    return click.option(
        "--profile",
        type=click.Choice(get_args(Profile)),
        default=get_args(Profile)[0],
        show_default=True,
        envvar=envvar,
        help="Feast profile: embedded (SQLite + files), production (Redis + SQL registry) "
        "or cluster (production with Ray for the offline path)"
        + (f" (env {envvar})." if envvar else "."),
    )


preset_option = click.option(
    "--preset",
    type=click.Choice(get_args(Preset)),
    default="demo",
    show_default=True,
    help="World size: tiny (tests, seconds), demo (>= 1M impressions), long (the demo over "
    "16 days), large (>= 10M impressions), xlarge (about 100M impressions).",
)


def _world_from_preset(values: dict[str, Any], params: dict[str, Any]) -> WorldConfig:
    return world_config(params.pop("preset"), **values)


WORLD_COMMAND: dict[str, Any] = {
    "cls": ConfigCommand,
    "config": lambda: WorldConfig,
    "only": ("seed", "n_users", "days", "mean_followees"),
    "names": {"n_users": ["--users"]},
    "build": _world_from_preset,
}
"""How a command takes a world: ``--preset``, then ``--config world.yaml``, then the options.

Pass as ``@group.command(name, **WORLD_COMMAND)`` on a command with ``preset_option``.
"""


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Print a pipeline stage's name, then its time (on stderr, so stdout stays the result)."""
    click.echo(f"== {name}", err=True)
    start = time.perf_counter()
    yield
    click.echo(f"   {name}: {time.perf_counter() - start:.1f}s", err=True)


def progress_bar(desc: str) -> Callable[[int, int], None]:
    """A tqdm progress callback taking (done, total)."""
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel  # only when a stage runs

    state: dict[str, tqdm] = {}

    def update(done: int, total: int) -> None:
        if "tqdm" not in state:
            state["tqdm"] = tqdm(total=total, desc=desc, unit="row", leave=False)
        state["tqdm"].update(done - state["tqdm"].n)
        if done >= total:
            state["tqdm"].close()

    return update
