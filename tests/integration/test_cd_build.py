"""cd.yml's build step, run as the workflow names it: the Bento is built offline around the model.

The step's ``run`` line is read from the YAML and run with bash from the
repository root, as a runner would: a fresh ``BENTOML_HOME``, the step's
``env`` names set to a real MLflow store (the tiny world's champion), and
every way out to the network pointed at a closed port, so a build that
locked packages or installed a tool would fail here.
"""

from __future__ import annotations

import os
import subprocess  # nosec B404  # runs the workflow step's own command line
from pathlib import Path
from typing import Any

import pytest
import yaml

from core import model_registry
from core.workspace import REPO_ROOT, Workspace
from feedrank.commands.bento import BENTO_OUTPUTS
from serving.model_store import bento_version

pytestmark = [pytest.mark.integration]

CLOSED = "http://127.0.0.1:9"
"""A port nobody listens on: any download attempt fails at once."""
OFFLINE = {
    "HTTP_PROXY": CLOSED,
    "HTTPS_PROXY": CLOSED,
    "http_proxy": CLOSED,
    "https_proxy": CLOSED,
    "PIP_INDEX_URL": f"{CLOSED}/simple",
    "UV_INDEX_URL": f"{CLOSED}/simple",
    "PIP_NO_INDEX": "1",
}


def _bento_step() -> dict[str, Any]:
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "cd.yml").read_text())
    found: dict[str, Any] = next(
        s for s in workflow["jobs"]["build"]["steps"] if s.get("id") == "bento"
    )
    return found


def _run_step(
    served_workspace: Workspace,
    tmp_path: Path,
    model_version: str,
    tracking_uri: str | None = None,
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    step = _bento_step()
    assert "${{" not in step["run"], "the step's command must read its inputs from env"
    home, output = tmp_path / "bentoml", tmp_path / "github_output"
    output.touch()
    step_env = {
        "MLFLOW_TRACKING_URI": (
            model_registry.tracking_uri(served_workspace) if tracking_uri is None else tracking_uri
        ),
        "MLFLOW_TRACKING_TOKEN": "",  # a local store: no proxy to authenticate to
        "MODEL_VERSION": model_version,
    }
    assert set(step["env"]) == set(step_env), "the step's env changed: update this test"
    env = {
        **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        **step_env,
        **OFFLINE,
        "BENTOML_HOME": str(home),
        "FEEDRANK_WORKSPACE": str(tmp_path / "checkout"),  # a runner's checkout: no local store
        "GITHUB_SHA": "0123abc",
        "GITHUB_OUTPUT": str(output),
    }
    done = subprocess.run(  # nosec B603 B607  # bash runs the workflow's own step
        ["bash", "-eo", "pipefail", "-c", step["run"]],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done, home, output


def test_the_build_step_imports_the_champion_and_builds_offline(
    served_workspace: Workspace, tmp_path: Path
) -> None:
    done, home, output = _run_step(served_workspace, tmp_path, "champion")
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert set(outputs) == set(BENTO_OUTPUTS)
    assert outputs["tag"] == "feedrank:0123abc"

    client = model_registry.connect(served_workspace)
    champion = model_registry.model_version(client, model_registry.CHAMPION)
    model_tag = f"feed-ranker:{bento_version(str(champion.version), str(champion.run_id))}"
    assert outputs["model"] == model_tag
    assert outputs["model_version"] == str(champion.version)  # what the deploy jobs label
    assert (home / "models" / "feed-ranker" / model_tag.split(":")[1]).is_dir()

    bento = Path(outputs["path"])
    assert bento == home / "bentos" / "feedrank" / "0123abc"
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    assert [m["tag"] for m in manifest["models"]] == [model_tag]  # pinned, not "latest"
    assert (bento / "env" / "docker" / "Dockerfile").is_file()  # what containerize builds
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "torch>=2.13,<2.14" in requirements  # the ranges, not a lock resolved online


def test_a_model_version_that_does_not_exist_fails_and_builds_nothing(
    served_workspace: Workspace, tmp_path: Path
) -> None:
    done, home, output = _run_step(served_workspace, tmp_path, "999")
    assert done.returncode == 1
    assert "--model 999" in done.stderr and "Traceback" not in done.stderr
    assert output.read_text() == ""
    assert not (home / "bentos").exists() or not any((home / "bentos").iterdir())


def test_no_tracking_server_configured_is_one_clear_line(
    served_workspace: Workspace, tmp_path: Path
) -> None:
    """The repository variable left empty: the runner has no store to import from."""
    step = _bento_step()
    assert step["env"]["MLFLOW_TRACKING_URI"] == "${{ vars.MLFLOW_TRACKING_URI }}"
    done, _, output = _run_step(served_workspace, tmp_path, "champion", tracking_uri="")
    assert done.returncode == 1
    assert "set MLFLOW_TRACKING_URI" in done.stderr and "Traceback" not in done.stderr
    assert output.read_text() == ""
