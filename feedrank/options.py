"""Options and error handling shared by every stage's commands."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from core.actions import ActionsFileError
from core.tables import TableError

REPO_ROOT = Path(__file__).resolve().parents[1]
F = TypeVar("F", bound=Callable[..., Any])
USER_ERRORS: tuple[type[BaseException], ...] = (
    TableError,
    ActionsFileError,
    ValueError,
    OSError,
    KeyError,
)
"""Errors a user can fix (bad input, missing files): one line, never a traceback."""


def one_line_errors(*extra: type[BaseException]) -> Callable[[F], F]:
    """Turn :data:`USER_ERRORS` (and ``extra``) into a one-line CLI error, exit code 1."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except (*USER_ERRORS, *extra) as exc:
                text = str(exc).strip()
                raise click.ClickException(
                    text.splitlines()[0] if text else type(exc).__name__
                ) from exc

        return wrapper  # type: ignore[return-value]

    return decorate


workspace_option = click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO_ROOT,
    show_default="the repository root",
    envvar="FEEDRANK_WORKSPACE",
    help="Folder holding feature_repo/ and data/ (env FEEDRANK_WORKSPACE).",
)
