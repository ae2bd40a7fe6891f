"""``feedrank keys``: the API keys of the service (create, list, revoke).

Keys live hashed in the key file (:mod:`serving.auth`): ``FEEDRANK_API_KEYS_FILE``
or ``<workspace>/data/serving/api_keys.yaml``. ``create`` prints the key once;
a running service picks up a created or revoked key within a second.
"""

from __future__ import annotations

from pathlib import Path

import click

from core.config_options import workspace_option
from feedrank.options import Group

# Each command imports its stage inside the function (see feedrank.commands).
# pylint: disable=import-outside-toplevel

_FILE_HELP = (
    "Key file (default: FEEDRANK_API_KEYS_FILE, else WORKSPACE/data/serving/api_keys.yaml)."
)


def _key_file(workspace: Path, key_file: Path | None) -> Path:
    from serving.auth import keys_file_path

    return key_file or keys_file_path(workspace.resolve())


@click.group(cls=Group)
def keys() -> None:
    """API keys of the ranking service: bearer tokens with scopes."""


@keys.command("create")
@workspace_option
@click.option("--name", required=True, help="Who holds the key (shown in logs and `list`).")
@click.option(
    "--scope",
    "scopes",
    type=click.Choice(["rank", "events", "admin"]),
    multiple=True,
    required=True,
    help="rank: POST /rank; events: POST /events; admin: /metrics. Repeat for several.",
)
@click.option(
    "--user", "user_id", type=click.IntRange(min=0), default=None, help="Bind to this user only."
)
@click.option("--rate-limit", default=None, help="Its own limit, e.g. '20/second'.")
@click.option("--key-file", type=click.Path(path_type=Path), default=None, help=_FILE_HELP)
def create(
    workspace: Path,
    name: str,
    scopes: tuple[str, ...],
    user_id: int | None,
    rate_limit: str | None,
    key_file: Path | None,
) -> None:
    """Add a key and print it (the only time it is shown)."""
    from serving.auth import create_key

    path = _key_file(workspace, key_file)
    key, entry = create_key(path, name, scopes, user_id, rate_limit)  # type: ignore[arg-type]
    click.echo(key)
    bound = f", bound to user {entry.user_id}" if entry.user_id is not None else ""
    click.echo(
        f"key {entry.id} ({entry.name}: {', '.join(entry.scopes)}{bound}) added to {path}; "
        "send it as 'Authorization: Bearer <key>'",
        err=True,
    )


@keys.command("list")
@workspace_option
@click.option("--key-file", type=click.Path(path_type=Path), default=None, help=_FILE_HELP)
def list_keys(workspace: Path, key_file: Path | None) -> None:
    """The keys of the key file: id, name, scopes, bound user, rate limit (never the key)."""
    from serving.auth import read_key_file

    for entry in read_key_file(_key_file(workspace, key_file)).keys:
        user = "-" if entry.user_id is None else entry.user_id
        click.echo(
            f"{entry.id}  {entry.name}  {','.join(entry.scopes)}  user={user}  "
            f"limit={entry.rate_limit or 'default'}"
        )


@keys.command("revoke")
@workspace_option
@click.argument("key_id")
@click.option("--key-file", type=click.Path(path_type=Path), default=None, help=_FILE_HELP)
def revoke(workspace: Path, key_id: str, key_file: Path | None) -> None:
    """Remove a key by its id (or its name, if one key has it)."""
    from serving.auth import revoke_key

    entry = revoke_key(_key_file(workspace, key_file), key_id)
    click.echo(f"revoked key {entry.id} ({entry.name})")
