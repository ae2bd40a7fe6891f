"""``feedrank serve``: run the BentoML service on a workspace.

It sets the service's environment (workspace, Feast profile, feature
deadline) and replaces itself with ``bentoml serve``, so signals, logs and
the exit code are BentoML's own.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from core.config_options import workspace_option
from core.workspace import REPO_ROOT, Profile
from feedrank.options import Command, profile_option


@click.command("serve", cls=Command)
@workspace_option
@profile_option(envvar="FEEDRANK_FEAST_PROFILE")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True)
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes."
)
@click.option(
    "--feature-deadline-ms",
    type=click.FloatRange(min=0, min_open=True),
    default=15.0,
    show_default=True,
    help="Slower feature reads get the reverse-chronological feed (degraded: true).",
)
def serve(
    workspace: Path,
    profile: Profile,
    host: str,
    port: int,
    workers: int,
    feature_deadline_ms: float,
) -> None:
    """Serve the ranked feed: POST /rank and POST /events.

    Runs `bentoml serve serving.service:FeedRanker` on the workspace.
    """
    bentoml = shutil.which("bentoml", path=str(Path(sys.executable).parent)) or shutil.which(
        "bentoml"
    )
    if bentoml is None:
        raise click.ClickException("bentoml is not installed in this environment")
    os.environ.update(
        FEEDRANK_WORKSPACE=str(workspace.resolve()),
        FEEDRANK_FEAST_PROFILE=profile,
        FEEDRANK_FEATURE_DEADLINE_MS=str(feature_deadline_ms),
    )
    os.chdir(REPO_ROOT)  # the import path serving.service resolves from the repo root
    argv = [bentoml, "serve", "serving.service:FeedRanker", "--host", host, "--port", str(port)]
    argv += ["--arg", f"workers={workers}"]
    os.execv(bentoml, argv)  # nosec B606  # fixed program, argv from validated options
