"""``feedrank bento build``: the Bento that CD containerizes, with the model it serves.

It imports a registry version (``--model``: ``champion`` or a number) from
MLflow (``MLFLOW_TRACKING_URI``, else the workspace's store) into the BentoML
store, builds ``serving/bentofile.yaml`` pinned to that model, and writes
``tag``, ``model`` (the BentoML model tag), ``model_version`` (the registry
version it came from) and ``path`` as ``key=value`` lines to ``--outputs``
and ``$GITHUB_OUTPUT``. The build reaches nothing but MLflow (no package lock,
uv comes from the venv). Exit status: 0 built, 1 no such model or a bad
option.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from core.config_options import workspace_option
from core.errors import UserError
from feedrank.options import Group

# Each command imports its stage inside the function (see feedrank.commands).
# pylint: disable=import-outside-toplevel

BENTO_OUTPUTS = ("tag", "model", "model_version", "path")
"""The keys ``feedrank bento build`` writes to ``--outputs FILE`` and ``$GITHUB_OUTPUT``."""


@click.group(cls=Group)
def bento() -> None:
    """The deployable Bento: the service, its code and one registered model."""


@bento.command("build")
@workspace_option
@click.option(
    "--model",
    default="champion",
    show_default=True,
    help="Registry version to serve: an alias (champion) or a version number.",
)
@click.option("--version", default=None, help="The Bento's version (CD: the git SHA).")
@click.option(
    "--outputs",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write tag, model, model_version and path here as key=value lines "
    "(also appended to $GITHUB_OUTPUT when it is set).",
)
def build(workspace: Path, model: str, version: str | None, outputs: Path | None) -> None:
    """Import MODEL from MLflow and build the Bento around it; ends with RESULT {json}."""
    from core.workspace import Workspace
    from feedrank.outputs import output_lines, publish_outputs
    from serving.bento import build_bento
    from serving.model_store import ModelUnavailable

    try:
        built = build_bento(Workspace(workspace.resolve()), model, version)
    except ModelUnavailable as exc:
        raise UserError(f"--model {model}: {exc}") from None
    values = {
        "tag": built.tag,
        "model": built.model,
        "model_version": built.model_version,
        "path": str(built.path),
    }
    publish_outputs(output_lines(values, BENTO_OUTPUTS), outputs)
    click.echo(f"RESULT {json.dumps(values)}")
