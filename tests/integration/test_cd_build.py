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
    _check_push_step(home, tmp_path, outputs["tag"])


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


FAKE_DOCKER = """#!/usr/bin/env bash
# Stands in for the Docker CLI and daemon, which this machine lacks: it records
# each call, keeps the build context's Dockerfile and answers inspect with a digest.
printf '%s\\n' "$*" >> "$DOCKER_CALLS"
case "$1" in
  version) echo '"28.2.2"' ;;
  build | buildx) cp env/docker/Dockerfile "$DOCKER_CALLS.Dockerfile" ;;
  inspect) echo "${DOCKER_DIGEST_ANSWER}" ;;
esac
"""
DIGEST = "sha256:" + "ab" * 32


def _push_step() -> dict[str, Any]:
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "cd.yml").read_text())
    found: dict[str, Any] = next(
        s for s in workflow["jobs"]["build"]["steps"] if s.get("id") == "push"
    )
    return found


def _run_push(
    home: Path, tmp_path: Path, bento_tag: str, digest_answer: str, **extra: str
) -> tuple[subprocess.CompletedProcess[str], list[str], dict[str, str]]:
    step = _push_step()
    assert set(step["env"]) == {"BENTO_TAG"}, "the step's env changed: update this test"
    fake = tmp_path / "fake-docker"
    fake.mkdir(exist_ok=True)
    (fake / "docker").write_text(FAKE_DOCKER)
    (fake / "docker").chmod(0o755)
    calls, output = tmp_path / "docker-calls", tmp_path / "push_output"
    calls.write_text("")
    output.write_text("")
    env = {
        **os.environ,
        **OFFLINE,
        "PATH": f"{fake}:{os.environ['PATH']}",
        "BENTOML_HOME": str(home),
        "BENTO_TAG": bento_tag,
        "DOCKER_CALLS": str(calls),
        "DOCKER_DIGEST_ANSWER": digest_answer,
        "GITHUB_REPOSITORY_OWNER": "AcMe",
        "GITHUB_SHA": "0123abc",
        "GITHUB_OUTPUT": str(output),
        **extra,
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
    values = dict(line.split("=", 1) for line in output.read_text().splitlines())
    return done, calls.read_text().splitlines(), values


def _check_push_step(home: Path, tmp_path: Path, tag: str) -> None:
    """cd.yml's push step on a built Bento (one build serves both steps' tests)."""

    done, calls, values = _run_push(
        home,
        tmp_path,
        tag,
        f"ghcr.io/acme/feedrank@{DIGEST}",
        GITHUB_REF_TYPE="tag",
        GITHUB_REF_NAME="v1.2.0",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert values == {"repository": "ghcr.io/acme/feedrank", "digest": DIGEST}
    build = next(c for c in calls if c.startswith(("build", "buildx")))
    assert "ghcr.io/acme/feedrank:0123abc" in build  # the owner in lower case, the SHA
    assert calls[-4:] == [
        "push ghcr.io/acme/feedrank:0123abc",
        "tag ghcr.io/acme/feedrank:0123abc ghcr.io/acme/feedrank:v1.2.0",
        "push ghcr.io/acme/feedrank:v1.2.0",
        "inspect --format {{index .RepoDigests 0}} ghcr.io/acme/feedrank:0123abc",
    ]
    # The image spec bentoml containerize builds: the Bento's own Dockerfile.
    dockerfile = (tmp_path / "docker-calls.Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile and "EXPOSE 3000" in dockerfile
    assert 'ENTRYPOINT [ "/home/bentoml/bento/env/docker/entrypoint.sh" ]' in dockerfile

    done, _, values = _run_push(home, tmp_path, tag, "no digest here")
    assert done.returncode == 1 and values == {}
    assert "::error::no digest for ghcr.io/acme/feedrank:0123abc" in done.stderr
